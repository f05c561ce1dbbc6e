"""Whole-process wall time of the status-line command beside a bare start of the same interpreter.

Claude Code runs the status line after every assistant message; its budget is 2x a bare interpreter
start (``python -c pass`` with the project's virtualenv interpreter, as for the hook shim). Each round
runs every variant N times, interleaved; the figures are medians over the rounds, each beside the bare
start measured in the same round (a ratio).

    python bench/bench_statusline.py [--runs 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outloop.streams.statusline import statusline_command  # noqa: E402

PAYLOAD = json.dumps({
    "hook_event_name": "Status", "session_id": "0b4c2f7e-5f1e-4a8e-9d0c-1c2b3a4d5e6f",
    "transcript_path": "/home/user/.claude/projects/demo/0b4c2f7e.jsonl", "cwd": "/home/user/demo",
    "model": {"id": "claude-sonnet-4-5", "display_name": "Sonnet 4.5"},
    "workspace": {"current_dir": "/home/user/demo", "project_dir": "/home/user/demo"},
    "version": "2.1.0", "cost": {"total_cost_usd": 0.42, "total_duration_ms": 450000},
    "rate_limits": {"five_hour": {"used_percentage": 42.0, "resets_at": "2026-01-06T17:00:00Z"},
                    "seven_day": {"used_percentage": 13.0, "resets_at": "2026-01-10T09:00:00Z"}},
}).encode()


def run_once(cmd: list[str], env: dict[str, str], stdin: bytes) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, capture_output=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd}: exit {proc.returncode}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
        env.update(OUTLOOP_HOME=tmp, OUTLOOP_SPOOL=str(Path(tmp) / "spool"))
        variants = {"bare: python -c pass": [py, "-c", "pass"],
                    "statusline_command()": shlex.split(statusline_command()),
                    "bare: python -I -S -c pass": [py, "-I", "-S", "-c", "pass"]}
        per_round: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            times: dict[str, list[float]] = {name: [] for name in variants}
            for cmd in variants.values():
                run_once(cmd, env, PAYLOAD)
            for _ in range(args.runs):
                for name, cmd in variants.items():
                    times[name].append(run_once(cmd, env, PAYLOAD))
            for name, xs in times.items():
                per_round[name].append(statistics.median(xs))
        spooled = len(list((Path(tmp) / "spool").glob("*.rec")))
    bare = per_round["bare: python -c pass"]
    print(f"status-line command: {statusline_command()}")
    print(f"{args.rounds} rounds x {args.runs} runs, {len(PAYLOAD)}-byte input, {spooled} snapshots spooled")
    print(f"{'variant':28} {'median ms':>10} {'median/bare':>12}")
    for name, rounds in per_round.items():
        ratio = statistics.median(m / b for m, b in zip(rounds, bare, strict=True))
        print(f"{name:28} {statistics.median(rounds) * 1e3:10.2f} {ratio:12.2f}")


if __name__ == "__main__":
    main()
