"""Memory: RSS of the worker (and of the embedded broker) while many events flow.

N events (1,000,000; ``--quick`` 100,000) over 10,000 sessions and 5,000 distinct Bash command
signatures are published as fast as the kafka-python Publisher goes while a worker
(``outloop.runtime.Stack``) processes them; psutil samples the worker's and the broker's RSS every
0.5 s. The curve is printed every tenth of the events processed, then for 15 s after the flow
stopped (a flat tail means no growth once the pairing windows close). References in the same run:
the target (500 MB) and the worker's RSS when idle before the flow.

The embedded Tansu broker keeps every message in memory: its growth per message and a projection
are printed.

``--bound MB`` measures the broker's memory bound instead (``OUTLOOP_BROKER_MAX_RSS_MB``): N hook
events (default 200,000) are spooled in waves of 10,000 and shipped by the forwarder of a
supervised stack (``outloop up``'s), once with the bound and once without it (the reference, in
the same run); the broker's RSS is sampled every 0.5 s across its recycles. Each figure is printed
beside the unbounded one; every run checks that DuckDB holds every event exactly once.

    .venv/bin/python bench/bench_memory.py [--quick] [--events N] [--runs 1] [--db-memory 256MB] [--sink-batch N]
    .venv/bin/python bench/bench_memory.py --bound 128 [--events N] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RssSampler, header, markers, median, publish, row, settings_for, workload  # noqa: E402

from outloop.runtime import Stack  # noqa: E402
from outloop.streams.broker import EmbeddedBroker  # noqa: E402
from outloop.streams.settings import Settings  # noqa: E402

TARGET_MB = 500.0


def duckdb_mb(client: object) -> float:
    """What DuckDB's own accounting says it holds in the sink child (buffer pool and the rest), MB."""
    try:
        _, rows = client.query("SELECT sum(memory_usage_bytes) FROM duckdb_memory()")  # type: ignore[attr-defined]
        return float(rows[0][0] or 0) / 2**20
    except Exception:  # busy or refused: not a figure
        return float("nan")


def duckdb_breakdown(client: object) -> str:
    """DuckDB's accounting by tag (the largest ones) and the file's size, from the sink child."""
    try:
        _, tags = client.query("SELECT tag, memory_usage_bytes FROM duckdb_memory() "  # type: ignore[attr-defined]
                               "WHERE memory_usage_bytes > 0 ORDER BY 2 DESC LIMIT 4")
        _, size = client.query("SELECT database_size, memory_usage FROM pragma_database_size() "  # type: ignore[attr-defined]
                               "WHERE database_name = current_database()")
    except Exception as exc:  # busy or refused: not a figure
        return f"(not available: {exc})"
    by_tag = ", ".join(f"{tag} {n / 2**20:.0f} MB" for tag, n in tags)
    return f"{by_tag}; file {size[0][0]}, in memory {size[0][1]}" if size else by_tag


def broker_messages(bootstrap: str, prefix: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(t, p) for t in consumer.topics() if t.startswith(prefix + ".")
                 for p in consumer.partitions_for_topic(t) or []]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def one_run(n: int, tmp: Path, db_memory: str | None = None, sink_batch: int | None = None) -> dict[str, float]:
    with EmbeddedBroker(tmp / "broker.log") as broker:
        overrides: dict[str, object] = {"db_memory": db_memory} if db_memory else {}
        if sink_batch:
            overrides["sink_batch"] = sink_batch
        s = settings_for(tmp, broker.bootstrap, **overrides)
        with Stack(s) as stack:
            assert stack.worker is not None and broker.pid is not None
            sampler = RssSampler({"worker": stack.worker.pid, "agents": stack.worker.pid, "broker": broker.pid},
                                 alone=("agents",))
            idle = sampler.rss()
            sampler.start()
            producer = threading.Thread(target=publish, daemon=True, args=(
                broker.bootstrap, f"{s.topic_prefix}.events", workload(n, sessions=10_000, signatures=5_000)))
            t0 = time.monotonic()
            producer.start()
            print(f"    {'events':>10} {'elapsed s':>9} {'agents MB':>10} {'sink MB':>8} {'duckdb MB':>9} "
                  f"{'worker MB':>10} {'broker MB':>10} {'sink rows':>10}")
            print(f"    {0:>10,} {0:>9.1f} {idle['agents']:>10.0f} {idle['worker'] - idle['agents']:>8.0f} "
                  f"{duckdb_mb(stack.client):>9.0f} {idle['worker']:>10.0f} {idle['broker']:>10.0f} {0:>10,}")
            step, next_mark = max(1, n // 10), max(1, n // 10)
            t_plateau = 0.0  # when a fifth of the events had been processed
            while True:
                health = stack.client.health(timeout=10) or {}
                seen = int((health.get("agents") or {}).get("events", 0))
                if not t_plateau and seen >= n // 5:
                    t_plateau = time.monotonic()
                if seen >= next_mark or seen >= n:
                    now = sampler.rss()
                    rows = int((health.get("sink") or {}).get("records", 0))
                    print(f"    {seen:>10,} {time.monotonic() - t0:>9.1f} {now['agents']:>10.0f} "
                          f"{now['worker'] - now['agents']:>8.0f} {duckdb_mb(stack.client):>9.0f} "
                          f"{now['worker']:>10.0f} {now['broker']:>10.0f} {rows:>10,}")
                    next_mark += step
                if seen >= n:
                    break
                if stack.worker.poll() is not None:
                    raise RuntimeError(f"the worker died; see {stack.worker_log}")
                time.sleep(0.5)
            producer.join()
            t_published = time.monotonic()
            marker, expected = markers(broker.bootstrap, s)
            from outloop.replay import wait_for_marker

            wait_for_marker(stack.client, marker, expected, timeout=1800)
            flow_s = time.monotonic() - t0
            t_end = time.monotonic()
            end_flow = sampler.rss()
            time.sleep(15)
            tail = sampler.rss()
            print(f"    all in DuckDB after {flow_s:.0f}s: worker {end_flow['worker']:.0f} MB; 15 s later: agents "
                  f"{tail['agents']:.0f} MB, sink {tail['worker'] - tail['agents']:.0f} MB (DuckDB's accounting "
                  f"{duckdb_mb(stack.client):.0f} MB), worker "
                  f"{tail['worker']:.0f} MB, broker {tail['broker']:.0f} MB")
            print(f"    DuckDB's accounting by tag: {duckdb_breakdown(stack.client)}")
            plateau = [s["worker"] for t, s in list(sampler.samples) if t_plateau <= t <= t_end]
            if plateau:
                print(f"    worker RSS from {n // 5:,} events to the end of the flow: {min(plateau):.0f}-"
                      f"{max(plateau):.0f} MB (median {median(plateau):.0f})")
            t_peak = max(sampler.samples, key=lambda ts: ts[1]["worker"])[0] if sampler.samples else t0
            print(f"    peaks: agents {sampler.peak('agents'):.0f} MB, sink "
                  f"{max((s['worker'] - s['agents'] for _, s in sampler.samples), default=0):.0f} MB, worker "
                  f"{sampler.peak('worker'):.0f} MB at {t_peak - t0:.0f}s (every event published at "
                  f"{t_published - t0:.0f}s, all in DuckDB at {flow_s:.0f}s)")
            messages = broker_messages(broker.bootstrap, s.topic_prefix)
            sampler.stop()
            return {"worker_peak": sampler.peak("worker"), "worker_idle": idle["worker"],
                    "worker_end": end_flow["worker"], "worker_tail": tail["worker"],
                    "broker_idle": idle["broker"], "broker_peak": sampler.peak("broker"), "messages": messages,
                    "events_per_s": n / flow_s}


def hook_wave(spool: object, start: int, count: int) -> int:
    """Spool ``count`` hook events (Pre/Post pairs of 50 sessions) as the shim writes them."""
    import orjson

    written = 0
    for i in range(start // 2, (start + count) // 2):
        session = f"bench-session-{i % 50:03d}-{start // 100_000}"
        base = {"session_id": session, "cwd": "/w", "tool_name": "Bash",
                "tool_input": {"command": f"pytest -q tests/unit/test_{i % 97}.py", "description": "tests"},
                "tool_use_id": f"toolu_bench_{i:09d}"}
        spool.write(orjson.dumps({**base, "hook_event_name": "PreToolUse"}))  # type: ignore[attr-defined]
        spool.write(orjson.dumps({**base, "hook_event_name": "PostToolUse",  # type: ignore[attr-defined]
                                  "tool_response": {"stdout": f"{i % 50} passed\n" * 3, "stderr": ""}}))
        written += 2
    return written


def bound_run(n: int, tmp: Path, bound_mb: float) -> dict[str, float]:
    """One supervised stack fed ``n`` spooled hook events; broker RSS sampled across recycles."""
    from outloop.runtime import process_rss
    from outloop.streams.spool import Spool

    s = settings_for(tmp, None, spool=tmp / "spool", broker_max_rss_mb=bound_mb, journal_confirm=60.0)
    spool = Spool(s.spool)
    samples: list[float] = []
    halt = threading.Event()
    with Stack(s, forwarder=True, supervise=True) as stack:
        assert stack.broker is not None

        def sample() -> None:
            while not halt.wait(0.5):
                rss = process_rss(stack.broker.pid if stack.broker else None)
                if rss:
                    samples.append(rss / 2**20)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        sent = 0
        while sent < n:
            if spool.count() < 20_000:  # keep the spool folder small, as live hooks would
                sent += hook_wave(spool, sent, min(10_000, n - sent))
            else:
                time.sleep(0.2)
        deadline = time.monotonic() + 1800
        rows = 0
        while time.monotonic() < deadline:
            if stack.failed.is_set():
                raise RuntimeError(f"the stack failed: {stack.failure}")
            try:
                rows = int(stack.client.query("SELECT count(*) FROM hook_events")[1][0][0])
            except Exception:  # restarting
                rows = -1
            if rows >= n and not spool.count():
                break
            time.sleep(0.5)
        flow_s = time.monotonic() - t0
        _, result = stack.client.query("SELECT count(*), count(DISTINCT id) FROM hook_events")
        if result != [[n, n]]:
            raise RuntimeError(f"hook_events holds {result}, expected {n} distinct events exactly once")
        halt.set()
        sampler.join()
        end = samples[-1] if samples else 0.0
        recycles = stack.recycles
    print(f"    bound {bound_mb or 'none':>5} MB: {n:,} events in DuckDB exactly once after {flow_s:.0f}s; "
          f"broker peak {max(samples):.0f} MB, at the end {end:.0f} MB, {recycles} recycles")
    return {"peak": max(samples), "end": end, "recycles": recycles, "events_per_s": n / flow_s}


def bound_main(args: argparse.Namespace) -> None:
    n = args.events or 200_000
    header(f"broker memory bound: {n:,} spooled hook events, bound {args.bound:g} MB, {args.runs} run(s)",
           "reference: the same flow through a stack without the bound, in the same run")
    bounded, free = [], []
    for run in range(args.runs):
        print(f"  run {run + 1}:")
        for bound, results in ((args.bound, bounded), (0.0, free)):
            with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
                results.append(bound_run(n, Path(tmp), bound))
    get = lambda rs, key: [r[key] for r in rs]  # noqa: E731
    row("broker peak RSS, bounded", get(bounded, "peak"), "unbounded", get(free, "peak"), "MB",
        higher_is_better=False)
    row("broker peak RSS, bounded", get(bounded, "peak"), "the bound", [args.bound] * len(bounded), "MB",
        higher_is_better=False)
    row("broker RSS at the end, bounded", get(bounded, "end"), "unbounded", get(free, "end"), "MB",
        higher_is_better=False)
    row("events/s to DuckDB, bounded", get(bounded, "events_per_s"), "unbounded", get(free, "events_per_s"),
        "ev/s")
    print(f"  recycles per run: {get(bounded, 'recycles')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100,000 events instead of 1,000,000")
    ap.add_argument("--events", type=int)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--bound", type=float, help="measure the broker memory bound (MB) against no bound")
    ap.add_argument("--db-memory", help="the sink's DuckDB memory limit (OUTLOOP_DB_MEMORY) instead of the default")
    ap.add_argument("--sink-batch", type=int,
                    help="records per sink transaction (OUTLOOP_SINK_BATCH) instead of the default")
    args = ap.parse_args()
    if args.bound:
        bound_main(args)
        return
    n = args.events or (100_000 if args.quick else 1_000_000)
    header(f"memory: {n:,} events, 10,000 sessions, 5,000 signatures, {args.runs} run(s)",
           f"sink's DuckDB memory limit: {args.db_memory or Settings.from_env({}).db_memory}, records per sink "
           f"transaction: {args.sink_batch or Settings.from_env({}).sink_batch}")
    results = []
    for run in range(args.runs):
        print(f"  run {run + 1}:")
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            results.append(one_run(n, Path(tmp), args.db_memory, args.sink_batch))
    get = lambda key: [r[key] for r in results]  # noqa: E731
    row("worker peak RSS", get("worker_peak"), "target", [TARGET_MB] * len(results), "MB",
        higher_is_better=False, target="<= 1.0x")
    row("worker peak RSS", get("worker_peak"), "worker idle before the flow", get("worker_idle"), "MB",
        higher_is_better=False)
    row("worker RSS 15 s after the flow", get("worker_tail"), "worker RSS at the end of the flow",
        get("worker_end"), "MB", higher_is_better=False)
    growth = [(r["broker_peak"] - r["broker_idle"]) for r in results]
    per_msg = [g * 2**20 / r["messages"] for g, r in zip(growth, results, strict=True)]
    row("broker RSS growth", growth, "worker peak RSS", get("worker_peak"), "MB", higher_is_better=False)
    print(f"  broker: {median(get('messages')):,.0f} messages held (inputs + outputs), "
          f"{median(per_msg):,.0f} bytes of RSS per message; at this rate 1 GB of broker RSS every "
          f"{2**30 / median(per_msg):,.0f} messages (~{2**30 / median(per_msg) / 2.3:,.0f} input events)")
    print(f"  processing rate over the run: median {median(get('events_per_s')):,.0f} events/s")


if __name__ == "__main__":
    main()
