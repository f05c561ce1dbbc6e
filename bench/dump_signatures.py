"""Dump the signature and side-effect class of every distinct shell command of traces-dev and of the
labelled set, one JSON line per command, sorted by command: the file to diff before and after a rule
change (``diff <(before) <(after)`` lists every command whose classification moved).

    python bench/dump_signatures.py [--traces ../shared/data/traces-dev] > signatures.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_signatures import DEFAULT_TRACES, trace_commands  # noqa: E402
from outloop.agents.signatures import command_signature, signature_of  # noqa: E402

LABELLED = Path(__file__).resolve().parents[1] / "tests" / "unit" / "data" / "labelled_commands.json"


def tool_uses(root: Path) -> set[str]:
    """Every distinct non-shell tool call of the transcripts, as ``name json(input)``."""
    out: set[str] = set()
    for f in sorted(root.rglob("*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # damaged lines exist in traces-dev
            content = (record.get("message") or {}).get("content") if isinstance(record, dict) else None
            for b in content if isinstance(content, list) else []:
                if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") not in (None, "Bash"):
                    out.add(f"{b['name']} {json.dumps(b.get('input'), sort_keys=True)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    args = ap.parse_args()
    commands = set(trace_commands(args.traces)) if args.traces.is_dir() else set()
    commands |= {r["command"] for r in json.loads(LABELLED.read_text())}
    for c in sorted(commands):
        s = command_signature(c, cache=None)
        sys.stdout.write(json.dumps({"command": c, "signature": s.signature, "side_effect": s.side_effect}) + "\n")
    for t in sorted(tool_uses(args.traces)) if args.traces.is_dir() else ():
        name, raw = t.split(" ", 1)
        s = signature_of(name, json.loads(raw), cache=None)
        sys.stdout.write(json.dumps({"tool": t[:300], "signature": s.signature, "side_effect": s.side_effect}) + "\n")


if __name__ == "__main__":
    main()
