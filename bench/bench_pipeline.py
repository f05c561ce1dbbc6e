"""Pipeline throughput: events/s from the input topic into DuckDB with pairing, patterns and the sink
all on (the real worker of ``outloop.runtime.Stack``), beside two references reading the SAME
topic (same partitions) in the same run:

* a do-nothing Faust agent: the project's own ``create_app`` (same settings) with one agent that
  iterates ``take_events`` and does nothing - the ceiling Faust itself puts on the worker;
* a raw aiokafka consumer (``getmany``) - what the broker and client can deliver.

Each run publishes N pre-generated events (hook PreToolUse/PostToolUse pairs + one usage record per
turn, ~1 KB each) with the project's kafka-python Publisher, then flush markers; each reader is
timed from the first event it sees to the last (for the worker: to the moment every output
partition's flush marker is materialized in DuckDB). ``--profile`` samples the worker with py-spy.

    .venv/bin/python bench/bench_pipeline.py [--quick] [--events N] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REPO,
    ensure_topics,
    header,
    markers,
    median,
    publish,
    python_env,
    row,
    settings_for,
    terminate,
    workload,
)
from profiling import Profiler, print_profile  # noqa: E402

from outloop.streams.broker import EmbeddedBroker, free_port  # noqa: E402
from outloop.streams.settings import Settings  # noqa: E402


async def _aiokafka_read(bootstrap: str, topic: str, total: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=5000)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        seen, first = 0, time.perf_counter()  # from the first fetch: prefetching starts at assign
        while seen < total:
            data = await consumer.getmany(timeout_ms=500, max_records=5000)
            seen += sum(len(v) for v in data.values())
        return time.perf_counter() - first
    finally:
        await consumer.stop()


def faust_reference(settings: Settings, total: int, out: Path) -> float:
    """Run the do-nothing Faust agent in a child process; seconds from its first to its last event."""
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**python_env(), **settings.to_env(), "BENCH_TOTAL": str(total), "BENCH_OUT": str(out)}
    env["OUTLOOP_HTTP_PORT"] = str(free_port())
    proc = subprocess.Popen([sys.executable, __file__, "--faust-child"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=open(out.with_suffix(".log"), "wb"),  # noqa: SIM115
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"faust reference failed; see {out.with_suffix('.log')}")
            time.sleep(0.05)
        time.sleep(0.05)
        return float(out.read_text())
    finally:
        terminate(proc, 30)


def faust_child() -> None:
    """The reference app: the project's app factory and settings, one agent that does nothing."""
    from faust.worker import Worker

    from outloop.streams.app import create_app

    settings = Settings.from_env()
    assert settings.broker
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)
    app, topics = create_app(settings, settings.broker)
    total, out = int(os.environ["BENCH_TOTAL"]), Path(os.environ["BENCH_OUT"])
    state = {"seen": 0, "first": 0.0}

    @app.agent(topics.events, name="nothing")
    async def nothing(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
            if not state["seen"]:
                state["first"] = time.perf_counter()
            state["seen"] += len(events)
            if state["seen"] >= total and not out.exists():
                tmp = out.with_suffix(".tmp")
                tmp.write_text(str(time.perf_counter() - state["first"]))
                tmp.rename(out)

    Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def pipeline(settings: Settings, n: int, marker: str, expected: int, profile: Path | None
             ) -> tuple[float, float, float, object]:
    """Start the real worker on the filled topic. Returns (seconds first event -> all in DuckDB,
    seconds first event -> agents done, seconds start -> all in DuckDB, profile)."""
    from outloop.runtime import Stack

    stack = Stack(settings, log_dir=settings.home / "logs")
    t_start = time.perf_counter()
    stack.start(timeout=120)
    prof = Profiler(stack.worker.pid, profile) if profile and stack.worker else None
    try:
        client = stack.client
        first = agents_done = None
        deadline = time.monotonic() + 900
        while True:
            health = client.health(timeout=5) or {}
            seen = int((health.get("agents") or {}).get("events", 0))
            now = time.perf_counter()
            if seen and first is None:
                first = now
            if seen >= n + settings.partitions and agents_done is None:
                agents_done = now
            if agents_done is not None:
                _, rows = client.query("SELECT count(*) FROM flush_markers WHERE marker IN (?, ?)",
                                       [marker, marker + ":wf"])
                if int(rows[0][0]) >= expected:
                    done = time.perf_counter()
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("pipeline did not finish")
            time.sleep(0.05)
        counts = prof.stop() if prof else None
        _, rows = client.query("SELECT (SELECT count(*) FROM hook_events), (SELECT count(*) FROM tool_calls), "
                               "(SELECT count(*) FROM usage), (SELECT count(*) FROM operation_patterns)")
        print(f"    worker rows: hook_events={rows[0][0]} tool_calls={rows[0][1]} usage={rows[0][2]} "
              f"operation_patterns={rows[0][3]}")
        assert first is not None and agents_done is not None
        return done - first, agents_done - first, done - t_start, counts
    finally:
        stack.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 events instead of 100,000")
    ap.add_argument("--events", type=int)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--profile", action="store_true", help="sample the worker with py-spy (last run)")
    ap.add_argument("--profile-out", type=Path, help="keep py-spy's raw (collapsed) stacks in this file")
    ap.add_argument("--faust-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.faust_child:
        faust_child()
        return
    n = args.events or (20_000 if args.quick else 100_000)
    header(f"pipeline throughput: {n:,} events, {args.partitions} partitions, {args.runs} runs")
    pipe, agents, faust_ref, raw, total_s = [], [], [], [], []
    last_profile = None
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp, \
            EmbeddedBroker(Path(tmp) / "broker.log") as broker:
        for run in range(args.runs):
            work = Path(tmp) / f"run{run}"
            s = settings_for(work, broker.bootstrap, partitions=args.partitions)
            ensure_topics(broker.bootstrap, s)
            count, secs = publish(broker.bootstrap, f"{s.topic_prefix}.events",
                                  workload(n, sessions=max(1, n // 100), signatures=500), args.partitions)
            marker, expected = markers(broker.bootstrap, s)
            total = n + args.partitions  # the events topic also holds one flush marker per partition
            print(f"  run {run + 1}: published {count:,} events in {secs:.1f}s ({count / secs:,.0f}/s)")
            raw.append(n / asyncio.run(_aiokafka_read(broker.bootstrap, f"{s.topic_prefix}.events", total)))
            faust_ref.append(n / faust_reference(settings_for(work / "faust", broker.bootstrap,
                                                              topic_prefix=s.topic_prefix,
                                                              partitions=args.partitions), total,
                                                 work / "faust.out"))
            profile = (args.profile_out or work / "worker.pyspy") if args.profile and run == args.runs - 1 else None
            done, agents_s, from_start, counts = pipeline(s, n, marker, expected, profile)
            pipe.append(n / done)
            agents.append(n / agents_s)
            total_s.append(from_start)
            last_profile = counts or last_profile
            print(f"    aiokafka {raw[-1]:,.0f}/s  faust do-nothing {faust_ref[-1]:,.0f}/s  "
                  f"worker agents {agents[-1]:,.0f}/s  worker into DuckDB {pipe[-1]:,.0f}/s  "
                  f"(start -> all in DuckDB {from_start:.1f}s)")
    print("  medians (events/s):")
    row("worker: into DuckDB (pairing+patterns+sink)", pipe, "faust do-nothing", faust_ref, "ev/s",
        target=">= 0.8x")
    row("worker: into DuckDB", pipe, "aiokafka getmany", raw, "ev/s")
    row("worker: agents only (events folded+emitted)", agents, "faust do-nothing", faust_ref, "ev/s")
    row("faust do-nothing", faust_ref, "aiokafka getmany", raw, "ev/s")
    print(f"  worker start -> everything in DuckDB: median {median(total_s):.1f}s")
    print_profile(last_profile, "worker profile (py-spy, last run)")


if __name__ == "__main__":
    main()
