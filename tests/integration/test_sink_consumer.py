"""SinkConsumer against a real broker: rows arrive, a restarted consumer resumes at the offsets
stored in DuckDB, topics created late are picked up, and a restarted (emptied) broker log is
noticed whether it came back shorter or already refilled past the stored offsets."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from outloop.projections import open_sink
from outloop.schemas.topics import TopicCatalogue
from outloop.sinks.consumer import SinkConsumer
from outloop.sinks.decode import tool_call_row
from outloop.sinks.writer import DuckSink
from tests.unit import sinkdata as d

pytestmark = pytest.mark.integration
PARTITIONS = 2
Item = tuple[str, bytes | None, bytes]


def catalogue() -> TopicCatalogue:
    return TopicCatalogue(prefix=f"sk{uuid.uuid4().hex[:10]}")


def create_topics(bootstrap: str, cat: TopicCatalogue) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for topic in cat.outputs():
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic.name, PARTITIONS, 1)])
    finally:
        admin.close()


def produce(bootstrap: str, cat: TopicCatalogue, items: list[Item], marker: str | None = None) -> None:
    """Send test items (topic names 't.<suffix>') to the catalogue's topics, partitioned by key;
    then, when ``marker`` is given, a flush marker to every partition of every output topic."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        for topic, key, value in items:
            name = f"{cat.prefix}.{topic.split('.', 1)[1]}"
            producer.send(name, key=key, value=value, partition=zlib.crc32(key or b"") % PARTITIONS)
        for topic in cat.outputs() if marker else []:
            for p in range(PARTITIONS):
                producer.send(topic.name, value=d.flush_msg("x", marker, p)[2], partition=p)
        producer.flush()
    finally:
        producer.close()


def tool_items(views: list[dict[str, Any]]) -> list[Item]:
    return [d.tool_msg(v) for v in views]


def tool_calls_match(sink: DuckSink, views: list[dict[str, Any]]) -> bool:
    columns, rows = sink.query("SELECT * FROM tool_calls")
    derived = ("signature", "category", "side_effect", "signature_version", "run_ms", "duration_source")  # derived
    stored = {r[0]: {c: v for c, v in zip(columns, r, strict=True) if c not in derived} for r in rows}
    columns = [c for c in columns if c not in derived]
    expected = {k: {c: tool_call_row(v).get(c) for c in columns}
                for k, v in d.expected_tool_calls(views).items()}
    return stored == expected


def markers_seen(sink: DuckSink, marker: str) -> int:
    return int(sink.query("SELECT count(*) FROM flush_markers WHERE marker = ?", [marker])[1][0][0])


async def run_until(consumer: SinkConsumer, done: Callable[[], bool], timeout: float = 60.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not done():
            if task.done():
                task.result()
                raise AssertionError("the consumer stopped by itself")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; progress {consumer.progress()}")
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def consumer_for(bootstrap: str, sink: DuckSink, cat: TopicCatalogue) -> SinkConsumer:
    return SinkConsumer(bootstrap, sink, cat, max_batch=50, refresh_s=0.5, probe_s=0.5)


ALL = PARTITIONS * len(TopicCatalogue().outputs())  # one marker per partition of each output topic


def test_rows_arrive_and_a_restarted_consumer_resumes_without_duplicates(broker: str, tmp_path: Path) -> None:
    cat = catalogue()
    create_topics(broker, cat)
    views = d.random_views(random.Random(11), 60)
    first, second = views[: len(views) // 2], views[len(views) // 2:]
    extra = d.workflow_msgs("run-a") + [d.usage_msg(id=f"u{i}:r", output_tokens=i) for i in range(20)]
    extra += [d.hook_msg(f"h{i}") for i in range(10)]
    extra += [d.dead_letter_msg(b"\x00raw"), ("t.usage", b"k", b"junk")]
    produce(broker, cat, tool_items(first) + extra, marker="m1")
    with open_sink(tmp_path / "sink.duckdb") as sink:
        one = consumer_for(broker, sink, cat)
        asyncio.run(run_until(one, lambda: markers_seen(sink, "m1") == ALL))
        assert tool_calls_match(sink, first)
        assert sink.query("SELECT count(*) FROM usage")[1] == [[20]]
        assert sink.query("SELECT status, phase, events FROM workflow_runs")[1] == [["succeeded", "build", 4]]
        assert sink.query("SELECT count(*) FROM hook_events")[1] == [[10]]
        reasons = sink.query("SELECT reason FROM dead_letters ORDER BY reason")[1]
        assert reasons == [["not_json"], ["sink_decode"]]
        assert one.progress()["decode_errors"] == 1
        stored = sink.stored_offsets()
        assert len(stored) == ALL
        # the second consumer must start where the first stopped: redelivered records upsert, new ones add
        again = tool_items(second) + tool_items(first[:10]) + extra[:5]
        produce(broker, cat, again, marker="m2")
        two = consumer_for(broker, sink, cat)
        asyncio.run(run_until(two, lambda: markers_seen(sink, "m2") == ALL))
        assert two.progress()["records"] == len(again) + ALL  # nothing read twice
        assert two.progress()["restarts"] == 0
        assert tool_calls_match(sink, views)
        assert sink.query("SELECT count(*) FROM usage")[1] == [[20]]
        assert sink.query("SELECT count(*) FROM dead_letters")[1] == [[2]]
        read = sum(o.next_offset for o in sink.stored_offsets().values())
        assert read == sum(o.next_offset for o in stored.values()) + len(again) + ALL


def test_after_write_is_called_once_per_batch_written_after_its_commit(broker: str, tmp_path: Path) -> None:
    """The sink process trims its heap from this hook: once per batch, when the batch is stored."""
    cat = catalogue()
    create_topics(broker, cat)
    produce(broker, cat, [d.usage_msg(id=f"u{i}:r", output_tokens=i) for i in range(120)], marker="m1")
    with open_sink(tmp_path / "sink.duckdb") as sink:
        calls: list[tuple[int, int]] = []
        consumer = SinkConsumer(broker, sink, cat, max_batch=50, refresh_s=0.5, probe_s=0.5,
                                after_write=lambda: calls.append((consumer.counters["batches"], stored())))

        def stored() -> int:
            return int(sink.query("SELECT count(*) FROM usage")[1][0][0])

        asyncio.run(run_until(consumer, lambda: markers_seen(sink, "m1") == ALL))
        batches = consumer.progress()["batches"]
        assert batches >= 3  # 120 records + markers in batches of at most 50
        assert [n for n, _ in calls] == list(range(1, batches + 1))
        assert [rows for _, rows in calls] == sorted(rows for _, rows in calls)
        assert calls[-1][1] == 120


def test_topics_created_after_the_consumer_started(broker: str, tmp_path: Path) -> None:
    cat = catalogue()
    views = d.random_views(random.Random(12), 10)

    async def scenario(sink: DuckSink) -> None:
        consumer = consumer_for(broker, sink, cat)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await asyncio.sleep(2.0)
        admin = KafkaAdminClient(bootstrap_servers=broker)
        try:  # waiting must not have created the topics
            assert not [t for t in admin.list_topics() if t.startswith(cat.prefix)]
        finally:
            admin.close()
        create_topics(broker, cat)
        produce(broker, cat, tool_items(views), marker="m")
        stop.set()
        await task
        await run_until(consumer_for(broker, sink, cat), lambda: markers_seen(sink, "m") == ALL)

    with open_sink(tmp_path / "late.duckdb") as sink:
        asyncio.run(scenario(sink))
        assert tool_calls_match(sink, views)


@pytest.mark.parametrize("probe_s", [0.5, 3600.0])
def test_broker_restart_while_consuming(fresh_broker: Any, tmp_path: Path, probe_s: float) -> None:
    """The log comes back shorter than the stored offsets, then grows: re-read from its start.
    With a rare anchor probe (3600 s) the fetch high watermarks alone must notice it."""
    cat = catalogue()
    bootstrap = fresh_broker.bootstrap
    old = d.random_views(random.Random(13), 40)
    new = d.random_views(random.Random(14), 40, tag="n")

    async def scenario(sink: DuckSink) -> SinkConsumer:
        create_topics(bootstrap, cat)
        produce(bootstrap, cat, tool_items(old), marker="m1")
        consumer = SinkConsumer(bootstrap, sink, cat, max_batch=50, refresh_s=0.5, probe_s=probe_s)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        while markers_seen(sink, "m1") < ALL:
            await asyncio.sleep(0.1)
        fresh_broker.stop()
        fresh_broker.start()
        create_topics(bootstrap, cat)
        produce(bootstrap, cat, tool_items(new[:5]))  # shorter than before: below the stored offsets
        await asyncio.sleep(3.0)
        produce(bootstrap, cat, tool_items(new[5:] + old[:15]), marker="m2")  # grows past them
        deadline = asyncio.get_running_loop().time() + 90
        while not (markers_seen(sink, "m2") >= ALL and tool_calls_match(sink, old + new)):
            assert asyncio.get_running_loop().time() < deadline, consumer.progress()
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, 30)
        return consumer

    with open_sink(tmp_path / "restart.duckdb") as sink:
        consumer = asyncio.run(scenario(sink))
        assert consumer.progress()["restarts"] >= 1
        assert tool_calls_match(sink, old + new)


def test_log_refilled_past_the_stored_offsets_while_the_consumer_was_down(fresh_broker: Any,
                                                                          tmp_path: Path) -> None:
    cat = catalogue()
    bootstrap = fresh_broker.bootstrap
    old = [d.usage_msg(id=f"old{i}:r", session_id=f"s{i % 4}") for i in range(30)]
    new = [d.usage_msg(id=f"new{i}:r", session_id=f"s{i % 4}") for i in range(30)]
    create_topics(bootstrap, cat)
    produce(bootstrap, cat, old, marker="m1")
    with open_sink(tmp_path / "refill.duckdb") as sink:
        asyncio.run(run_until(consumer_for(bootstrap, sink, cat), lambda: markers_seen(sink, "m1") == ALL))
        stored = sink.stored_offsets()
        fresh_broker.stop()
        fresh_broker.start()
        create_topics(bootstrap, cat)
        # new records first (at offsets the sink believes it has read), then old ones again, then more
        produce(bootstrap, cat, new + old + new, marker="m2")
        consumer = consumer_for(bootstrap, sink, cat)
        asyncio.run(run_until(consumer, lambda: markers_seen(sink, "m2") == ALL))
        assert consumer.progress()["restarts"] >= 1
        counts = sink.query("SELECT count(*), count(*) FILTER (WHERE id LIKE 'new%') FROM usage")[1]
        assert counts == [[60, 30]]
        after = sink.stored_offsets()
        usage_tps = [tp for tp in stored if tp[0] == cat.usage.name]
        assert sum(stored[tp].next_offset for tp in usage_tps) == len(old) + PARTITIONS
        assert sum(after[tp].next_offset for tp in usage_tps) == 3 * len(old) + PARTITIONS
        assert all(after[tp].anchor and after[tp].anchor != stored[tp].anchor for tp in stored)
