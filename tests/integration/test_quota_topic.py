"""Throttle decisions through the pipeline: usage records on the usage topic, the sink decides, stores the
decision in ``throttle_decisions`` and publishes it on the throttle-decisions topic; a synthetic burn
engages throttling and the next five-hour window releases it (a real broker, a real DuckDB file)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from outloop.projections import open_sink
from outloop.schemas.events import Envelope, EventType, QuotaDecision
from tests.integration.test_sink_consumer import (
    ALL,
    catalogue,
    consumer_for,
    create_topics,
    markers_seen,
    produce,
    run_until,
)
from tests.unit import sinkdata as d

pytestmark = pytest.mark.integration


def published(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[Envelope]:
    """The envelopes on the topic's one partition, from its start, once ``expected`` are there."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=500)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        out: list[Envelope] = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out += [Envelope.model_validate_json(r.value) for r in batch]
        return out
    finally:
        consumer.close()


def test_a_burn_engages_throttling_and_the_next_window_releases_it(broker: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLOOP_QUOTA_FIVE_HOUR_TOKENS", "100")
    monkeypatch.setenv("OUTLOOP_HOME", str(tmp_path))
    cat = catalogue()
    create_topics(broker, cat)
    # 96 tokens of 100 in six minutes: critical (95%), warn (deny is off by default)
    burn = [d.usage_msg(id=f"b{i}:r", timestamp=d.T0 + timedelta(minutes=i), input_tokens=10, output_tokens=6)
            for i in range(6)]
    produce(broker, cat, burn, marker="m1")
    later = d.usage_msg(id="late:r", timestamp=d.T0 + timedelta(hours=6), input_tokens=1, output_tokens=1)
    with open_sink(tmp_path / "sink.duckdb", clock=d.clock) as sink:
        one = consumer_for(broker, sink, cat)
        asyncio.run(run_until(one, lambda: markers_seen(sink, "m1") == ALL and one.decisions.published >= 1))
        produce(broker, cat, [later], marker="m2")  # six hours on: a new five-hour block
        two = consumer_for(broker, sink, cat)  # a restarted sink publishes its latest decision again
        asyncio.run(run_until(two, lambda: markers_seen(sink, "m2") == ALL and two.decisions.published >= 2))
        stored = sink.query('SELECT id, level, action, "window" FROM throttle_decisions ORDER BY "at"')[1]
    envs = published(broker, cat.throttle_decisions.name, 3)
    assert {e.type for e in envs} == {EventType.QUOTA_DECISION} and {e.subject for e in envs} == {"quota"}
    decisions = [QuotaDecision.model_validate(e.data) for e in envs]
    unique = list(dict.fromkeys((x.id, x.level, x.action, x.window) for x in decisions))  # ids repeat, never differ
    assert [tuple(r) for r in stored] == unique
    assert [(level, action) for _id, level, action, _w in unique] == [("critical", "warn"), ("low", "none")]
    assert decisions[0].percent == 96.0 and decisions[0].basis == "estimate"
    assert all(e.id == x.id for e, x in zip(envs, decisions, strict=True))
    assert orjson.loads(envs[0].model_dump_json())["data"]["at"].startswith("2025-06-01T12:05")

