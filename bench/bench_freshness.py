"""Freshness: time from produce to row visible in a query, at a steady live rate.

A running worker (``outloop.runtime.Stack`` on the embedded broker) receives hook PreToolUse /
PostToolUse pairs at ``--rate`` events/s for ``--seconds``; a poller asks the worker's HTTP query
endpoint every 50 ms which of them are visible in ``hook_events`` and which calls are complete in
``tool_calls``. Latency = time of the answer that first showed the row - time the event was handed to
the producer (an upper bound, within one poll). Reference in the same run: an aiokafka consumer on
the input topic (produce -> consumable), i.e. what the broker alone costs. Target: p99 <= 2 s.

    .venv/bin/python bench/bench_freshness.py [--quick] [--rate 500] [--seconds 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402
from common import commands, header, hook_pair, median, pct, row, settings_for, wait_until  # noqa: E402

from outloop.runtime import Stack  # noqa: E402
from outloop.streams.broker import EmbeddedBroker  # noqa: E402
from outloop.streams.publisher import Publisher  # noqa: E402


class RawWatcher(threading.Thread):
    """aiokafka consumer on the input topic, from its end: when each event became consumable."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="latest", fetch_max_wait_ms=50)
        await consumer.start()
        try:
            parts = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or [])]
            consumer.assign(parts)
            await consumer.seek_to_end(*parts)
            for tp in parts:
                await consumer.position(tp)
            self.ready.set()
            while not self.stop.is_set():
                data = await consumer.getmany(timeout_ms=50)
                now = time.monotonic()
                for records in data.values():
                    for r in records:
                        self.seen[orjson.loads(r.value)["id"]] = now
        finally:
            await consumer.stop()


def poller(client, tag: str, n_pairs: int, hook_seen: dict[str, float], call_seen: dict[str, float],
           stop: threading.Event) -> None:
    call_ids = [f"toolu_{tag}_{i:08d}" for i in range(n_pairs)]
    hook_ids = [f"{tag}{k}-{c}" for c in call_ids for k in ("pre", "post")]  # ids made by common.hook_pair
    hook_ids.sort()
    hi, ci = 0, 0
    while not stop.is_set() and (hi < len(hook_ids) or ci < len(call_ids)):
        t0 = time.monotonic()
        if hi < len(hook_ids):
            _, rows = client.query("SELECT id FROM hook_events WHERE id >= ? AND id < ?", [hook_ids[hi], tag + "~"])
            now = time.monotonic()
            for (id_,) in rows:
                hook_seen.setdefault(id_, now)
            while hi < len(hook_ids) and hook_ids[hi] in hook_seen:
                hi += 1
        if ci < len(call_ids):
            _, rows = client.query("SELECT id FROM tool_calls WHERE id >= ? AND id < ? AND status <> 'started'",
                                   [call_ids[ci], f"toolu_{tag}~"])
            now = time.monotonic()
            for (id_,) in rows:
                call_seen.setdefault(id_, now)
            while ci < len(call_ids) and call_ids[ci] in call_seen:
                ci += 1
        time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))


def one_run(stack: Stack, rate: int, seconds: float, run: int) -> dict[str, list[float]]:
    s = stack.settings
    topic = f"{s.topic_prefix}.events"
    tag = f"fr{run}x{int(time.time()) % 100000}"
    n_pairs = int(rate * seconds) // 2
    cmds = commands(200)
    now = datetime.now(UTC)
    events = []  # (id, key, value), pre-serialised
    for i in range(n_pairs):
        session, call = f"sess-{i % 50:02d}", f"toolu_{tag}_{i:08d}"
        pre, post = hook_pair(session, call, cmds[i % len(cmds)], now, tag=tag)
        events += [(f"{tag}pre-{call}", session.encode(), pre), (f"{tag}post-{call}", session.encode(), post)]
    watcher = RawWatcher(s.broker, topic)
    watcher.start()
    watcher.ready.wait(30)
    hook_seen: dict[str, float] = {}
    call_seen: dict[str, float] = {}
    produced: dict[str, float] = {}
    stop = threading.Event()
    poll = threading.Thread(target=poller, args=(stack.client, tag, n_pairs, hook_seen, call_seen, stop), daemon=True)
    poll.start()
    with Publisher(s.broker, partitions=s.partitions, prefix=s.topic_prefix) as pub:
        t0 = time.monotonic()
        for j, (id_, key, value) in enumerate(events):
            delay = t0 + j / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            produced[id_] = time.monotonic()
            pub.raw(topic, key, value)
        actual = len(events) / (time.monotonic() - t0)
        pub.flush(30)
    wait_until(lambda: len(hook_seen) >= 2 * n_pairs and len(call_seen) >= n_pairs, 120, 0.1, "all rows visible")
    stop.set()
    watcher.stop.set()
    poll.join(5)
    watcher.join(10)
    hook = [hook_seen[i] - produced[i] for i in produced]
    calls = [call_seen[c] - produced[f"{tag}post-{c}"] for c in (f"toolu_{tag}_{i:08d}" for i in range(n_pairs))]
    raw = [watcher.seen[i] - produced[i] for i in produced if i in watcher.seen]
    print(f"  {'warm-up' if run < 0 else f'run {run + 1}'}: {2 * n_pairs:,} events at {actual:,.0f}/s | p50/p99/max s: "
          f"hook_events {pct(hook, .5):.2f}/{pct(hook, .99):.2f}/{max(hook):.2f}  "
          f"tool_calls {pct(calls, .5):.2f}/{pct(calls, .99):.2f}/{max(calls):.2f}  "
          f"raw consume {pct(raw, .5):.3f}/{pct(raw, .99):.3f}/{max(raw):.3f}")
    buckets: dict[int, list[float]] = {}
    for id_, at in produced.items():
        buckets.setdefault(int((at - t0) // 5), []).append(hook_seen[id_] - at)
    print("    hook_events p99 per 5 s of producing: "
          + " ".join(f"{pct(v, .99):.1f}" for _, v in sorted(buckets.items())))
    return {"hook": hook, "calls": calls, "raw": raw}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 s per run instead of 30 s")
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    header(f"freshness: {args.rate} events/s for {seconds:.0f}s, {args.runs} runs",
           "latency = produce -> visible through the worker's HTTP query endpoint (50 ms polls)")
    with tempfile.TemporaryDirectory(prefix="bench-fresh-") as tmp, \
            EmbeddedBroker(Path(tmp) / "broker.log") as broker, \
            Stack(settings_for(Path(tmp), broker.bootstrap)) as stack:
        print("  warm-up (50 events/s for 4 s; group join, assignments, first refreshes):")
        one_run(stack, 50, 4, -1)
        results = [one_run(stack, args.rate, seconds, run) for run in range(args.runs)]
    raw99 = [pct(r["raw"], .99) for r in results]
    target = [2.0] * len(results)
    for name, key in (("hook_events row visible", "hook"), ("tool_calls row complete", "calls")):
        p99 = [pct(r[key], .99) for r in results]
        print(f"  {name}: median over runs of p50 {median([pct(r[key], .5) for r in results]):.2f}s, "
              f"p99 {median(p99):.2f}s, max {median([max(r[key]) for r in results]):.2f}s")
        row(f"p99 {name}", p99, "target", target, "s", higher_is_better=False, target="<= 1.0x (2 s)")
        row(f"p99 {name}", p99, "raw consume p99", raw99, "s", higher_is_better=False)


if __name__ == "__main__":
    main()
