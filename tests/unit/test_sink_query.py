"""The sink's read side (read-only statements, concurrent reads, read-only file access), its
migrations, and a writer-versus-bare-Arrow throughput measurement (printed, not asserted)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from outloop.projections import open_sink
from outloop.sinks.decode import SCHEMAS, fold
from outloop.sinks.query import QueryRejected, check_readonly, open_readonly, run_readonly
from outloop.sinks.schema import MIGRATIONS
from outloop.sinks.writer import DuckSink
from tests.unit import sinkdata as d


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[DuckSink]:
    with open_sink(tmp_path / "sink.duckdb", clock=d.clock) as s:
        s.write_batch(d.with_offsets([d.usage_msg(id=f"m{i}:r") for i in range(3)]))
        yield s


REFUSED = [
    "INSERT INTO usage (id) VALUES ('x')",
    "UPDATE usage SET input_tokens = 0",
    "DELETE FROM usage",
    "CREATE TABLE evil (a INTEGER)",
    "CREATE OR REPLACE VIEW v_session_summary AS SELECT 1",
    "DROP TABLE usage",
    "ALTER TABLE usage ADD COLUMN x INTEGER",
    "ATTACH 'other.duckdb' AS other",
    "DETACH other",
    "COPY usage TO 'out.csv'",
    "EXPORT DATABASE 'dump'",
    "INSTALL httpfs",
    "SET threads = 1",
    "PRAGMA enable_profiling",
    "CALL pragma_version()",
    "CHECKPOINT",
    "BEGIN TRANSACTION",
    "SELECT 1; DELETE FROM usage",
    "SELECT 1; SELECT 2",
    "EXPLAIN ANALYZE DELETE FROM usage",
    "",
    "SELEC nothing",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_writes_and_multi_statements_are_refused(sink: DuckSink, sql: str) -> None:
    with pytest.raises(QueryRejected):
        sink.query(sql)
    assert sink.query("SELECT count(*) FROM usage")[1] == [[3]]


@pytest.mark.parametrize("sql", [
    "SELECT id FROM usage ORDER BY id",
    "WITH u AS (SELECT * FROM usage) SELECT count(*) FROM u",
    "FROM usage SELECT id",
    "SHOW TABLES",
    "DESCRIBE tool_calls",
    "SUMMARIZE usage",
    "EXPLAIN SELECT * FROM usage",
    "EXPLAIN ANALYZE SELECT * FROM usage",
    "SELECT * FROM v_session_summary",
    "SELECT * FROM v_daily_usage",
    "SELECT * FROM v_tool_commands",
])
def test_reads_are_accepted(sink: DuckSink, sql: str) -> None:
    columns, rows = sink.query(sql)
    assert columns and isinstance(rows, list)


def test_parameters_and_statement_parsing(sink: DuckSink) -> None:
    assert sink.query("SELECT id FROM usage WHERE id = ?", ["m1:r"])[1] == [["m1:r"]]
    assert check_readonly("  SELECT 1 ; ").type == duckdb.StatementType.SELECT


def test_reads_from_other_threads_while_writing(sink: DuckSink) -> None:
    errors: list[BaseException] = []
    counts: list[int] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                counts.append(sink.query("SELECT count(*) FROM usage")[1][0][0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for batch in range(30):
        sink.write_batch([("t.usage", 1, batch * 50 + i, b"s", d.usage_msg(id=f"w{batch}:{i}")[2])
                          for i in range(50)])
    done.set()
    for t in threads:
        t.join()
    assert not errors
    assert counts and min(counts) >= 3 and max(counts) <= 3 + 30 * 50
    assert sink.query("SELECT count(*) FROM usage")[1] == [[3 + 30 * 50]]


def test_readonly_file_access_and_migrations(tmp_path: Path) -> None:
    path = tmp_path / "ro.duckdb"
    with open_sink(path, clock=d.clock) as s:
        s.write_batch(d.with_offsets([d.usage_msg()]))
    with open_sink(path, clock=d.clock) as s:  # reopening applies nothing twice
        assert s.query("SELECT version FROM schema_version ORDER BY version")[1] == [
            [v] for v, _, _ in MIGRATIONS]  # each once, in order (numbers may skip while branches merge)
    con = open_readonly(path)
    try:
        assert run_readonly(con, "SELECT count(*) FROM usage")[1] == [[1]]
        with pytest.raises(QueryRejected):
            run_readonly(con, "DELETE FROM usage")
        with pytest.raises(duckdb.Error):  # and DuckDB itself refuses writes on this connection
            con.execute("DELETE FROM usage")
    finally:
        con.close()


def test_writer_throughput_against_bare_arrow_insert(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """20k tool calls in 2k-row batches, median of 3 runs; prints rows/s, asserts nothing on time.
    References: the same Arrow tables bulk-inserted into a table without a key, and with the key."""
    views = [d.tool_view(f"toolu_{i:06d}", session_id=f"s{i % 50}", tool_input={"command": f"pytest -k t{i}"},
                         command=f"pytest -k t{i}", status="ok", started_at=d.T0, ended_at=d.T0,
                         output_bytes=i, output_tokens_est=i // 4) for i in range(20_000)]
    messages = d.with_offsets([d.tool_msg(v) for v in views])
    size = 2000
    times: dict[str, list[float]] = {"writer": [], "fold": [], "arrow": [], "arrow_pk": []}
    for run in range(3):
        with open_sink(tmp_path / f"w{run}.duckdb", clock=d.clock) as s:
            t = time.perf_counter()
            for i in range(0, len(messages), size):
                s.write_batch(messages[i:i + size])
            times["writer"].append(time.perf_counter() - t)
            assert s.query("SELECT count(*) FROM tool_calls")[1] == [[len(views)]]
        t = time.perf_counter()
        tables = [fold(messages[i:i + size], d.clock()).arrow("tool_calls")
                  for i in range(0, len(messages), size)]
        times["fold"].append(time.perf_counter() - t)
        for name, key in (("arrow", ""), ("arrow_pk", " PRIMARY KEY")):
            con = duckdb.connect(str(tmp_path / f"{name}{run}.duckdb"))
            columns = ", ".join(f'"{f.name}" {_sql_type(f.type)}{key if f.name == "id" else ""}'
                                for f in SCHEMAS["tool_calls"])
            con.execute(f"CREATE TABLE tool_calls ({columns})")
            t = time.perf_counter()
            for table in tables:
                con.register("batch", table)
                con.execute("INSERT INTO tool_calls SELECT * FROM batch")
                con.unregister("batch")
            times[name].append(time.perf_counter() - t)
            con.close()
    rate = {k: len(messages) / statistics.median(v) for k, v in times.items()}
    with capsys.disabled():
        print(f"\nsink writer (decode, fold, upsert, offsets, commit): {rate['writer']:,.0f} rows/s; "
              f"bare Arrow insert: {rate['arrow']:,.0f} rows/s "
              f"(writer/arrow {rate['writer'] / rate['arrow']:.2f}); "
              f"bare Arrow into a keyed table: {rate['arrow_pk']:,.0f} rows/s; decode+fold alone: "
              f"{rate['fold']:,.0f} rows/s (batch {size}, median of 3)")


def _sql_type(t: pa.DataType) -> str:
    return {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}.get(t, "TIMESTAMPTZ")
