"""The read side: one read-only statement at a time, checked with DuckDB's own parser.

Accepted: exactly one SELECT-family statement (SELECT, WITH, FROM-first, VALUES, SHOW, DESCRIBE,
SUMMARIZE) or EXPLAIN [ANALYZE] of one. Everything else - INSERT, UPDATE, DELETE, CREATE, DROP,
ALTER, ATTACH, DETACH, COPY, EXPORT, INSTALL/LOAD, SET, PRAGMA, CALL, transactions, several
statements - is rejected before it runs. (DuckDB's ``query()`` table function itself only runs a
single SELECT.) While the worker runs, reads go through :meth:`sinks.writer.DuckSink.query`; when no
worker holds the file, :func:`open_readonly` opens it in DuckDB's read-only mode.

Queries through the worker are bounded (:func:`run_bounded`): a timer interrupts the statement past
its time limit (a client that gave up must not leave the sink busy on both cores for minutes), and
at most ``max_rows`` rows come back, with a flag saying the result was cut.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from outloop.sinks.errors import QueryRejected, QueryTimeout

__all__ = ["Bounded", "QueryRejected", "QueryTimeout", "check_readonly", "confine", "open_readonly", "run_bounded",
           "run_readonly", "use_utc"]

READ_TYPES = {duckdb.StatementType.SELECT}


def _words(sql: str) -> list[tuple[int, str]]:
    """(offset, lower-cased token text) of each token, from DuckDB's tokenizer."""
    tokens = duckdb.tokenize(sql)
    out = []
    for i, (start, _kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
        out.append((start, sql[start:end].strip().lower()))
    return out


def check_readonly(sql: str) -> duckdb.Statement:
    """The parsed statement when ``sql`` is one read-only statement, else :class:`QueryRejected`."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRejected("empty query")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRejected(f"does not parse: {exc}") from None
    if len(statements) != 1:
        raise QueryRejected(f"exactly one statement allowed, got {len(statements)}")
    statement = statements[0]
    if statement.type in READ_TYPES:
        return statement
    if statement.type == duckdb.StatementType.EXPLAIN:
        words = _words(statement.query)
        skip = 2 if len(words) > 1 and words[1][1] == "analyze" else 1
        if len(words) <= skip:
            raise QueryRejected("EXPLAIN of nothing")
        inner = statement.query[words[skip][0]:]
        try:
            inner_statements = duckdb.extract_statements(inner)
        except duckdb.Error:
            raise QueryRejected("EXPLAIN options are not supported: EXPLAIN [ANALYZE] SELECT ...") from None
        if len(inner_statements) == 1 and inner_statements[0].type in READ_TYPES:
            return statement
        raise QueryRejected("EXPLAIN is allowed only of a SELECT")
    raise QueryRejected(f"read-only queries only; {statement.type.name} statements are refused")


def run_readonly(con: duckdb.DuckDBPyConnection, sql: str,
                 params: Sequence[Any] | dict[str, Any] | None = None,
                 max_rows: int | None = None) -> tuple[list[str], list[list[Any]]]:
    """Run one checked read-only statement on ``con``: (column names, rows)."""
    statement = check_readonly(sql)
    result = con.execute(statement.query, params) if params else con.execute(statement.query)
    columns = [d[0] for d in result.description or []]
    rows = result.fetchall() if max_rows is None else result.fetchmany(max_rows)
    return columns, [list(r) for r in rows]


@dataclass(frozen=True)
class Bounded:
    """A bounded query's answer: at most ``max_rows`` rows; ``truncated`` when the result had more."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    max_rows: int


def run_bounded(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict[str, Any] | None,
                max_rows: int, timeout: float, stated: float | None = None) -> Bounded:
    """Run one checked read-only statement on ``con`` (a cursor of its own: the interrupt stops
    only it), fetching at most ``max_rows`` rows; past ``timeout`` seconds, execution or fetch is
    interrupted and :class:`QueryTimeout` raised, naming the limit as ``stated`` (the whole limit, when
    ``timeout`` is what is left of it)."""
    statement = check_readonly(sql)
    timer = threading.Timer(timeout, con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        result = con.execute(statement.query, params) if params else con.execute(statement.query)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchmany(max_rows + 1)
    except duckdb.InterruptException:
        limit = timeout if stated is None else stated
        raise QueryTimeout(f"query cancelled after {limit:g} s (OUTLOOP_QUERY_TIMEOUT)") from None
    finally:
        timer.cancel()
    truncated = len(rows) > max_rows
    return Bounded(columns, [list(r) for r in rows[:max_rows]], truncated, max_rows)


def open_readonly(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open a database file no worker holds, read-only (DuckDB refuses it while a writer has it)."""
    con = duckdb.connect(str(path), read_only=True)
    use_utc(con)
    confine(con)
    return con


def confine(con: duckdb.DuckDBPyConnection) -> None:
    """No file, URL or extension beyond the database itself, for every cursor of this connection,
    and the settings cannot be turned back by a query (Python objects registered by the writer
    still work)."""
    for setting in ("enable_external_access = false", "autoinstall_known_extensions = false",
                    "autoload_known_extensions = false", "lock_configuration = true"):
        con.execute(f"SET {setting}")


def use_utc(con: duckdb.DuckDBPyConnection) -> None:
    """TIMESTAMPTZ values come back as UTC datetimes, whatever the machine's zone."""
    con.execute("SET GLOBAL TimeZone = 'UTC'")
