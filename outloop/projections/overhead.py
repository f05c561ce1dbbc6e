"""``context_overhead``: each session's fixed overhead broken down (``agents.overhead``), refreshed with the
context tables.

The MCP part is a function of the stored tool calls, recomputed every refresh. The memory files are
measured on disk, where the session's ``cwd`` (from its hook payloads; transcripts' ``cwd`` is not
stored) is a folder of this machine, the first time a refresh finds it so; that measurement is kept
from then on (replaying the same input again changes nothing, even after the files changed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from outloop.agents.context import Call, chars_per_token
from outloop.agents.overhead import mcp_servers, memory_files, overhead_row, read_file
from outloop.sinks.upsert import unregister_quietly

# A session's cwd: that of its first hook payload (every Claude Code hook payload carries one), parsing that
# payload alone: parsing all of them took memory in proportion to the session's payloads (600 hooks of 17 MB
# needed over 120 MiB) inside the batch's transaction. Sessions whose first payload has none: _CWD_LATER.
_CWD = ("SELECT session_id, c FROM (SELECT session_id, json_extract_string(arg_min(payload, received_at), '$.cwd') "
        "AS c FROM hook_events WHERE session_id IN (SELECT s FROM ovh_sessions) GROUP BY session_id) "
        "WHERE c IS NOT NULL")
_CWD_LATER = ("SELECT session_id, coalesce(arg_min(c, received_at), min(c)) FROM (SELECT session_id, received_at, "
              "json_extract_string(payload, '$.cwd') AS c FROM hook_events WHERE session_id IN "
              "(SELECT unnest(?::VARCHAR[]))) "
              "WHERE c IS NOT NULL GROUP BY session_id")
_KEPT = ("SELECT session_id, cwd, memory_files, mcp_servers_configured, measured_at FROM context_overhead "
         "WHERE measured_at IS NOT NULL AND session_id IN (SELECT s FROM ovh_sessions)")


def _measure(cwd: str, now: datetime) -> dict[str, Any] | None:
    if not os.path.isdir(cwd):
        return None
    return {"cwd": cwd, "files": memory_files(cwd, os.path.expanduser("~"), read_file, chars_per_token()),
            "servers": mcp_servers(cwd, read_file), "measured_at": now}


def _memories(con: duckdb.DuckDBPyConnection, sessions: list[str], now: datetime
              ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(session -> its memory measurement: the one kept, else one made now where the folder is at hand;
    session -> its cwd)."""
    out: dict[str, dict[str, Any]] = {}
    for sid, cwd, files, servers, at in con.execute(_KEPT).fetchall():
        out[sid] = {"cwd": cwd, "files": orjson.loads(files) if files else [],
                    "servers": orjson.loads(servers) if servers else None, "measured_at": at}
    cwds = dict(con.execute(_CWD).fetchall())
    rest = [s for s in sessions if s not in cwds]
    if rest:  # a first payload without a cwd: the earliest that has one
        cwds.update(con.execute(_CWD_LATER, [rest]).fetchall())
    for sid, cwd in cwds.items():
        if sid not in out:
            found = _measure(cwd, now)
            if found is not None:
                out[sid] = found
    return out, cwds


def store_overhead(con: duckdb.DuckDBPyConnection, sessions: list[str],
                   measured: Mapping[str, tuple[list[Call], int]], now: datetime | None = None) -> None:
    """Replace the ``context_overhead`` rows of ``sessions``; ``measured``: session -> (its tool calls, its
    fixed prefix tokens)."""
    con.register("ovh_sessions", pa.table({"s": sessions}))
    try:
        memories, cwds = _memories(con, sessions, now or datetime.now(UTC))
        con.execute("DELETE FROM context_overhead WHERE session_id IN (SELECT s FROM ovh_sessions)")
    finally:
        unregister_quietly(con, "ovh_sessions")
    rows = [overhead_row(s, calls, prefix, memories.get(s), cwds.get(s))
            for s, (calls, prefix) in sorted(measured.items())]
    if not rows:
        return
    con.register("ovh_rows", pa.Table.from_pylist(rows))
    try:
        cols = ", ".join(f'"{c}"' for c in rows[0])
        con.execute(f"INSERT INTO context_overhead ({cols}) SELECT {cols} FROM ovh_rows")
    finally:
        unregister_quietly(con, "ovh_rows")
