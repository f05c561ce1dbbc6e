"""End to end: secrets never reach Kafka. A realistic session carrying secrets (AWS keys, GitHub
tokens, ``Authorization: Bearer``, passwords in URLs and environment assignments, a private key
block) goes through the hook forwarder (spool records, one of them not JSON, one too large and cut)
and the importers (transcripts, a hook-log capture, a trajectory) into a real broker, with a worker
and the DuckDB sink. The input topic is then read back with a plain Kafka consumer: no secret in any
value, key or header. The same run with the publisher's redaction turned off is the reference: it
does carry the secrets, and the DuckDB result is the same row for row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from outloop.replay import publish_markers, wait_for_marker
from outloop.runtime import Stack
from outloop.schemas.topics import TopicCatalogue
from outloop.streams.forwarder import Forwarder
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import iter_paths
from outloop.streams.publisher import Publisher
from outloop.streams.settings import Settings
from outloop.streams.spool import Spool
from tests import SESSION_TIMEOUT
from tests import edge_secrets as es
from tests.integration.test_forwarder import consume

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
LIMIT = 4096  # the forwarder's record limit in this test: the long raw record is cut
CUT_KEY = "AKIAQ9W8E7R6T5Y4U3I2"  # straddles the cut: no part of it may survive either
NOT_JSON = f"oops, not json: curl -u admin:{es.S['env_pw']} https://x -H 'Authorization: Bearer {es.S['bearer']}'"


def _spool(folder: Path) -> int:
    spool = Spool(folder)
    bodies = [orjson.dumps(p) for p in es.hook_payloads()]
    bodies.append(NOT_JSON.encode())
    long = ("x" * (LIMIT - 11) + " " + CUT_KEY + " and " + es.PEM).encode()
    bodies.append(long)
    for i, body in enumerate(bodies):  # fixed receive stamps: both runs see the same times
        spool.write(body, ns=int((T0 + timedelta(seconds=i)).timestamp() * 1e9))
    return len(bodies)


def _run(tmp: Path, broker: str, redact: bool) -> tuple[list[Any], dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    s = Settings.from_env({}, home=tmp / "home", broker=broker, db=tmp / "out.duckdb", topic_prefix=f"r{tag}",
                          app_id=f"outloop-{tag}", http_port=0, partitions=1, session_timeout=SESSION_TIMEOUT)
    cat = TopicCatalogue(prefix=s.topic_prefix)
    sources = es.write_sources(tmp / "sources")
    n = _spool(tmp / "spool")
    with Stack(s) as st:
        bootstrap = st.settings.broker
        assert bootstrap is not None

        def publisher() -> Publisher:
            return Publisher(bootstrap, cat, s.partitions, redact=redact, client_id="test-forwarder")

        fwd = Forwarder(spool=tmp / "spool", bootstrap=bootstrap, catalogue=cat, partitions=s.partitions,
                        max_record_bytes=LIMIT, publisher_factory=publisher)
        try:
            assert fwd.run_once() == n and fwd.raw_sent == 2
        finally:
            fwd.close()
        stats = ImportStats()
        published = 0
        with Publisher(bootstrap, cat, s.partitions, redact=redact) as pub:  # what `outloop replay` does
            for env in iter_paths([sources], stats):
                pub.envelope(env)
                published += 1
            pub.flush()
            expected = publish_markers(pub, cat, f"m-{tag}", s.partitions)
        wait_for_marker(st.client, f"m-{tag}", expected, timeout=120)
        records = consume(bootstrap, cat.events.name, n + published + s.partitions)
        tables: dict[str, Any] = {}
        for table, sql in (
            ("hook_events", "SELECT * EXCLUDE (id) FROM hook_events"),  # live ids are spool UUIDv7s
            ("tool_calls", "SELECT * FROM tool_calls"),
            ("usage", "SELECT * FROM usage"),
            ("dead_letters", 'SELECT * EXCLUDE ("at", topic) FROM dead_letters'),  # topic: the run's prefix
            ("pattern_occurrences", "SELECT * FROM pattern_occurrences"),
            ("session_sequences", "SELECT * EXCLUDE (first_seen, last_seen) FROM session_sequences"),
            ("by_source", "SELECT source, count(*) FROM tool_calls GROUP BY source"),
        ):
            _, rows = st.client.query(sql + " ORDER BY ALL")
            tables[table] = rows
    return records, tables


def _wire(records: list[Any]) -> bytes:
    parts: list[bytes] = []
    for r in records:
        parts += [r.value or b"", r.key or b""]
        for k, v in r.headers or ():
            parts += [k.encode(), v or b""]
    return b"\n".join(parts)


def test_no_secret_reaches_the_input_topic_and_the_database_is_unchanged(tmp_path: Path, broker: str) -> None:
    reference, before = _run(tmp_path / "plain", broker, redact=False)
    records, after = _run(tmp_path / "redacted", broker, redact=True)
    assert len(records) == len(reference)
    assert set(es.leaks(_wire(reference))) == set(es.S)  # without redaction every secret is on the broker
    wire = _wire(records)
    assert not es.leaks(wire), es.leaks(wire)
    assert CUT_KEY[:10].encode() not in wire  # the forwarder redacts before it cuts
    for text in es.KEEP:
        assert text.encode() in wire, text  # what is not a secret is still there
    reasons = [dict(r.headers).get("outloop-reason") for r in records if r.headers]
    assert sorted(x for x in reasons if x) == [b"not_json", b"not_json"]
    # the DuckDB result does not depend on where redaction happened
    assert before["tool_calls"] and before["hook_events"] and before["dead_letters"]
    for table in before:
        assert after[table] == before[table], table
    assert not es.leaks(orjson.dumps(after, default=str))
    # every hook call joined its transcript tool_use (the old ones by call key): 6 per session
    assert dict(after["by_source"]) == {"hook+transcript": 12, "trajectory": 2}, after["by_source"]
