"""Whole-process wall time of the hook shim beside a bare start of the same interpreter.

The hook runs on every tool call of the agent, so its budget is relative: at most 2x the time of
``python -c pass`` with the project's virtualenv interpreter (which processes the editable-install
``.pth`` files). Each round runs every variant N times, interleaved, and reports the median and p99;
the figures printed are medians over the rounds, each beside the bare start measured in the same
round (a ratio).

    python bench/bench_shim.py [--runs 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outloop.streams.shim import hook_command, shim_path  # noqa: E402

PAYLOAD = json.dumps(
    {
        "session_id": "0b4c2f7e-5f1e-4a8e-9d0c-1c2b3a4d5e6f",
        "transcript_path": "/home/user/.claude/projects/demo/0b4c2f7e.jsonl",
        "cwd": "/home/user/demo",
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "pytest -q tests/unit", "description": "run the unit tests"},
        "tool_use_id": "toolu_01ABCDEF",
        "tool_response": {"stdout": "." * 1500 + "\n120 passed in 1.20s\n", "stderr": "",
                          "interrupted": False, "isImage": False},
    }
).encode()


def run_once(cmd: list[str], env: dict[str, str], stdin: bytes) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, capture_output=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or proc.stdout:
        raise SystemExit(f"{cmd}: exit {proc.returncode}, stdout {proc.stdout[:200]!r}")
    return elapsed


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    py = sys.executable
    shim = shim_path()
    chosen = hook_command()
    import shlex

    variants: dict[str, tuple[list[str], dict[str, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
        env = dict(base_env, OUTLOOP_SPOOL=str(Path(tmp) / "spool"))
        variants["bare: python -c pass"] = ([py, "-c", "pass"], env)
        variants["shim: hook_command()"] = (shlex.split(chosen), env)
        variants["shim: hook_command() + fsync"] = (shlex.split(chosen), dict(env, OUTLOOP_SPOOL_FSYNC="1"))
        variants["shim: python shim.py (site)"] = ([py, shim], env)
        variants["shim: python -m outloop.streams.shim"] = ([py, "-m", "outloop.streams.shim"], env)
        variants["bare: python -I -S -c pass"] = ([py, "-I", "-S", "-c", "pass"], env)

        per_round: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            times: dict[str, list[float]] = {name: [] for name in variants}
            for cmd, e in variants.values():  # warm-up (pyc, page cache)
                run_once(cmd, e, PAYLOAD)
            for _ in range(args.runs):
                for name, (cmd, e) in variants.items():
                    times[name].append(run_once(cmd, e, PAYLOAD))
            for name, xs in times.items():
                per_round[name].append((statistics.median(xs), p99(xs)))
        spooled = len(list((Path(tmp) / "spool").glob("*.rec")))

    bare = [m for m, _ in per_round["bare: python -c pass"]]
    print(f"hook command: {chosen}")
    print(f"{args.rounds} rounds x {args.runs} runs, {len(PAYLOAD)}-byte payload, {spooled} records spooled")
    print(f"{'variant':34} {'median ms':>10} {'p99 ms':>8} {'median/bare':>12} {'p99/bare':>9}")
    for name, rounds in per_round.items():
        med = statistics.median(m for m, _ in rounds)
        tail = statistics.median(p for _, p in rounds)
        ratio = statistics.median(m / b for (m, _), b in zip(rounds, bare, strict=True))
        tail_ratio = statistics.median(p / b for (_, p), b in zip(rounds, bare, strict=True))
        print(f"{name:34} {med * 1e3:10.2f} {tail * 1e3:8.2f} {ratio:12.2f} {tail_ratio:9.2f}")


if __name__ == "__main__":
    main()
