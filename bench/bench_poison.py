"""Poison flood at full size: 100,000 valid + 10,000 malformed records (17 kinds) on the events topic,
beside an all-valid run of the same shape and size measured right before it on the same broker.

Each run: 90% of its records as a backlog published before the worker starts (the agents' drain rate,
from the output topics' timestamps, and records per CPU-second of the worker process), then 10% live
at 1,000 records/s to the same worker (latency of each record, and how much later the record right
behind a malformed one comes out). A fresh embedded broker per pair of runs; medians over the pairs.

    .venv/bin/python bench/bench_poison.py [pairs] [valid] [malformed]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from outloop.streams.broker import EmbeddedBroker  # noqa: E402
from tests.reliability.test_poison import MALFORMED, flood_pair, report  # noqa: E402


def main(pairs: int = 3, n_valid: int = 100_000, n_bad: int = 10_000) -> None:
    print(f"== poison flood: {n_valid:,} valid + {n_bad:,} malformed ({len(MALFORMED)} kinds), 90% backlog + 10% "
          "live at 1,000 rec/s, beside an all-valid run of the same size")
    print("   (2-core machine shared with other engineers' test runs: absolute figures are noisy; read the ratios)")
    ratios, cpu_ratios, gaps, holds, latency_ratio = [], [], [], [], []
    for n in range(pairs):
        with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp) / "tansu.log") as broker:
            t0 = time.monotonic()
            reference, poison, flood, live = flood_pair(broker.bootstrap, Path(tmp), n_valid, n_bad,
                                                        live_rate=1000.0)
            print(f"  pair {n + 1} ({time.monotonic() - t0:.0f} s)")
            print("    " + report("all valid", reference))
            print("    " + report("poison   ", poison, reference))
            expected = dict(flood.expected + live.expected)
            stored = {"hook_events": flood.hooks + live.hooks, "usage": flood.usage + live.usage,
                      "tool_calls": len(flood.calls | live.calls)}
            print(f"    dead letters as expected: {poison.dead_letters == expected} "
                  f"({sum(poison.dead_letters.values()):,} of {n_bad:,}; by reason {dict(sorted(expected.items()))})")
            print(f"    valid events stored: {poison.stored == stored} {poison.stored}; same worker process: "
                  f"{poison.same_worker}; worker log errors: {len(poison.log_errors)}")
            ratios.append(poison.rate / reference.rate)
            cpu_ratios.append(poison.cpu_rate / reference.cpu_rate)
            gaps.append((poison.max_gap_s, reference.max_gap_s))
            holds.append(max(poison.held.values()))
            latency_ratio.append(poison.live_median_s / reference.live_median_s)
    print("  medians over pairs:")
    print(f"    agents' drain rate (wall), poison / all valid: {statistics.median(ratios):.2f}x (target >= 0.80; "
          f"runs {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"    records per CPU-second of the worker, poison / all valid: {statistics.median(cpu_ratios):.2f}x "
          f"(runs {', '.join(f'{r:.2f}' for r in cpu_ratios)})")
    print(f"    live median latency, poison / all valid: {statistics.median(latency_ratio):.2f}x")
    print(f"    worst kind's median extra latency behind a bad record: {statistics.median(holds):+.3f} s "
          "(target < 1 s)")
    print(f"    largest partition gap draining the backlog, poison vs all valid: "
          f"{statistics.median(g[0] for g in gaps):.2f} s vs {statistics.median(g[1] for g in gaps):.2f} s "
          "(the consumer taking turns between partitions)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
