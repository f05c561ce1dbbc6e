"""DuckSink on a real DuckDB file: idempotence, merge rules, transactions, dead letters."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pytest

from outloop.agents.signatures import signature_of
from outloop.agents.toolcalls import run_time
from outloop.projections import open_sink
from outloop.schemas.events import EventType
from outloop.sinks.decode import tool_call_row
from outloop.sinks.upsert import PLAIN, Optimism
from outloop.sinks.writer import DuckSink, ErrorKind, classify_error
from tests.unit import sinkdata as d

DATA_TABLES = ("hook_events", "tool_calls", "usage", "workflow_events", "workflow_runs", "dead_letters",
               "flush_markers")


def dump(sink: DuckSink, tables: tuple[str, ...] = DATA_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table in tables:
        columns, rows = sink.query(f"SELECT * FROM {table}")
        out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[DuckSink]:
    with open_sink(tmp_path / "sink.duckdb", clock=d.clock) as s:
        yield s


def corpus(seed: int) -> tuple[list[dict[str, Any]], list[tuple[str, int, int, bytes | None, bytes | None]]]:
    rng = random.Random(seed)
    views = d.random_views(rng)
    items = [d.tool_msg(v) for v in views]
    items += [d.usage_msg(id=f"m{i % 7}:r", input_tokens=rng.randrange(100), output_tokens=rng.randrange(100),
                          cache_read_input_tokens=rng.choice([0, 5]), cost_usd=rng.choice([None, 0.5]))
              for i in range(20)]
    items += d.workflow_msgs("run1") + d.workflow_msgs("run2")[:2]
    items += [d.hook_msg(f"h{i}", tool_use_id=f"toolu_{i:03d}") for i in range(10)]
    items += [d.dead_letter_msg(b"\xff\x00raw"), ("t.usage", b"s1", b"not json"),
              ("t.tool-calls", None, b"[1]")]
    items += [d.flush_msg("tool-calls", "m1", 0), d.flush_msg("usage", "m1", 0)]
    return views, d.with_offsets(items)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_split_reordered_or_repeated_give_identical_tables(tmp_path: Path, seed: int) -> None:
    views, messages = corpus(seed)
    with open_sink(tmp_path / "one.duckdb", clock=d.clock) as one:
        one.write_batch(messages)
        reference = dump(one)
        one.write_batch(messages)  # the same batch again
        assert dump(one) == reference
    rng = random.Random(seed * 100)
    shuffled = messages + rng.sample(messages, len(messages) // 3)  # redelivered duplicates
    rng.shuffle(shuffled)
    with open_sink(tmp_path / "many.duckdb", clock=d.clock) as many:
        i = 0
        while i < len(shuffled):
            n = rng.randrange(1, 25)
            many.write_batch(shuffled[i:i + n])
            i += n
        assert dump(many) == reference


@pytest.mark.parametrize("seed", [4, 5])
def test_tool_calls_equal_the_python_merge_reference(sink: DuckSink, seed: int) -> None:
    views, messages = corpus(seed)
    for i in range(0, len(messages), 7):
        sink.write_batch(messages[i:i + 7])
    columns, rows = sink.query("SELECT * FROM tool_calls")
    stored = {r[0]: dict(zip(columns, r, strict=True)) for r in rows}
    expected = {k: tool_call_row(v) for k, v in d.expected_tool_calls(views).items()}
    assert set(stored) == set(expected)
    signed = ("signature", "category", "side_effect", "signature_version", "run_ms", "duration_source")  # derived
    merged = [c for c in columns if c not in signed]
    views_merged = d.expected_tool_calls(views)
    for key, row in expected.items():
        assert {c: row.get(c) for c in merged} == {c: stored[key][c] for c in merged}, key
        assert (stored[key]["run_ms"], stored[key]["duration_source"]) == run_time(views_merged[key]), key
        if row.get("tool_name"):
            sig = signature_of(row["tool_name"], orjson.loads(row["tool_input"]) if row["tool_input"] else None)
            assert (stored[key]["signature"], stored[key]["category"]) == (sig.signature, sig.category)


def test_syn_row_joins_the_real_row_in_either_order(tmp_path: Path) -> None:
    key = "s1:abc:0"
    syn_pre = d.tool_view(f"syn:{key}", call_key=key, tool_input={"command": "ls"}, command="ls",
                          started_at=d.T0, input_bytes=17)
    syn_post = d.tool_view(f"syn:{key}", call_key=key, status="ok", ended_at=d.T0.replace(second=4),
                           output_bytes=800, output_tokens_est=200)
    real = d.tool_view("toolu_9", call_key=key, tool_input={"command": "ls"}, command="ls",
                       started_at=d.T0.replace(microsecond=5), source="transcript")
    results = []
    for order in itertools.permutations([syn_pre, syn_post, real]):
        for batched in (False, True):
            with open_sink(tmp_path / f"{len(results)}.duckdb", clock=d.clock) as s:
                msgs = d.with_offsets([d.tool_msg(v) for v in order])
                for batch in ([msgs] if batched else [[m] for m in msgs]):
                    s.write_batch(batch)
                results.append(dump(s, ("tool_calls",))["tool_calls"])
    assert all(r == results[0] for r in results)
    (row,) = results[0]
    assert row[:4] == ("toolu_9", "toolu_9", key, "s1")
    assert row[7] == "ok" and row[10] == 4000.0 and row[12] == 800 and row[14] == "hook+transcript"


def test_usage_keeps_the_largest_record_whole(tmp_path: Path) -> None:
    small = d.usage_msg(input_tokens=10, output_tokens=5, model="claude-opus-4-5")
    large = d.usage_msg(input_tokens=10, output_tokens=50, cache_creation_input_tokens=7, cost_usd=0.1)
    tie_a = d.usage_msg(input_tokens=60, output_tokens=10, source="a")  # same total and output as tie_b
    tie_b = d.usage_msg(input_tokens=50, output_tokens=10, cache_read_input_tokens=10, source="b")
    seen = set()
    for order in itertools.permutations([small, large]):
        with open_sink(tmp_path / f"u{len(seen)}.duckdb", clock=d.clock) as s:
            for m in d.with_offsets(list(order)):
                s.write_batch([m])
            seen.add(tuple(map(tuple, s.query("SELECT model, output_tokens, cost_usd FROM usage")[1])))
    assert seen == {(("claude-sonnet-4-5", 50, 0.1),)}
    winners = set()
    for order in ([tie_a, tie_b], [tie_b, tie_a]):
        for split in (False, True):
            with open_sink(tmp_path / f"t{len(winners)}{split}{order[0] is tie_a}.duckdb", clock=d.clock) as s:
                msgs = d.with_offsets(order)
                for batch in ([[m] for m in msgs] if split else [msgs]):
                    s.write_batch(batch)
                rows = s.query("SELECT source, count(*) OVER () FROM usage")[1]
                winners.add(tuple(map(tuple, rows)))
    assert len(winners) == 1 and next(iter(winners))[0][1] == 1  # one row, same winner every time


def test_workflow_run_fold_is_order_independent(tmp_path: Path) -> None:
    events = d.workflow_msgs("run7")
    rows = set()
    for i, order in enumerate(itertools.permutations(events)):
        with open_sink(tmp_path / f"w{i}.duckdb", clock=d.clock) as s:
            for m in d.with_offsets(list(order)):
                s.write_batch([m])
            rows.add(tuple(s.query("SELECT * FROM workflow_runs")[1][0]))
            assert s.query("SELECT count(*) FROM workflow_events")[1] == [[4]]
    assert len(rows) == 1
    row = rows.pop()
    assert row[:4] == ("run7", "adw_plan", "s1", "succeeded")
    assert row[6:10] == ("build", 2, 100, 40) and row[12:] == (0.25, 4)


def test_running_workflow_without_end(sink: DuckSink) -> None:
    sink.write_batch(d.with_offsets(d.workflow_msgs("r")[:2]))
    (row,) = sink.query("SELECT status, phase, phase_seq, ended_at, events FROM workflow_runs")[1]
    assert row == ["running", "plan", 1, None, 2]


class CrashBeforeCommit(DuckSink):
    """Fails after every statement of the batch ran, before COMMIT."""

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with super().transaction() as con:
            yield con
            raise RuntimeError("power cut")


def test_rows_and_offsets_commit_together(tmp_path: Path) -> None:
    _, messages = corpus(9)
    path = tmp_path / "crash.duckdb"
    with CrashBeforeCommit(path, clock=d.clock) as s, pytest.raises(RuntimeError, match="power cut"):
        s.write_batch(messages)
    with open_sink(path, clock=d.clock) as s:
        assert all(rows == [] for rows in dump(s).values())
        assert s.stored_offsets() == {}
        s.write_batch(messages[:10])
        offsets = s.stored_offsets()
        assert {k: v.next_offset for k, v in offsets.items()} == {("t.tool-calls", 0): 10}


def test_decode_failures_become_dead_letters(sink: DuckSink) -> None:
    nan_cost = (b'{"id":"m1:r","session_id":"s1","input_tokens":0,"output_tokens":0,'
                b'"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"cost_usd":NaN}')
    bad = [("t.usage", b"k", b"{not json"), ("t.usage", b"k", b"[1, 2]"), ("t.usage", b"k", None),
           ("t.usage", b"k", nan_cost), ("t.usage", b"k", nan_cost.replace(b"NaN", b"Infinity")),
           ("t.tool-calls", b"k", b'{"id": "x"}'), ("t.somewhere", None, b"{}"),
           d.envelope_msg("hook-events", EventType.USAGE, "e1", "s1", {"x": 1})]
    messages = d.with_offsets(bad)
    result = sink.write_batch(messages)
    assert result.decode_errors == len(bad)
    sink.write_batch(messages)  # redelivery: same rows
    _, rows = sink.query('SELECT reason, topic, raw FROM dead_letters ORDER BY topic, "offset"')
    assert len(rows) == len(bad) and {r[0] for r in rows} == {"sink_decode"}
    assert sorted(bytes(r[2]) for r in rows) == sorted(b[2] or b"" for b in bad)
    assert sink.totals.decode_errors == 2 * len(bad)


def test_agent_dead_letters_keep_their_raw_bytes(sink: DuckSink) -> None:
    sink.write_batch(d.with_offsets([d.dead_letter_msg(b"\x00\xffbinary", offset=3)]))
    _, rows = sink.query('SELECT id, reason, raw, "offset" FROM dead_letters')
    assert rows == [["dl:abc", "not_json", b"\x00\xffbinary", 3]]


def test_dead_letters_of_one_id_keep_one_winner_whatever_the_order(tmp_path: Path) -> None:
    """Two versions of dead letter ``dl:abc`` seen at the same moment and position but with other
    raw bytes (and one without a key): in one batch or two, in either order, the same one is kept.
    The upsert used to compare only when and where they were seen and kept whichever came first."""
    first, second = d.dead_letter_msg(b"\x01aaa"), d.dead_letter_msg(b"\x00zzz")
    stored = set()
    for n, (a, b) in enumerate([(first, second), (second, first)]):
        for split in (False, True):
            with open_sink(tmp_path / f"dl{n}{split}.duckdb", clock=d.clock) as s:
                if split:
                    s.write_batch([("t.dlq", 0, 0, *a[1:])])
                    s.write_batch([("t.dlq", 0, 1, *b[1:])])
                else:
                    s.write_batch([("t.dlq", 0, 0, *a[1:]), ("t.dlq", 0, 1, *b[1:])])
                stored.add(tuple(tuple(r) for r in s.query("SELECT id, raw FROM dead_letters")[1]))
    assert stored == {(("dl:abc", b"\x00zzz"),)}


def test_a_value_duckdb_refuses_is_isolated(sink: DuckSink) -> None:
    # valid JSON and model (a workflow's totals are not bounded), beyond BIGINT; usage token counts are
    # bounded by the schema, so a usage record this large is a decode dead letter instead
    wf = d.workflow_msgs("run1")
    started, ended = wf[0], wf[-1]
    huge_end = d.envelope_msg("workflow-runs", EventType.WORKFLOW_ENDED, "run1:9", "run1",
                              {"run_id": "run1", "status": "succeeded", "ended_at": d.T0.isoformat(),
                               "input_tokens": 2**63 + 5})
    messages = d.with_offsets([started, *[d.usage_msg(id=f"ok:{i}") for i in range(5)], huge_end,
                               *[d.usage_msg(id=f"ok:{i}") for i in range(5, 9)], ended])
    result = sink.write_batch(messages)
    assert result.refused == 1
    assert sink.query("SELECT count(*) FROM usage")[1] == [[9]]
    assert sink.query("SELECT reason, \"offset\" FROM dead_letters")[1] == [["sink_write", 1]]
    assert sink.query("SELECT status, input_tokens FROM workflow_runs")[1] == [["succeeded", 100]]
    assert sink.stored_offsets()[("t.usage", 0)].next_offset == 9
    assert sink.stored_offsets()[("t.workflow-runs", 0)].next_offset == 3


def test_flush_markers_and_hook_payloads(sink: DuckSink) -> None:
    hook = d.hook_msg("h1", tool_response={"stdout": "ok", "n": [1, 2.5]}, hook_event_name="PostToolUse")
    sink.write_batch(d.with_offsets([hook, d.flush_msg("hook-events", "mk", 3), d.flush_msg("dlq", "mk", 3)]))
    _, rows = sink.query("SELECT marker, topic, \"partition\" FROM flush_markers ORDER BY topic")
    assert rows == [["mk", "t.dlq", 3], ["mk", "t.hook-events", 3]]
    _, rows = sink.query("SELECT hook_event_name, tool_use_id, payload->'tool_response'->>'stdout', "
                         "payload::VARCHAR FROM hook_events")
    assert rows[0][:3] == ["PostToolUse", "toolu_1", "ok"] and '"n":[1,2.5]' in rows[0][3]


def test_error_classification() -> None:
    assert classify_error(duckdb.TransactionException("conflict")) is ErrorKind.TRANSIENT
    assert classify_error(duckdb.IOException("disk")) is ErrorKind.TRANSIENT
    assert classify_error(duckdb.ConstraintException("dup")) is ErrorKind.TERMINAL
    assert classify_error(duckdb.ConversionException("bad")) is ErrorKind.TERMINAL
    assert classify_error(ValueError("x")) is ErrorKind.TERMINAL


def test_a_write_conflict_is_transient_and_leaves_nothing_behind(sink: DuckSink) -> None:
    sink.write_batch(d.with_offsets([d.usage_msg(id="a:1")]))
    other = sink.con.cursor()  # a second writer holding an uncommitted update of the same offsets row
    other.execute("BEGIN TRANSACTION")
    other.execute("UPDATE consumer_offsets SET next_offset = 99")
    batch = [("t.usage", 0, 1, b"s1", d.usage_msg(id="a:2")[2])]
    with pytest.raises(duckdb.TransactionException) as caught:
        sink.write_batch(batch)
    assert classify_error(caught.value) is ErrorKind.TRANSIENT
    assert sink.query("SELECT id FROM usage")[1] == [["a:1"]]
    other.execute("ROLLBACK")
    sink.write_batch(batch)  # the retry of the same batch succeeds
    assert sink.query("SELECT id FROM usage ORDER BY id")[1] == [["a:1"], ["a:2"]]
    assert sink.stored_offsets()[("t.usage", 0)].next_offset == 2


def test_out_of_memory_raises_the_limit_and_the_retry_succeeds(tmp_path: Path) -> None:
    """A DuckDB memory limit that fit a young database must not stall an old one: the failed write
    is transient, the limit doubles, and the retried batch goes in."""
    path = tmp_path / "db.duckdb"
    with open_sink(path, clock=d.clock) as big:  # a database whose indexes outgrow the limit below
        big.con.execute("CREATE TABLE filler (id VARCHAR PRIMARY KEY)")
        big.con.execute("INSERT INTO filler SELECT 'f' || md5(i::VARCHAR) FROM range(400000) r(i)")
    sink = open_sink(path, clock=d.clock, memory_limit="4MB")
    try:
        start = sink._memory_bytes
        assert start is not None
        hits = [d.tool_msg(d.tool_view(f"toolu_{i}", command=f"echo {i} " + "x" * 200)) for i in range(3000)]
        messages = d.with_offsets(hits)
        failures = 0
        while True:
            try:
                sink.write_batch(messages)
                break
            except duckdb.Error as exc:
                assert classify_error(exc) is ErrorKind.TRANSIENT, exc
                failures += 1
                assert failures < 12, "the limit never grew enough"
        assert failures >= 1 and sink._memory_bytes > start
        assert sink.query("SELECT count(*) FROM tool_calls")[1] == [[3000]]
    finally:
        sink.close()


def test_a_read_in_flight_when_the_limit_grows_runs_again_on_the_reopened_database(tmp_path: Path) -> None:
    """Growing the limit reopens the database, and DuckDB refuses to close a connection whose cursor is busy:
    a read running at that moment (a client polling for a flush marker) made the grow raise, which stopped
    the sink ("the sink is closed"). The reopen now interrupts the read, and the read runs again on the new
    connection and answers."""
    path = tmp_path / "db.duckdb"
    with open_sink(path, clock=d.clock) as big:
        big.con.execute("CREATE TABLE filler (id VARCHAR PRIMARY KEY)")
        big.con.execute("INSERT INTO filler SELECT 'f' || md5(i::VARCHAR) FROM range(400000) r(i)")
    sink = open_sink(path, clock=d.clock, memory_limit="4MB")
    answers: list[Any] = []

    def read() -> None:
        try:
            answers.append(sink.query("SELECT count(*) FROM range(300000000) t(i) WHERE i % 7 = 1")[1])
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            answers.append(exc)

    reader = threading.Thread(target=read)
    try:
        start = sink._memory_bytes
        assert start is not None
        reader.start()
        deadline = time.monotonic() + 10
        while not sink._reading and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink._reading, "the read never started"
        messages = d.with_offsets([d.tool_msg(d.tool_view(f"toolu_{i}", command=f"echo {i} " + "x" * 200))
                                   for i in range(3000)])
        for _ in range(12):
            try:
                sink.write_batch(messages)
                break
            except duckdb.Error as exc:
                assert classify_error(exc) is ErrorKind.TRANSIENT, exc
        reader.join(60)
        assert sink._memory_bytes is not None and sink._memory_bytes > start  # the limit grew: it reopened
        assert answers == [[[42857143]]]
        assert sink.query("SELECT count(*) FROM tool_calls")[1] == [[3000]]
    finally:
        reader.join(60)
        sink.close()


def test_optimism_backs_off_a_conflicting_table_and_comes_back() -> None:
    o = Optimism()
    assert o.plain() == frozenset(PLAIN)
    tried = []
    for _ in range(200):  # usage conflicts whenever it is tried plain
        plan = o.plain()
        if "usage" in plan:
            tried.append(True)
            o.conflicted("usage")
            plan = o.plain()
        else:
            tried.append(False)
        assert "hook_events" in plan
        o.written(plan, {"usage", "hook_events"})
    gaps = [i for i, t in enumerate(tried) if t]
    assert [b - a for a, b in zip(gaps, gaps[1:], strict=False)][:8] == [1, 2, 4, 8, 16, 32, 64, 64]
    o.written(o.plain(), set())  # batches without usage rows do not count
    while "usage" not in o.plain():
        o.written(o.plain(), {"usage"})
    o.written(o.plain(), {"usage"})  # a plain insert that succeeded: the next conflict starts over
    o.conflicted("usage")
    assert o.skip["usage"] == 1


def test_a_batch_meeting_a_stored_key_is_rolled_back_and_written_upserted(tmp_path: Path) -> None:
    first = d.with_offsets([d.hook_msg("h1"), d.usage_msg(id="u1:r", output_tokens=5)])
    second = [("t.hook-events", 0, 2, b"s1", d.hook_msg("h2")[2]),
              ("t.usage", 0, 2, b"s1", d.usage_msg(id="u1:r", output_tokens=50)[2]),  # stored already
              ("t.tool-calls", 0, 2, b"s1", d.tool_msg(d.tool_view("toolu_1"))[2])]
    third = [("t.usage", 0, 3, b"s1", d.usage_msg(id="u2:r")[2])]
    dumps = []
    for optimistic in (True, False):
        with open_sink(tmp_path / f"{optimistic}.duckdb", clock=d.clock) as s:
            if not optimistic:
                s.optimism.plain = frozenset  # type: ignore[method-assign]  # the reference: always upsert
            for batch in (first, second):
                s.write_batch(batch)
            if optimistic:  # usage met u1: the batch was written again with usage upserted (that counts)
                assert s.optimism.penalty == {"usage": 1} and s.optimism.skip == {"usage": 0}
            s.write_batch(third)
            dumps.append((dump(s), s.stored_offsets(), s.totals.records))
            if optimistic:  # usage plain again, and it went in: the penalty is forgotten
                assert s.optimism.penalty == {} and s.optimism.plain() == frozenset(PLAIN)
    assert dumps[0] == dumps[1]
    tables, offsets, records = dumps[0]
    assert [r[0] for r in tables["hook_events"]] == ["h1", "h2"] and records == 6
    assert sorted((r[0], r[5]) for r in tables["usage"]) == [("u1:r", 50), ("u2:r", 5)]
    assert {k: v.next_offset for k, v in offsets.items()} == {
        ("t.hook-events", 0): 3, ("t.usage", 0): 4, ("t.tool-calls", 0): 3}


PATTERN_TABLES = ("pattern_occurrences", "pattern_state", "pattern_sessions", "pattern_hours", "pattern_samples",
                  "pattern_session_spans", "operation_patterns", "session_sequences")


@pytest.mark.parametrize("seed", [11, 12])
def test_plain_inserts_store_what_upserts_store_patterns_included(tmp_path: Path, seed: int) -> None:
    """New tool calls put in by a plain insert carry their signature columns and skip the read-back:
    every table, the pattern tables too, ends as when every batch is upserted and read back."""
    views, messages = corpus(seed)
    more = [d.tool_msg(d.tool_view(f"toolu_n{i}", command=f"git status -s {i % 3}")) for i in range(30)]
    messages += [("t.tool-calls", 0, 1000 + i, k, v) for i, (_, k, v) in enumerate(more)]
    dumps = []
    for optimistic in (True, False):
        with open_sink(tmp_path / f"{seed}{optimistic}.duckdb", clock=d.clock) as s:
            if not optimistic:
                s.optimism.plain = frozenset  # type: ignore[method-assign]
            for i in range(0, len(messages), 9):
                s.write_batch(messages[i:i + 9])
            s.write_batch([("t.tool-calls", 0, 5000, None, d.flush_msg("tool-calls", "m9", 0)[2])])
            dumps.append(dump(s, DATA_TABLES + PATTERN_TABLES))
    assert dumps[0] == dumps[1]
    assert len(dumps[0]["pattern_occurrences"]) >= 30
    with duckdb.connect(str(tmp_path / f"{seed}True.duckdb"), read_only=True) as con:  # signature columns set
        assert con.execute("SELECT count(signature) FROM tool_calls").fetchone()[0] >= 30  # type: ignore[index]


def test_the_default_settings_bound_duckdb_to_128_mb(tmp_path: Path) -> None:
    """The limit bounds more than DuckDB's cache (docs/performance.md, section 6): the sink's default
    is 128 MB; a write that runs out still doubles it
    (test_out_of_memory_raises_the_limit_and_the_retry_succeeds)."""
    from outloop.streams.settings import Settings

    limit = Settings.from_env({}).db_memory
    with open_sink(tmp_path / "db.duckdb", clock=d.clock, memory_limit=limit) as sink:
        assert sink._memory_bytes is not None
        assert 120 * 2**20 < sink._memory_bytes <= 128 * 10**6  # DuckDB's MB are decimal


def test_the_periodic_refresh_runs_only_while_marks_may_be_waiting(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh transaction after every batch (REFRESH_S 0 here) while tool calls may have left dirty
    marks; none once a refresh with sequences cleared them and only hook events come in; a tool call owes
    one again, and so does usage (the context tables of its session). Patterns stay right throughout:
    the marks in the database are what decide."""
    import outloop.projections.kinds as kinds

    runs: list[float] = []  # the batches after which a refresh transaction ran (their refresh time)
    monkeypatch.setattr(kinds, "REFRESH_S", 0.0)
    monkeypatch.setattr(kinds, "SEQUENCE_REFRESH_S", 0.0)
    monkeypatch.setattr(kinds, "CONTEXT_REFRESH_S", 0.0)
    for kind in (kinds.Patterns, kinds.Context):
        def counted(self: Any, con: Any, now: float, deadline: float, real: Any = kind.refresh) -> bool:
            if not runs or runs[-1] != now:
                runs.append(now)
            return bool(real(self, con, now, deadline))
        monkeypatch.setattr(kind, "refresh", counted)
    usage = iter(range(100))

    def usage_batch() -> list[Any]:
        return d.with_offsets([d.usage_msg(id=f"m{next(usage)}:r")])

    def hook_batch() -> list[Any]:
        n = next(usage)
        return d.with_offsets([d.hook_msg(f"h{n}", session_id="s1", hook_event_name="Notification")])

    with open_sink(tmp_path / "s.duckdb", clock=d.clock) as sink:
        sink.write_batch(hook_batch())
        assert len(runs) == 1  # the first one looks for marks left from before
        sink.write_batch(hook_batch())
        sink.write_batch(hook_batch())
        assert len(runs) == 1
        sink.write_batch(d.with_offsets([d.tool_msg(d.tool_view("toolu_1", command="ls", status="ok"))]))
        assert len(runs) == 2
        # the patterns' and context's marks (the quota's own, of the usage, wait for its own refresh)
        assert sink.query("SELECT count(*) FROM pattern_dirty WHERE kind <> 'quota'")[1] == [[0]]
        assert sink.query("SELECT sum(n) FROM pattern_state")[1] == [[1]]
        sink.write_batch(hook_batch())
        assert len(runs) == 2
        sink.write_batch(usage_batch())
        assert len(runs) == 3
        assert sink.query("SELECT count(*) FROM pattern_dirty WHERE kind <> 'quota'")[1] == [[0]]
        assert sink.query("SELECT api_calls FROM context_efficiency")[1] == [[1]]


def test_an_out_of_memory_hidden_behind_an_aborted_transaction_still_grows_the_limit(tmp_path: Path) -> None:
    """A projection's statement ran out of memory inside the batch's transaction; the next statement there
    (a view's unregister) raised "transaction is aborted", which replaced it. The writer took that for a
    transient error and retried at the same limit for ever (a replay stalled at 43/48 markers): the
    out-of-memory in the chain must be recognised, and the shared unregister keeps it in front."""
    from outloop.sinks.upsert import unregister_quietly
    from outloop.sinks.writer import _out_of_memory

    con = duckdb.connect(str(tmp_path / "oom.duckdb"))
    con.execute("SET memory_limit = '8MB'")
    con.execute("CREATE TABLE t AS SELECT range AS i, repeat('x', 200) AS s FROM range(300000)")
    con.execute("BEGIN TRANSACTION")
    con.register("v", pa.table({"s": [1]}))
    with pytest.raises(duckdb.Error) as caught:
        try:
            con.execute("SELECT s, count(*) FROM t GROUP BY s, i ORDER BY i DESC").fetchall()
        finally:
            con.unregister("v")  # the former finally: raises "transaction is aborted" over the real error
    assert "aborted" in str(caught.value).lower() and _out_of_memory(caught.value)
    con.execute("ROLLBACK")
    con.execute("BEGIN TRANSACTION")
    con.register("v", pa.table({"s": [1]}))
    with pytest.raises(duckdb.Error) as kept:
        try:
            con.execute("SELECT s, count(*) FROM t GROUP BY s, i ORDER BY i DESC").fetchall()
        finally:
            unregister_quietly(con, "v")
    assert isinstance(kept.value, duckdb.OutOfMemoryException) and _out_of_memory(kept.value)
    assert not _out_of_memory(duckdb.TransactionException("Current transaction is aborted (please ROLLBACK)"))
    con.close()


def test_a_read_that_runs_out_of_memory_runs_again_a_bounded_number_of_times(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Reads share DuckDB's memory with the writer, so running out of it can be the write's doing and a read
    runs again after a pause; one that needs more than the whole limit still fails, after READ_RETRIES runs
    and within a bounded query's time limit."""
    from outloop.sinks.writer import READ_RETRIES

    sink = open_sink(tmp_path / "db.duckdb", clock=d.clock, memory_limit="16MB")
    try:
        with caplog.at_level("INFO", logger="outloop.sink"), pytest.raises(duckdb.OutOfMemoryException):
            sink.query("SELECT list(i) FROM range(3000000) t(i)")
        assert sum("a read runs again" in r.getMessage() for r in caplog.records) == READ_RETRIES
        caplog.clear()
        started = time.monotonic()
        with caplog.at_level("INFO", logger="outloop.sink"), pytest.raises(duckdb.OutOfMemoryException):
            sink.query_bounded("SELECT list(i) FROM range(3000000) t(i)", None, 10, timeout=0.5)
        assert time.monotonic() - started < 2.0
        assert sum("a read runs again" in r.getMessage() for r in caplog.records) <= 1
        assert sink.query("SELECT 1")[1] == [[1]]
    finally:
        sink.close()
