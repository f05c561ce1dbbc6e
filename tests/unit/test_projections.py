"""The projection interface (``sinks.projection``): the writer runs the projections it is handed - marks in
the ingest transaction, a flush at a flush marker, refreshes when due, a rebuild when the version changes -
and knows nothing of what they derive."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import duckdb
import pytest

from outloop.sinks.decode import Folded
from outloop.sinks.projection import Projection, Writer
from outloop.sinks.writer import DuckSink
from tests.unit import sinkdata as d


class Counting(Projection):
    """Counts tool calls per session into a table of its own (created at its rebuild)."""

    name = "counting"

    def __init__(self, version: str = "1", fail: bool = False, essential: bool = True) -> None:
        self._version, self.fail, self.essential = version, fail, essential
        self.calls: list[str] = []
        self.owed = False

    @property
    def version(self) -> str:
        return self._version

    def rebuild(self, writer: Writer) -> None:
        self.calls.append("rebuild")
        with writer.transaction() as con:
            con.execute("CREATE OR REPLACE TABLE calls_per_session AS SELECT session_id, count(*) AS n "
                        "FROM tool_calls GROUP BY session_id")

    def mark(self, con: duckdb.DuckDBPyConnection, batch: Folded) -> None:
        self.calls.append("mark")
        self.owed = self.owed or bool(batch.rows["tool_calls"])

    def flush(self, con: duckdb.DuckDBPyConnection, now: float) -> bool:
        self.calls.append("flush")
        return self.refresh(con, now, now)

    def due(self, now: float) -> bool:
        return self.owed

    def refresh(self, con: duckdb.DuckDBPyConnection, now: float, deadline: float) -> bool:
        self.calls.append("refresh")
        if self.fail:
            raise RuntimeError("refresh failed")
        con.execute("DELETE FROM calls_per_session")
        con.execute("INSERT INTO calls_per_session SELECT session_id, count(*) FROM tool_calls GROUP BY ALL")
        self.owed = False
        return True


def _calls(n: int, session: str = "s1") -> list[Any]:
    return [d.tool_msg(d.tool_view(f"toolu_{session}_{i}", session_id=session, command="ls", status="ok"))
            for i in range(n)]


def test_the_writer_runs_what_it_is_handed_and_rebuilds_on_a_version_change(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    with DuckSink(db, clock=d.clock) as bare:  # storage alone: facts, no derived rows
        bare.write_batch(d.with_offsets(_calls(2)))
        assert bare.query("SELECT count(*) FROM operation_patterns")[1] == [[0]]
    one = Counting()
    with DuckSink(db, clock=d.clock, projections=[one]) as sink:  # never built: rebuilt at open
        assert one.calls == ["rebuild"]
        assert sink.query("SELECT session_id, n FROM calls_per_session")[1] == [["s1", 2]]
        sink.write_batch(d.with_offsets(_calls(3, "s2")))
        assert one.calls[1:] == ["mark", "refresh"]
        sink.write_batch(d.with_offsets([d.hook_msg("h1", session_id="s1", hook_event_name="Stop")]))
        assert one.calls[3:] == ["mark"]  # not due: nothing refreshed
        sink.write_batch(d.with_offsets([*_calls(4, "s3"), d.flush_msg("t.tool-calls", "m1", 0)]))
        assert one.calls[4:] == ["mark", "flush", "refresh"]
        assert sorted(sink.query("SELECT session_id, n FROM calls_per_session")[1]) == [
            ["s1", 2], ["s2", 3], ["s3", 4]]
        assert sink.query("SELECT * FROM projection_versions")[1] == [["counting", "1"]]
    same = Counting()
    DuckSink(db, clock=d.clock, projections=[same]).close()
    assert same.calls == []  # stored at its version: no rebuild
    newer = Counting("2")
    DuckSink(db, clock=d.clock, projections=[newer]).close()
    assert newer.calls == ["rebuild"]


def test_a_failed_refresh_fails_the_write_unless_the_projection_fails_open(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    with DuckSink(tmp_path / "e.duckdb", clock=d.clock, projections=[Counting(fail=True)]) as sink, \
            pytest.raises(RuntimeError, match="refresh failed"):
        sink.write_batch(d.with_offsets(_calls(1)))
    lenient = Counting(fail=True, essential=False)
    with caplog.at_level(logging.ERROR, logger="outloop.sink"), \
            DuckSink(tmp_path / "o.duckdb", clock=d.clock, projections=[lenient]) as sink:
        result = sink.write_batch(d.with_offsets(_calls(1)))
        assert result.rows == {"tool_calls": 1}
        assert "counting refresh failed" in caplog.text


def test_two_projections_may_not_enrich_one_table_nor_answer_one_request(tmp_path: Path) -> None:
    a, b = Counting(), Counting()
    a.enrich = b.enrich = {"tool_calls": lambda t: t}
    with pytest.raises(ValueError, match="enrich tool_calls"):
        DuckSink(tmp_path / "x.duckdb", projections=[a, b])
    c, e = Counting(), Counting()
    c.requests = e.requests = {"budget": lambda con, now: None}
    with pytest.raises(ValueError, match="request 'budget'"):
        DuckSink(tmp_path / "y.duckdb", projections=[c, e])
