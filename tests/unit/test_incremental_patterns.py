"""Incremental pattern maintenance equals a from-scratch computation, on real DuckDB files.

Random batches of tool-call views - redelivered batches, partial views completed later (started ->
ok/error), views without a tool name or a time, commands that change between views of one call,
``syn:<call_key>`` rows merged later into the real row carrying their call key, times on and next to
the window boundaries - go through :class:`DuckSink`. Afterwards every state table must equal its
rebuild from the occurrences, the occurrences must equal those derived from ``tool_calls``, and every
``operation_patterns`` row must equal (byte for byte) the row the from-scratch ``AGGREGATE`` gives.
Replaying every batch once more must change no row of any table.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import outloop.projections.patterns
from outloop.agents.patterns import ConfidenceWeights, StatusRules
from outloop.projections import open_sink
from outloop.projections.patterns import (
    _TIME_EXTREMES,
    AGGREGATE,
    CALL_COLUMNS,
    FOLDS,
    PATTERN_COLUMNS,
    _occurrence,
    pattern_aggregates,
    pattern_row,
    rebuild_state,
    run_of,
)
from outloop.sinks.schema import SCHEMA_VERSION, migrate
from outloop.sinks.writer import DuckSink
from tests.unit import sinkdata as d

# the last one shares the signature of "git status" (vcs:git:status) with another side-effect class
COMMANDS = ["pytest -q tests/unit", "pytest -q tests/unit -x", "npm run build", "git status", "rm -rf build",
            "rm -f tmp1 && git status"]
SESSIONS = ["sa", "sb", "sc"]
H = timedelta(hours=1)
US = timedelta(microseconds=1)
W0 = d.T0 + timedelta(minutes=17, seconds=3)  # the watermark (the anchor call), off the hour
OFF = timedelta(minutes=17, seconds=3)


def _near(window: timedelta) -> list[timedelta]:
    """Ages on and next to a window's boundary B = W0 - window, and to both ends of B's UTC hour."""
    return [window - US, window, window + US, window + OFF - US, window + OFF, window - (H - OFF),
            window - (H - OFF) - US]


AGES = sorted({timedelta(0), 30 * timedelta(minutes=1), *_near(H), 23 * H, *_near(24 * H), *_near(7 * 24 * H),
               *_near(30 * 24 * H), 40 * 24 * H})
TABLES = ("tool_calls", "pattern_occurrences", "operation_patterns", "session_sequences", "pattern_dirty",
          *(f.table for f in FOLDS))
ANCHOR = d.tool_view("toolu_anchor", session_id="sa", tool_input={"command": "ls"}, command="ls", status="ok",
                     started_at=W0, ended_at=W0 + timedelta(seconds=1), output_tokens_est=3)


@st.composite
def view(draw: st.DrawFn, calls: int = 10) -> dict[str, Any]:
    i = draw(st.integers(0, calls - 1))
    key = f"k{i}"
    # calls 0-3 are hook calls without a tool_use_id (syn rows) that a real row may join later
    syn = i < 4 and draw(st.booleans())
    ident = f"syn:{key}" if syn else f"toolu_{i}"
    age = draw(st.sampled_from([*AGES, None]))
    start = None if age is None else W0 - age
    status = draw(st.sampled_from(["started", "ok", "error"]))
    ms = draw(st.sampled_from([None, 0.0001, 12.5, 1000.0, 2500.25]))
    cmd = COMMANDS[draw(st.sampled_from([i % len(COMMANDS), i % len(COMMANDS), (i + 1) % len(COMMANDS)]))]
    named = draw(st.integers(0, 9)) > 0
    return d.tool_view(
        ident, call_key=key if i < 4 else None, session_id=draw(st.sampled_from([SESSIONS[i % 3]] * 3 + SESSIONS)),
        tool_name="Bash" if named else None, tool_input={"command": cmd} if named else None,
        command=cmd if named else None, status=status, started_at=start,
        ended_at=None if start is None or ms is None or status == "started" else start + timedelta(milliseconds=ms),
        output_tokens_est=draw(st.sampled_from([None, 0, 7, 1000])) if status != "started" else None,
        source=draw(st.sampled_from(["hook", "transcript"])), **run_time(draw, ms, status))


def run_time(draw: st.DrawFn, ms: float | None, status: str) -> dict[str, Any]:
    """What a view may bring to the run time: hook times (a Pre or a Post, the Post perhaps after a
    permission dialog), or the tool's own figure; views of one call may disagree."""
    kind = draw(st.sampled_from([None, "pre", "post", "asked", "reported"]))
    at = W0 - draw(st.sampled_from(AGES[:4]))
    if kind == "pre":
        return {"hook_pre_at": at}
    if kind in ("post", "asked") and status != "started":
        return {"hook_post_at": at + timedelta(milliseconds=ms or 0.5), "permission_asked": kind == "asked" or None}
    if kind == "reported" and status != "started":
        return {"reported_ms": draw(st.sampled_from([0.0, 3.5, 999.5]))}
    return {}


batches = st.lists(st.tuples(st.lists(view(), min_size=1, max_size=6), st.booleans(), st.integers(0, 3)),
                   min_size=1, max_size=7)


def write(sink: DuckSink, views: list[dict[str, Any]], flush: bool, base: int) -> None:
    items = [d.tool_msg(v) for v in views]
    if flush:
        items.append(d.flush_msg("tool-calls", f"m{base}", 0))
    sink.write_batch([(t, 0, base + n, k, v) for n, (t, k, v) in enumerate(items)])


def dump(con: duckdb.DuckDBPyConnection, tables: tuple[str, ...] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def rows_from_scratch(con: duckdb.DuckDBPyConnection, where: str = "true") -> list[dict[str, Any]]:
    w, r = ConfidenceWeights(), StatusRules()
    return sorted((pattern_row(a, w, r) for a in con.execute(AGGREGATE.format(where=where)).fetchall()),
                  key=lambda x: x["signature"])


def check_against_scratch(con: duckdb.DuckDBPyConnection) -> None:
    # occurrences: one per tool_calls row with a tool name, derived from that row
    columns = CALL_COLUMNS.replace("timezone('UTC', coalesce(started_at, ended_at))", "coalesce(started_at, ended_at)")
    calls = con.execute(f"SELECT {columns} FROM tool_calls WHERE tool_name IS NOT NULL").fetchall()  # times aware
    assert all((c[9], c[14]) == run_of(c) for c in calls)  # the stored run times are the derived ones
    assert dump(con, ("pattern_occurrences",))["pattern_occurrences"] == sorted(map(_occurrence, calls), key=repr)
    # state tables: equal to their rebuild from the occurrences
    state = dump(con, tuple(f.table for f in FOLDS))
    con.execute("BEGIN TRANSACTION")
    rebuild_state(con)
    assert dump(con, tuple(f.table for f in FOLDS)) == state
    con.execute("ROLLBACK")
    # counts equal a direct count over tool_calls
    direct = dict(con.execute("SELECT signature, count(*) FROM tool_calls WHERE tool_name IS NOT NULL "
                              "GROUP BY signature").fetchall())
    assert dict(con.execute("SELECT signature, occurrence_count FROM operation_patterns").fetchall()) == direct
    # operation_patterns after the full refresh: byte-identical to the from-scratch rows
    expected = rows_from_scratch(con)
    con.execute("CREATE OR REPLACE TEMP TABLE expected AS SELECT * FROM operation_patterns LIMIT 0")
    if expected:
        con.register("exp_rows", pa.Table.from_pylist(expected))
        cols = ", ".join(PATTERN_COLUMNS)
        con.execute(f"INSERT INTO expected ({cols}) SELECT {cols} FROM exp_rows")
        con.unregister("exp_rows")
    assert dump(con, ("operation_patterns",))["operation_patterns"] == dump(con, ("expected",))["expected"]
    # the incremental path for a subset of signatures equals the from-scratch aggregate of that subset
    subset = sorted(direct)[::2]
    if subset:
        w, r = ConfidenceWeights(), StatusRules()
        got = sorted((pattern_row(a, w, r) for a in pattern_aggregates(con, set(subset))),
                     key=lambda x: x["signature"])
        quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in subset)
        assert got == rows_from_scratch(con, f"signature IN ({quoted})")


@pytest.mark.parametrize("lookup", ["index", "scan"])
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=batches)
def test_incremental_state_equals_from_scratch(plan: list[tuple[list[dict[str, Any]], bool, int]], lookup: str,
                                               monkeypatch: Any) -> None:
    """``lookup``: stored rows read back by primary-key lookups (``IN`` lists), or by a semi-join
    scan (what a small table gets): both ways give the same state."""
    monkeypatch.setattr(outloop.projections.patterns, "SCAN_ROWS_PER_KEY", 0 if lookup == "index" else 10**12)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "p.duckdb"
        written: list[tuple[list[dict[str, Any]], bool]] = [([ANCHOR], False)]
        with open_sink(db, clock=d.clock) as sink:
            write(sink, [ANCHOR], False, 0)
            for views, flush, repeat in plan:
                for _ in range(1 + (repeat == 3)):  # some batches are redelivered at once
                    write(sink, views, flush, 1000 * len(written))
                    written.append((views, flush))
            write(sink, [], True, 10**6)
            check_against_scratch(sink.con)
            before = dump(sink.con)
            for n, (views, flush) in enumerate(written):  # replay everything: no row of any table changes
                write(sink, views, flush, 1000 * n)
            write(sink, [], True, 10**6)
            assert dump(sink.con) == before


def test_migration_backfills_an_existing_database(tmp_path: Path) -> None:
    """A version-3 database (occurrences keyed by signature and call) upgrades in place: the state
    tables are backfilled, and the sink goes on from them."""
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    assert migrate(con, upto=3) == 3
    con.close()
    views = [d.tool_view(f"toolu_{i}", session_id=SESSIONS[i % 3], tool_input={"command": COMMANDS[i % 4]},
                         command=COMMANDS[i % 4], status="ok", started_at=W0 - AGES[i % len(AGES)],
                         ended_at=W0 - AGES[i % len(AGES)] + timedelta(seconds=i), output_tokens_est=i)
             for i in range(40)]
    # the old code path: fill a v3 database through the v3 sink's tables (occurrences by hand)
    con = duckdb.connect(str(db))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("INSERT INTO tool_calls (id, tool_use_id, session_id, tool_name, tool_input, command, status, "
                "started_at, ended_at, output_tokens_est, source) SELECT * FROM (VALUES " + ", ".join(
                    "(?, ?, ?, 'Bash', ?, ?, 'ok', ?, ?, ?, 'hook')" for _ in views) + ")",
                [x for v in views for x in (v["id"], v["id"], v["session_id"], f'{{"command": "{v["command"]}"}}',
                                            v["command"], v["started_at"], v["ended_at"], v["output_tokens_est"])])
    calls = con.execute("SELECT id, session_id, tool_name, tool_input, command, file_path, status, "
                        "coalesce(started_at, ended_at), output_tokens_est, duration_ms FROM tool_calls").fetchall()
    for call in calls:
        occ = list(_occurrence((*call, *(None,) * 11)))
        occ[10] = call[9]  # version 3 kept the wall-clock duration (migration 11 takes it out)
        con.execute(f"INSERT INTO pattern_occurrences VALUES ({', '.join('?' * len(occ))})", occ)
    assert migrate(con) == SCHEMA_VERSION  # through every later migration: their backfills equal a rebuild
    state = dump(con, tuple(f.table for f in FOLDS))
    assert len(state["pattern_state"]) == 3 and sum(r[5] for r in state["pattern_state"]) == 40
    con.execute("BEGIN TRANSACTION")
    rebuild_state(con)
    assert dump(con, tuple(f.table for f in FOLDS)) == state
    con.execute("ROLLBACK")
    con.close()
    with open_sink(db, clock=d.clock) as sink:  # the sink continues from the backfilled state
        write(sink, [views[0], d.tool_view("toolu_new", session_id="sz", tool_input={"command": "git status"},
                                           command="git status", status="ok", started_at=d.T0)], True, 0)
        check_against_scratch(sink.con)


def test_the_time_extremes_read_back_naive_are_every_timestamp_extreme_of_the_state_tables() -> None:
    """Extremes read back as naive UTC (``_TIME_EXTREMES``) must be all and only the state tables'
    TIMESTAMPTZ extremes: an aware one compared with a naive one is never equal."""
    con = duckdb.connect()
    migrate(con)
    timed = {(t, c) for t, c in con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                            "WHERE data_type = 'TIMESTAMP WITH TIME ZONE'").fetchall()}
    extremes = {(f.table, c) for f in FOLDS for c, _, _ in f.extremes}
    assert {c for t, c in extremes if (t, c) in timed} == _TIME_EXTREMES


HEREDOC = "cat > /tmp/run.sh <<'EOF'\nset -e\npytest -q  # trimmed EOF"  # unterminated: version 2 reads it as bash does


def test_a_signature_rule_change_recomputes_stored_signatures_chunk_by_chunk(tmp_path: Path, monkeypatch: Any,
                                                                            caplog: Any) -> None:
    """A database written under an older rule version (here: unterminated here-documents signed
    ``other:cat:*``) is brought up to date when the sink opens: every signature, occurrence and state
    row equals a from-scratch computation. It goes a chunk per transaction; a crash midway keeps the
    chunks done and the next start finishes the rest."""
    import dataclasses
    import logging

    import outloop.projections.kinds as writer  # the patterns projection: its rebuild
    import outloop.projections.patterns as patterns
    from outloop.agents.signatures import SIGNATURE_VERSION, Signature

    db = tmp_path / "rules.duckdb"
    commands = [*COMMANDS[:5], HEREDOC]
    views = [d.tool_view(f"toolu_{i}", session_id=SESSIONS[i % 3], tool_input={"command": commands[i % 6]},
                         command=commands[i % 6], status="ok", started_at=W0 - AGES[i % len(AGES)],
                         ended_at=W0 - AGES[i % len(AGES)] + timedelta(seconds=i), output_tokens_est=i)
             for i in range(40)]
    current = patterns._signature

    def former(tool_name: str, tool_input: str | None) -> Signature:
        sig = dataclasses.replace(current(tool_name, tool_input), version=SIGNATURE_VERSION - 1)
        if tool_input and "<<" in tool_input:
            sig = dataclasses.replace(sig, signature="other:cat:*", category="other", tool="cat", target="*")
        return sig

    with monkeypatch.context() as m:  # the database as the former rules left it
        m.setattr(patterns, "_signature", former)
        with open_sink(db, clock=d.clock) as sink:
            write(sink, views, True, 0)
            former_rows = sink.con.execute("SELECT count(*) FROM tool_calls WHERE signature = 'other:cat:*'")
            assert former_rows.fetchone() == (6,)
    monkeypatch.setattr(writer, "RECOMPUTE_CHUNK", 7)

    real_materialize, chunks = writer.materialize, []

    def crashing(con: duckdb.DuckDBPyConnection, ids: Any, keys: Any, fresh: Any = None) -> None:
        chunks.append(len(ids))
        if len(chunks) == 3:
            raise RuntimeError("killed")
        real_materialize(con, ids, keys, fresh)

    monkeypatch.setattr(writer, "materialize", crashing)
    with pytest.raises(RuntimeError, match="^killed$"):
        open_sink(db, clock=d.clock)
    assert chunks == [7, 7, 7]
    con = duckdb.connect(str(db))
    assert con.execute("SELECT count(*) FROM tool_calls WHERE signature_version = ?",
                       [SIGNATURE_VERSION]).fetchone() == (14,)  # the two chunks committed before the crash
    con.close()
    monkeypatch.setattr(writer, "materialize", real_materialize)
    with caplog.at_level(logging.INFO, logger="outloop.sink"), open_sink(db, clock=d.clock) as sink:
        assert "recomputing the signatures of 26 stored tool calls" in caplog.text
        assert sink.con.execute("SELECT count(*) FROM tool_calls WHERE signature_version <> ?",
                                [SIGNATURE_VERSION]).fetchone() == (0,)
        assert sink.con.execute("SELECT DISTINCT signature FROM tool_calls WHERE command = ?",
                                [HEREDOC]).fetchall() == [("edit:cat:<tmp>/run.sh",)]
        assert not sink.con.execute("SELECT * FROM pattern_dirty").fetchall()  # refreshed in full
        check_against_scratch(sink.con)
