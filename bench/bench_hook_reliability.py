"""Hook wall time under load with the broker down, beside a bare start of the same interpreter.

Each round runs the reliability workload (by default 2,000 realistic PreToolUse/PostToolUse payloads
of 1-64 KiB, tool_use_ids, 90% paired) through the exact registered hook command into a fresh spool,
``--parallel`` at a time, with ``OUTLOOP_BROKER`` pointing at a port where nothing listens. Every
payload is also fed to ``python -c pass`` of the same interpreter, interleaved in the same pool, so
both see the same contention. Each round reports p50 and p99 of both and their ratio; the figures
printed are medians over the rounds. Every hook run must exit 0 with empty stdout and every payload
must be spooled byte for byte, else the benchmark stops.

    python bench/bench_hook_reliability.py [--hooks 2000] [--rounds 3] [--parallel 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outloop.streams.broker import free_port  # noqa: E402
from outloop.streams.shim import hook_command  # noqa: E402
from outloop.streams.spool import Spool  # noqa: E402
from tests.reliability import bare_cmd, hook_workload, percentile, run_many, shim_cmd, shim_env  # noqa: E402


def one_round(seed: int, hooks: int, parallel: int) -> dict[str, float]:
    events = hook_workload(seed=seed, n=hooks)
    shim, bare = shim_cmd(), bare_cmd()
    jobs = []
    for _, _, body in events:
        jobs += [(shim, body), (bare, body)]
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        env = shim_env(spool, OUTLOOP_BROKER=f"127.0.0.1:{free_port()}")  # nothing listens there
        t0 = time.perf_counter()
        runs = run_many(jobs, env, parallel=parallel)
        elapsed = time.perf_counter() - t0
        hook_runs, bare_runs = runs[0::2], runs[1::2]
        bad = [r for r in hook_runs if r.returncode != 0 or r.stdout]
        if bad:
            raise SystemExit(f"{len(bad)} hook runs failed, e.g. {bad[0]}")
        sp = Spool(spool)
        spooled = sorted(sp.read(i).raw for i in sp.ready())
        if spooled != sorted(body for _, _, body in events) or sp.temp_files():
            raise SystemExit("the spool does not hold every payload exactly once")
    h = [r.wall for r in hook_runs]
    b = [r.wall for r in bare_runs]
    out = {"hook_p50": percentile(h, 50), "hook_p99": percentile(h, 99),
           "bare_p50": percentile(b, 50), "bare_p99": percentile(b, 99), "elapsed": elapsed}
    out["ratio_p50"] = out["hook_p50"] / out["bare_p50"]
    out["ratio_p99"] = out["hook_p99"] / out["bare_p99"]
    out["mean_kib"] = statistics.mean(len(body) for _, _, body in events) / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hooks", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=8)
    args = ap.parse_args()

    print(f"hook command: {hook_command()}")
    print(f"reference:    {' '.join(bare_cmd())}")
    print(f"{args.rounds} rounds x {args.hooks} hooks + {args.hooks} references, {args.parallel} at a time, "
          f"broker down, {os.cpu_count()} CPUs")
    rounds = []
    for r in range(args.rounds):
        res = one_round(seed=100 + r, hooks=args.hooks, parallel=args.parallel)
        rounds.append(res)
        print(f"round {r + 1}: hook p50 {res['hook_p50'] * 1e3:6.1f} ms p99 {res['hook_p99'] * 1e3:6.1f} ms | "
              f"bare p50 {res['bare_p50'] * 1e3:6.1f} ms p99 {res['bare_p99'] * 1e3:6.1f} ms | "
              f"ratio p50 {res['ratio_p50']:.2f} p99 {res['ratio_p99']:.2f} | "
              f"{res['elapsed']:.1f} s, payload mean {res['mean_kib']:.1f} KiB", flush=True)

    def med(key: str) -> float:
        return statistics.median(x[key] for x in rounds)

    print(f"\nmedians over {args.rounds} rounds{'':8} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'hook (shim, spool write)':30} {med('hook_p50') * 1e3:8.1f} {med('hook_p99') * 1e3:8.1f}")
    print(f"{'python -c pass':30} {med('bare_p50') * 1e3:8.1f} {med('bare_p99') * 1e3:8.1f}")
    print(f"{'ratio hook / python -c pass':30} {med('ratio_p50'):8.2f} {med('ratio_p99'):8.2f}")


if __name__ == "__main__":
    main()
