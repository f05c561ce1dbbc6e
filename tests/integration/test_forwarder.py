"""Spool -> forwarder -> Kafka against a real broker, and the publisher client."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from outloop.schemas.events import Envelope, EventType, ToolCall, UsageRecord
from outloop.schemas.topics import TopicCatalogue
from outloop.streams.forwarder import TRUNCATED_KEY, Forwarder, envelope_for, shrink_envelope
from outloop.streams.publisher import Publisher, PublishError
from outloop.streams.shim import hook_command
from outloop.streams.spool import Spool, SpoolRecord, uuid7

REPO = Path(__file__).resolve().parents[2]


def catalogue() -> TopicCatalogue:
    return TopicCatalogue(prefix=f"t{uuid.uuid4().hex[:12]}")


def hook_payload(session: str, i: int, **extra: Any) -> dict[str, Any]:
    return {"session_id": session, "transcript_path": f"/p/{session}.jsonl", "cwd": "/w",
            "hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_use_id": f"toolu_{session}_{i}",
            "tool_input": {"command": f"echo {i}"}, "tool_response": {"stdout": f"{i}\n", "stderr": ""},
            **extra}


def run_shims(spool_dir: Path, bodies: list[bytes]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
    env["OUTLOOP_SPOOL"] = str(spool_dir)
    for body in bodies:
        proc = subprocess.run(shlex.split(hook_command()), input=body, capture_output=True, env=env)
        assert proc.returncode == 0 and proc.stdout == b""


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the start), once ``expected`` arrived or
    ``timeout`` passed; waits a little more to catch extras."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=500)
    try:
        deadline = time.monotonic() + timeout
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.1)
        assert parts, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        extra_until: float | None = None
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
            if len(out) >= expected:
                extra_until = extra_until or time.monotonic() + 1.0
                if time.monotonic() >= extra_until:
                    break
        return out
    finally:
        consumer.close()


def headers(rec: Any) -> dict[str, bytes]:
    return dict(rec.headers or [])


# -- pure parts (no broker) ---------------------------------------------------------------------
def test_envelope_for_a_valid_record() -> None:
    rid = uuid7()
    body = orjson.dumps(hook_payload("s1", 1, unknown_field=[1]))
    env = envelope_for(SpoolRecord(rid, "2026-03-01T10:00:00.000001Z", body))
    assert isinstance(env, Envelope)
    assert (env.id, env.type, env.source, env.subject) == (rid, EventType.HOOK_EVENT, "hook", "s1")
    assert env.time == datetime(2026, 3, 1, 10, 0, 0, 1, tzinfo=UTC)
    assert env.data == orjson.loads(body)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not_json"),
        (b"{nope", "not_json"),
        (b'{"session_id": "\xff"}', "not_json"),
        (b"[1, 2]", "not_object"),
        (b'{"hook_event_name": "Stop"}', "no_session_id"),
        (b'{"session_id": 7}', "no_session_id"),
        (b'{"session_id": ""}', "no_session_id"),
    ],
)
def test_envelope_for_rejects_with_a_reason(raw: bytes, reason: str) -> None:
    assert envelope_for(SpoolRecord(uuid7(), "2026-03-01T10:00:00Z", raw)) == reason


def test_shrink_envelope_cuts_the_longest_strings_and_says_so() -> None:
    big = hook_payload("s", 1, tool_response={"stdout": "x" * 300_000, "stderr": "e" * 50_000})
    env = Envelope(id="i", type=EventType.HOOK_EVENT, source="hook", subject="s", data=big)
    small = shrink_envelope(env, 100_000)
    assert small is not None
    assert len(small.model_dump_json().encode()) <= 100_000
    assert small.data["tool_response"]["stdout"].startswith("xxx")
    cuts = small.data[TRUNCATED_KEY]
    assert {"path": "tool_response.stdout", "chars": 300_000} in cuts
    assert small.data["tool_use_id"] == big["tool_use_id"] and env.data == big  # original untouched
    assert shrink_envelope(env, 200) is None


# -- against a broker ---------------------------------------------------------------------------
@pytest.mark.integration
def test_events_spooled_while_no_broker_runs_reach_kafka(tmp_path: Path, fresh_broker: Any) -> None:
    bootstrap = fresh_broker.bootstrap
    fresh_broker.stop()
    spool_dir = tmp_path / "spool"
    good = [orjson.dumps(hook_payload(f"s{i % 3}", i)) for i in range(30)]
    bad = [b"garbage", b"\xff\xfe not utf-8", b'{"no": "session"}', b""]
    run_shims(spool_dir, good[:15] + bad + good[15:])
    spool = Spool(spool_dir)
    ids = spool.ready()
    assert len(ids) == 34

    cat = catalogue()
    fwd = Forwarder(spool=spool, bootstrap=bootstrap, catalogue=cat, partitions=4, timeout=1.0,
                    flush_timeout=3.0)
    with pytest.raises(PublishError):
        fwd.run_once()
    assert spool.ready() == ids  # broker down: nothing deleted

    fresh_broker.start()
    assert fwd.run_once() == 34
    assert spool.ready() == [] and spool.temp_files() == []
    assert fwd.raw_sent == 4
    fwd.close()

    records = consume(bootstrap, cat.events.name, 34)
    envelopes = [r for r in records if not headers(r).get("outloop-reason")]
    raws = [r for r in records if headers(r).get("outloop-reason")]
    got = [Envelope.model_validate_json(r.value) for r in envelopes]
    raw_ids = {headers(r)["outloop-spool-id"].decode() for r in raws}
    assert len(got) == 30 and len(raws) == 4  # each once
    assert sorted(e.id for e in got) == sorted(set(ids) - raw_ids)  # the shim's uuid7 is the event id
    for rec, env in zip(envelopes, got, strict=True):
        assert rec.key == env.subject.encode() == env.data["session_id"].encode()
        assert env.type == EventType.HOOK_EVENT and env.source == "hook" and env.time is not None
    assert sorted(orjson.dumps(e.data) for e in got) == sorted(orjson.dumps(orjson.loads(g)) for g in good)
    by_session: dict[str, list[int]] = {}
    for rec, env in zip(envelopes, got, strict=True):
        by_session.setdefault(env.subject, []).append((rec.partition, rec.offset, env.data["tool_use_id"]))
    for session, items in by_session.items():  # one partition per session, in spool order
        assert len({p for p, _, _ in items}) == 1
        ordered = [t for _, _, t in sorted(items)]
        assert ordered == [f"toolu_{session}_{i}" for i in range(30) if f"s{i % 3}" == session]
    assert sorted(r.value for r in raws) == sorted(bad)
    assert {headers(r)["outloop-reason"] for r in raws} == {b"not_json", b"no_session_id"}
    assert all(r.key == b"unknown" and headers(r)["outloop-spool-id"].decode() in ids for r in raws)


def backlog_after_broker_death(tmp_path: Path, broker: Any, flush_timeout: float
                               ) -> tuple[Spool, Forwarder, list[str]]:
    """A forwarder that connected and made its topics, then its broker killed and 19 more events
    spooled: the spool, the forwarder and the ids waiting."""
    spool = Spool(tmp_path / "spool")
    fwd = Forwarder(spool=spool, bootstrap=broker.bootstrap, catalogue=catalogue(), partitions=2,
                    timeout=1.0, flush_timeout=flush_timeout)
    spool.write(orjson.dumps(hook_payload("s", 0)))
    assert fwd.run_once() == 1  # connected, topics made
    broker.kill()
    for i in range(1, 20):
        spool.write(orjson.dumps(hook_payload("s", i)))
    return spool, fwd, spool.ready()


@pytest.mark.integration
def test_forwarder_deletes_nothing_when_the_broker_dies(tmp_path: Path, fresh_broker: Any) -> None:
    spool, fwd, ids = backlog_after_broker_death(tmp_path, fresh_broker, flush_timeout=3.0)
    t0 = time.monotonic()
    with pytest.raises(PublishError):
        fwd.run_once()
    assert time.monotonic() - t0 < 15
    assert spool.ready() == ids
    assert fwd.last_error is not None
    fwd.close()


@pytest.mark.integration
def test_an_abandoned_pass_stops_waiting_for_a_dead_broker_and_deletes_nothing(tmp_path: Path,
                                                                              fresh_broker: Any) -> None:
    """What the supervisor does when the embedded broker died: the pass waiting for its
    acknowledgements (a 15 s flush timeout) ends within a moment of abandon(); nothing is deleted."""
    import threading

    spool, fwd, ids = backlog_after_broker_death(tmp_path, fresh_broker, flush_timeout=15.0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fwd.run_once()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)  # the pass is waiting for acknowledgements that cannot come
    assert t.is_alive()
    t0 = time.monotonic()
    fwd.abandon()
    t.join(15)
    assert not t.is_alive() and time.monotonic() - t0 < 2.0
    assert len(errors) == 1 and isinstance(errors[0], PublishError) and "abandoned" in str(errors[0])
    assert spool.ready() == ids
    fwd.resume()
    fwd.close()


@pytest.mark.integration
def test_forwarder_survives_sigkill_at_least_once_with_same_ids(tmp_path: Path, broker: str) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    n = 3000
    for i in range(n):
        spool.write(orjson.dumps(hook_payload(f"s{i % 7}", i, pad="p" * 500)))
    ids = set(spool.ready())
    cat = catalogue()
    code = (
        "import sys, threading; sys.path.insert(0, sys.argv[1]);"
        "from outloop.schemas.topics import TopicCatalogue; from outloop.streams.forwarder import Forwarder;"
        "f = Forwarder(spool=sys.argv[2], bootstrap=sys.argv[3],"
        " catalogue=TopicCatalogue(prefix=sys.argv[4]), partitions=4, batch_size=100);"
        "f.run_forever(threading.Event())"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(REPO), str(spool_dir), broker, cat.prefix],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while spool.count() > n * 0.6 and time.monotonic() < deadline:  # let it get going
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    left = spool.count()
    assert 0 < left < n, "kill the forwarder mid-way"

    fwd = Forwarder(spool=spool, bootstrap=broker, catalogue=cat, partitions=4)
    fwd.run_once()
    fwd.close()
    assert spool.count() == 0

    records = consume(broker, cat.events.name, n, timeout=60)
    by_id: dict[str, set[bytes]] = {}
    for r in records:
        env = json.loads(r.value)
        by_id.setdefault(env["id"], set()).add(r.value)
    assert set(by_id) == ids  # every record arrived
    assert all(len(values) == 1 for values in by_id.values())  # duplicates only as identical bytes
    assert len(records) >= n


@pytest.mark.integration
def test_oversized_payload_is_shrunk_to_fit_and_marked(tmp_path: Path, broker: str) -> None:
    spool = Spool(tmp_path / "spool")
    big = hook_payload("big", 1, tool_response={"stdout": "y" * 3_000_000, "stderr": ""})
    rid = spool.write(orjson.dumps(big))
    cat = catalogue()
    fwd = Forwarder(spool=spool, bootstrap=broker, catalogue=cat, partitions=4)
    assert fwd.run_once() == 1
    fwd.close()
    (rec,) = consume(broker, cat.events.name, 1)
    assert len(rec.value) <= 1_000_000
    env = Envelope.model_validate_json(rec.value)
    assert env.id == rid
    assert env.data[TRUNCATED_KEY] == [{"path": "tool_response.stdout", "chars": 3_000_000}]


@pytest.mark.integration
def test_publisher_sends_every_event_type_and_reports_acks(broker: str) -> None:
    cat = catalogue()
    now = datetime.now(UTC)
    with Publisher(broker, cat, partitions=3) as pub:
        created = pub.ensure_topics()
        assert sorted(created) == sorted(t.name for t in cat.all())
        assert pub.ensure_topics() == []  # already there: tolerated
        sent = [
            pub.hook_event({"session_id": "s1", "hook_event_name": "Stop"}, now, "h1"),
            pub.tool_call(ToolCall(id="toolu_9", tool_use_id="toolu_9", call_key=None, session_id="s1",
                                   tool_name="Bash", status="ok", source="adw")),
            pub.usage(UsageRecord(id="m:r", session_id="s1", model="claude", timestamp=now,
                                  input_tokens=1, output_tokens=2)),
            pub.workflow_started("run-1", "build", started_at=now),
            pub.workflow_phase_changed("run-1", "test", 1, at=now),
            pub.workflow_ended("run-1", "succeeded", ended_at=now, input_tokens=10),
            pub.raw(cat.events.name, b"s1", b"\x00not an event"),
        ]
        pub.flush(10)
        assert all(d.acked and d.error is None for d in sent)
        meta = sent[0].get(1)
        assert meta.topic == cat.events.name
    events = consume(broker, cat.events.name, 4)
    workflows = consume(broker, cat.workflows.name, 3)
    ev_ids = sorted(json.loads(r.value)["id"] for r in events if r.value.startswith(b"{"))
    assert ev_ids == ["h1", "m:r", "toolu_9"]
    wf = sorted((r.key, json.loads(r.value)["id"], json.loads(r.value)["type"]) for r in workflows)
    assert wf == [(b"run-1", "run-1:1", "workflow.phase_changed"),
                  (b"run-1", "run-1:ended", "workflow.ended"),
                  (b"run-1", "run-1:started", "workflow.started")]
    for r in workflows:
        Envelope.model_validate_json(r.value)


@pytest.mark.integration
def test_publisher_errors_are_publish_errors(fresh_broker: Any) -> None:
    bootstrap = fresh_broker.bootstrap
    pub = Publisher(bootstrap, catalogue(), timeout=1.0)
    pub.ensure_topics()
    first = pub.hook_event({"session_id": "s", "hook_event_name": "Stop"})
    pub.flush(5)
    assert first.acked
    fresh_broker.kill()
    d = pub.hook_event({"session_id": "s", "hook_event_name": "Stop"})  # metadata known: queued
    with pytest.raises(PublishError):
        pub.flush(2)
    assert not d.acked
    with pytest.raises(PublishError, match="workflows"):  # never-seen topic: fails at once
        pub.workflow_started("r", "w")
    t0 = time.monotonic()
    pub.close(timeout=1)
    assert time.monotonic() - t0 < 5
    with pytest.raises(PublishError):
        pub.hook_event({"session_id": "s", "hook_event_name": "Stop"})  # closed
    with pytest.raises(PublishError, match="cannot connect"):
        Publisher(bootstrap, timeout=1.0)
