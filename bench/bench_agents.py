"""The sessions agent's own work per input event, without Kafka: decode, secret scan, fold, encode of
the outputs (``agents.sessions.session_records``) on the pipeline benchmark's workload, beside the
agent as it was before its fast path (``tests/unit/sessionsref.py``: pydantic for every input and
output), in the same run. Both get the same batches (1,000 records, 4 partitions) and fresh folds.

    .venv/bin/python bench/bench_agents.py [--quick] [--events N] [--runs 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, header, row, workload  # noqa: E402

sys.path.insert(0, str(REPO))

from outloop.agents.pairing import Pairing  # noqa: E402
from outloop.agents.pricing import PriceTable  # noqa: E402
from outloop.agents.sessions import SessionOutputs, session_records  # noqa: E402
from tests.unit import sessionsref  # noqa: E402


def per_event_us(records: object, fold: object, messages: list, batch: int) -> tuple[float, int]:
    names = SessionOutputs("o.hook-events", "o.tool-calls", "o.usage", "o.dlq")
    pairing = fold(price=PriceTable.default().cost_usd)  # type: ignore[operator]
    stats = {"events": 0, "dead_letters": 0}
    now = datetime.now(UTC)
    emitted = 0
    t0 = time.perf_counter()
    for i in range(0, len(messages), batch):
        emitted += len(records(pairing, messages[i:i + batch], names, now, stats))  # type: ignore[operator]
    return (time.perf_counter() - t0) / len(messages) * 1e6, emitted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 events instead of 60,000")
    ap.add_argument("--events", type=int)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = args.events or (10_000 if args.quick else 60_000)
    header(f"sessions agent work per event (no Kafka): {n:,} events, batches of 1,000, {args.runs} runs")
    # keyed by session like the published events: a call's Pre and Post share a partition
    messages = [("o.events", zlib.crc32(k) % 4, i, k, v, [])
                for i, (k, v) in enumerate(workload(n, sessions=max(1, n // 100), signatures=500))]
    new, old = [], []
    for _ in range(args.runs):  # interleaved, so both see the same machine load
        us, out_new = per_event_us(session_records, Pairing, messages, 1000)
        new.append(us)
        us, out_old = per_event_us(sessionsref.session_records, sessionsref.Pairing, messages, 1000)
        old.append(us)
        assert out_new == out_old, (out_new, out_old)
    print(f"  {out_new / n:.2f} output records per input event")
    row("agents: decode + scan + fold + encode", new, "the former agent (pydantic)", old, "us/event",
        higher_is_better=False)


if __name__ == "__main__":
    main()
