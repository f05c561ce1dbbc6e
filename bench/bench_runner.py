"""The runner's cost: its added wall time over the bare command, beside a bare interpreter start; and its
peak memory and wall time on a huge output.

Added time: ``bash -c true`` alone vs through the runner (``runner_command``, as the router rewrites
commands), with ``python -I -S -c pass`` (the bare start of the same interpreter, the same flags) in the
same rounds; and a 30-line output (1.7 KB: longer than the footer, so the runner summarises it to decide
whether the summary saves tokens, and prints it unchanged when not). Each round runs every variant N
times, interleaved; the figures are medians over the rounds of each round's median. Target: added time
<= 2x the bare interpreter start.

Huge output: ``yes`` lines through the runner (default 1 GB, a few of them error lines); the runner's
peak RSS from ``wait4`` (``ru_maxrss`` is the largest of the runner and the processes it waited for:
bash, which itself stays small), the printed bytes, and the wall time beside the bare command's.

    python bench/bench_runner.py [--runs 40] [--rounds 5] [--huge-mb 1024] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outloop.runner.rewrite import runner_command  # noqa: E402

MEDIUM = 'for i in $(seq 1 30); do echo "line $i of a medium output, the kind git status prints"; done'


def run_once(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd}: exit {proc.returncode}: {proc.stderr[:300]!r}")
    return elapsed


def startup(runs: int, rounds: int, env: dict[str, str]) -> None:
    py = sys.executable
    variants = {
        "bare command: bash -c true": ["bash", "-c", "true"],
        "runner: bash -c true through main.py": shlex.split(runner_command("true")),
        "bare interpreter: python -I -S -c pass": [py, "-I", "-S", "-c", "pass"],
        "bare command: 30 lines": ["bash", "-c", MEDIUM],
        "runner: 30 lines through main.py": shlex.split(runner_command(MEDIUM)),
    }
    names = list(variants)
    medians: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        times: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(runs):
            for n in names:  # interleaved, so load changes hit every variant alike
                times[n].append(run_once(variants[n], env))
        for n in names:
            medians[n].append(statistics.median(times[n]))
    med = {n: statistics.median(v) * 1000 for n, v in medians.items()}
    bare_cmd, runner, interp, bare_medium, runner_medium = (med[n] for n in names)
    added = runner - bare_cmd
    for n in names:
        spread = ", ".join(f"{x * 1000:.2f}" for x in medians[n])
        print(f"  {n:44s} median {med[n]:7.2f} ms  (per round: {spread})")
    print(f"  runner's added time: {added:.2f} ms = {added / interp:.2f}x a bare interpreter start "
          f"(target <= 2x)")
    print(f"  runner's added time on 30 lines: {runner_medium - bare_medium:.2f} ms = "
          f"{(runner_medium - bare_medium) / interp:.2f}x a bare interpreter start")
    per_round = [(r - b) / i for r, b, i in zip(medians[names[1]], medians[names[0]], medians[names[2]],
                                                strict=True)]
    print(f"  ratio per round: {', '.join(f'{x:.2f}' for x in per_round)}")


def huge(mb: int, env: dict[str, str]) -> None:
    size = mb * 1024 * 1024
    cmd = (f"yes 'a line of ordinary output, the kind a build prints' | head -c {size}; "
           "echo 'src/app.c:12:5: error: something broke' >&2; echo done")
    argv = shlex.split(runner_command(cmd))
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    printed = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    t1 = time.perf_counter()
    bare = subprocess.run(["bash", "-c", f"{{ {cmd}; }} > /dev/null 2>&1"], env=env)
    bare_time = time.perf_counter() - t1
    searched = b"not searched for errors" not in printed
    print(f"  output {size / 1e6:,.0f} MB: exit {code}, printed {len(printed):,} bytes, "
          f"error line kept: {b'src/app.c:12:5: error: something broke' in printed}, "
          f"whole log searched for error lines within OUTLOOP_RUN_SCAN_SECONDS: {searched}")
    print(f"  runner peak RSS {usage.ru_maxrss / 1024:.1f} MiB (ru_maxrss of the runner process)")
    print(f"  wall time {elapsed:.1f} s through the runner (log written, then compacted) vs "
          f"{bare_time:.1f} s for the bare command into /dev/null (exit {bare.returncode})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--huge-mb", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="10 runs x 3 rounds, 64 MB")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.rounds, args.huge_mb = 10, 3, 64
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
        env["OUTLOOP_RUNS_DIR"] = str(Path(tmp) / "runs")
        print(f"runner start-up ({args.runs} runs x {args.rounds} rounds, interleaved):")
        startup(args.runs, args.rounds, env)
        print(f"runner on a huge output ({args.huge_mb} MiB):")
        huge(args.huge_mb, env)


if __name__ == "__main__":
    main()
