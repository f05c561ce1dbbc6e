"""Load time of the command rule table beside a bare ``json.loads`` of the same file, and the import time
of the signature code (what a process that classifies commands, such as the router, pays once).

* load: ``ruletable.load_builtin()`` (read, parse, check, build the frozen entries) and
  ``programs.install`` (compile every name into its rule), medians over ``--rounds`` in this process;
  the reference is ``json.loads`` of the file's bytes (already read), then read plus parse;
* import: ``import outloop.agents.signatures`` in a fresh interpreter (``--imports`` times, median),
  split by ``-X importtime`` into bashlex, the rule table and the rest. ``--compare PATH`` runs the same
  import from another checkout (for instance an export of the commit before the table) for reference.

    python bench/bench_rules.py [--rounds 200] [--imports 7] [--compare /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outloop.agents import programs, ruletable, signatures  # noqa: E402

IMPORT = "import time; t = time.perf_counter(); import outloop.agents.signatures; print(time.perf_counter() - t)"


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def _run(argv: list[str], pythonpath: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUTLOOP_RULES": ""}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, check=True, cwd="/")


def import_ms(imports: int, paths: list[str | None]) -> list[tuple[float, dict[str, float]]]:
    """For each checkout (None: this one), the median wall time of the import in a fresh interpreter
    (runs interleaved, so load on the machine hits all alike) and the cumulative ``-X importtime`` of a
    few modules (microseconds -> ms) from one more run."""
    walls: list[list[float]] = [[] for _ in paths]
    for _ in range(imports):
        for i, path in enumerate(paths):
            walls[i].append(float(_run(["-c", IMPORT], path).stdout.strip()) * 1000)
    out = []
    for i, path in enumerate(paths):
        parts: dict[str, float] = {}
        for line in _run(["-X", "importtime", "-c", IMPORT], path).stderr.splitlines():
            if not line.startswith("import time:") or "|" not in line:
                continue
            _, cumulative, name = (x.strip() for x in line[len("import time:") :].split("|"))
            if name in ("bashlex", "outloop.agents.ruletable", "outloop.agents.signatures", "outloop.agents.redact"):
                parts[name] = int(cumulative) / 1000
        out.append((statistics.median(walls[i]), parts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--imports", type=int, default=7)
    ap.add_argument("--compare", type=str, default=None, help="another checkout's root, imported the same way")
    args = ap.parse_args()
    raw = ruletable.BUILTIN.read_bytes()
    table = signatures.RULES_TABLE

    def read_parse() -> object:
        return json.loads(ruletable.BUILTIN.read_bytes())

    print(f"rule table: {len(raw):,} bytes, {len(table.programs)} entries, {len(table.by_name)} program names, "
          f"{sum(len(p.examples) for p in table.programs)} examples")
    print(f"  json.loads (bytes in memory)   {median_ms(lambda: json.loads(raw), args.rounds):7.2f} ms")
    print(f"  read + json.loads              {median_ms(read_parse, args.rounds):7.2f} ms")
    print(f"  load_builtin (read+parse+check){median_ms(ruletable.load_builtin, args.rounds):7.2f} ms")
    print(f"  install (compile every name)   {median_ms(lambda: programs.install(table), args.rounds):7.2f} ms")
    paths: list[str | None] = [None, args.compare] if args.compare else [None]
    for path, (wall, parts) in zip(paths, import_ms(args.imports, paths), strict=True):
        detail = ", ".join(f"{k} {v:.1f}" for k, v in sorted(parts.items()))
        print(f"import outloop.agents.signatures from {path or 'this checkout'}: median {wall:.1f} ms over "
              f"{args.imports} fresh interpreters (-X importtime, one run: {detail})")


if __name__ == "__main__":
    main()
