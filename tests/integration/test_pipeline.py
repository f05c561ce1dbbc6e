"""End to end on a real broker: files -> importers -> Kafka -> Faust agents -> DuckDB."""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import duckdb
import orjson
import pytest

from outloop.replay import replay
from outloop.runtime import Stack
from outloop.sample import write_sample
from outloop.streams.settings import Settings
from tests import SESSION_TIMEOUT

pytestmark = pytest.mark.integration

DATA_TABLES = ("hook_events", "tool_calls", "usage", "workflow_runs", "workflow_events", "dead_letters",
               "pattern_occurrences", "operation_patterns", "session_sequences")


def settings_for(tmp: Path, broker: str, db: Path | None = None) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings.from_env({}, home=tmp / "home", broker=broker, db=db or tmp / "out.duckdb",
                             topic_prefix=f"t{tag}", app_id=f"outloop-{tag}", http_port=0,
                             session_timeout=SESSION_TIMEOUT)


def dump(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for table in DATA_TABLES:
            cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
            quoted = ", ".join(f'"{c}"' for c in cols)
            out[table] = sorted(con.execute(f"SELECT {quoted} FROM {table}").fetchall(), key=repr)
        return out
    finally:
        con.close()


def test_replay_on_a_broker_of_its_own_as_users_run_it(tmp_path: Path, broker: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``outloop replay`` and ``outloop demo`` without OUTLOOP_BROKER: the replay starts an embedded
    broker of its own (with a short session timeout, see ``replay_settings``) and materializes the
    same as a replay through a shared broker. Its logs live in a private temporary home, removed
    when it ends."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    sample = tmp_path / "sample"
    write_sample(sample, sessions=2)
    own = Settings.from_env({}, home=tmp_path / "own", db=tmp_path / "own.duckdb", http_port=0)
    assert own.broker is None and own.session_timeout is None
    mine = replay([sample], own)
    shared = replay([sample], settings_for(tmp_path, broker))
    assert mine.tool_calls > 0 and mine.usage_records > 0
    assert (mine.events, mine.sessions, mine.tool_calls, mine.tool_calls_by_source, mine.usage_records,
            mine.tokens, mine.dead_letters_by_reason) == (
        shared.events, shared.sessions, shared.tool_calls, shared.tool_calls_by_source, shared.usage_records,
        shared.tokens, shared.dead_letters_by_reason)
    assert not list((tmp_path / "tmp").iterdir())  # the private homes are gone
    assert not (tmp_path / "own").exists()  # and nothing was written into the configured home


def test_replay_sample_twice_changes_no_row(tmp_path: Path, broker: str) -> None:
    sample = tmp_path / "sample"
    write_sample(sample, sessions=3)
    s = settings_for(tmp_path, broker)
    first = replay([sample], s)
    assert first.tool_calls > 0 and first.usage_records > 0
    before = dump(s.db)
    # a second replay, on fresh topics of the same broker, into the same database
    second = replay([sample], replace(s, topic_prefix=s.topic_prefix + "b", app_id=s.app_id + "b"))
    after = dump(s.db)
    changed = {t: (sorted(set(before[t]) - set(after[t]), key=repr)[:3],
                   sorted(set(after[t]) - set(before[t]), key=repr)[:3])
               for t in before if before[t] != after[t]}
    assert not changed, changed
    assert (second.tool_calls, second.usage_records, second.tokens) == (
        first.tool_calls, first.usage_records, first.tokens)


def test_malformed_events_become_dead_letters_while_valid_ones_flow(tmp_path: Path, broker: str) -> None:
    from outloop.replay import publish_markers, wait_for_marker
    from outloop.schemas.topics import TopicCatalogue
    from outloop.streams.publisher import Publisher

    s = settings_for(tmp_path, broker)
    cat = TopicCatalogue(prefix=s.topic_prefix)
    good = {"id": "ok-1", "type": "hook.event", "source": "test", "subject": "sess",
            "time": "2026-03-01T10:00:00Z",
            "data": {"session_id": "sess", "hook_event_name": "BrandNewHook", "whatever": [1, 2]}}
    bad = {
        "not_json": b"{nope",
        "not_object": b"[1,2,3]",
        "data": orjson.dumps({**good, "id": "bad-1", "data": {"session_id": 7, "hook_event_name": "X"}}),
        "unknown_type": orjson.dumps({**good, "id": "bad-2", "type": "mystery.event"}),
        "envelope": orjson.dumps({**good, "id": "bad-3", "time": "not a time"}),
    }
    with Stack(s) as stack:
        with Publisher(stack.settings.broker, catalogue=cat, partitions=s.partitions) as pub:
            for value in bad.values():
                pub.raw(cat.events.name, b"sess", value)
            pub.raw(cat.events.name, b"sess", orjson.dumps(good))
            pub.flush()
            expected = publish_markers(pub, cat, "m1", s.partitions)
        wait_for_marker(stack.client, "m1", expected, timeout=120)
        _, rows = stack.client.query("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
        assert dict((r, int(n)) for r, n in rows) == {reason: 1 for reason in bad}
        _, rows = stack.client.query("SELECT hook_event_name, payload FROM hook_events")
        assert len(rows) == 1 and rows[0][0] == "BrandNewHook"
        assert orjson.loads(rows[0][1])["whatever"] == [1, 2]


@pytest.mark.traces
@pytest.mark.slow
def test_replay_traces_dev_matches_direct_computation(tmp_path: Path, broker: str, traces: Path) -> None:
    from tests.integration.direct import transcript_truth

    s = settings_for(tmp_path, broker)
    summary = replay([traces], s)
    truth = transcript_truth(traces)
    con = duckdb.connect(str(s.db), read_only=True)
    try:
        n_calls = con.execute(
            "SELECT count(*) FROM tool_calls WHERE source LIKE '%transcript%'").fetchone()[0]
        assert n_calls == len(truth.tool_use_ids)
        assert set(r[0] for r in con.execute(
            "SELECT tool_use_id FROM tool_calls WHERE source LIKE '%transcript%'").fetchall()) == truth.tool_use_ids
        sums = con.execute(
            "SELECT sum(input_tokens), sum(output_tokens), sum(cache_read_input_tokens), "
            "sum(cache_creation_input_tokens), count(*) FROM usage WHERE source = 'transcript'").fetchone()
        assert sums == (truth.input, truth.output, truth.cache_read, truth.cache_creation, len(truth.usage_ids))
    finally:
        con.close()
    assert summary.damaged_lines == truth.damaged_lines
    assert summary.damaged_lines > 0
    con = duckdb.connect(str(s.db), read_only=True)
    try:
        confident = con.execute("SELECT count(*) FROM operation_patterns WHERE occurrence_count >= 2 "
                                "AND confidence_score BETWEEN 10 AND 100").fetchone()[0]
        assert confident >= 10
        # every pattern count is a count of distinct tool calls carrying that signature
        mismatched = con.execute(
            "SELECT count(*) FROM operation_patterns p JOIN (SELECT signature, count(*) AS n, "
            "count(DISTINCT session_id) AS s FROM tool_calls GROUP BY signature) c USING (signature) "
            "WHERE p.occurrence_count <> c.n OR p.session_count <> c.s").fetchone()[0]
        assert mismatched == 0
        unsigned = con.execute("SELECT count(*) FROM tool_calls WHERE tool_name IS NOT NULL AND signature IS NULL"
                               ).fetchone()[0]
        assert unsigned == 0
    finally:
        con.close()


def test_full_and_oversized_output_batches_arrive_whole_and_before_the_marker(tmp_path: Path, broker: str) -> None:
    """The agents append outputs to one producer batch per topic and partition: batches that fill up
    (512 KB) are sent and the next one started, a record larger than a batch goes alone, and each
    partition's flush marker still follows everything emitted before it."""
    from outloop.replay import publish_markers, wait_for_marker
    from outloop.schemas.topics import TopicCatalogue
    from outloop.streams.publisher import Publisher

    s = settings_for(tmp_path, broker)
    cat = TopicCatalogue(prefix=s.topic_prefix)
    turns, big = 1500, "x" * (700 * 1024)

    def hook(name: str, i: int, response: str) -> bytes:
        data = {"session_id": "sess", "hook_event_name": name, "tool_name": "Bash", "tool_use_id": f"t{i}",
                "tool_input": {"command": f"echo {i} " + "y" * 600}}
        if name == "PostToolUse":
            data["tool_response"] = {"stdout": response, "stderr": ""}
        return orjson.dumps({"id": f"{name}-{i}", "type": "hook.event", "source": "test", "subject": "sess",
                             "time": "2026-03-01T10:00:00Z", "data": data})

    with Stack(s) as stack:
        with Publisher(stack.settings.broker, catalogue=cat, partitions=s.partitions) as pub:
            for i in range(turns):
                pub.raw(cat.events.name, b"sess", hook("PreToolUse", i, ""))
                pub.raw(cat.events.name, b"sess", hook("PostToolUse", i, big if i == turns // 2 else "ok"))
            pub.flush()
            expected = publish_markers(pub, cat, "m1", s.partitions)
        wait_for_marker(stack.client, "m1", expected, timeout=180)
        _, rows = stack.client.query("SELECT (SELECT count(*) FROM hook_events), count(*), max(output_bytes), "
                                     "count(*) FILTER (WHERE status = 'ok') FROM tool_calls")
        assert tuple(int(v) for v in rows[0]) == (2 * turns, turns, len(big), turns)
        _, rows = stack.client.query("SELECT count(*) FROM dead_letters")
        assert int(rows[0][0]) == 0
