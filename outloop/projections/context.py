"""The context projection: context-efficiency tables (DDL in ``sinks.context``), recomputed from the
stored facts of each session that changed.

A written batch marks the sessions whose tool calls, usage or compactions (``PreCompact`` hook events)
it touched (``pattern_dirty`` kind ``context``, in the batch's transaction: a crash never loses a
refresh owed). A refresh reads those sessions' stored rows back (tool calls, usage, compactions, and the
output text of the calls a PostToolUse hook payload carried), measures them with the pure
:func:`agents.context.measure`, and replaces their rows in ``context_efficiency``, ``context_outputs``,
``file_reads``, ``cache_breaks`` and ``context_overhead`` (``outloop.projections.overhead``); ``context_profiles``
(per signature) is then aggregated again from ``context_outputs``. Every row is a function of the
stored facts (the memory files of ``context_overhead``: of their first measurement): replaying the same
input changes nothing.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from outloop.agents.context import UNNAMED_CHAIN, Api, Call, SessionContext, chars_per_token, measure
from outloop.agents.pricing import active_table
from outloop.projections.overhead import store_overhead
from outloop.sinks.upsert import unregister_quietly

PROFILES = """
INSERT INTO context_profiles
WITH targets AS (
    SELECT signature, used, target, sum(tokens) AS tokens FROM context_outputs
    WHERE signature IS NOT NULL AND target IS NOT NULL GROUP BY ALL),
lists AS (
    SELECT signature,
           list(target ORDER BY tokens DESC, target) FILTER (WHERE used) AS needed,
           list(target ORDER BY tokens DESC, target) FILTER (WHERE NOT used) AS unused
    FROM targets GROUP BY signature)
SELECT o.signature, min(tool_name), count(*), count(DISTINCT session_id), sum(tokens),
       coalesce(sum(tokens) FILTER (WHERE used), 0), sum(carry_tokens),
       coalesce(sum(carry_tokens) FILTER (WHERE used), 0), coalesce(sum(tokens) FILTER (WHERE NOT used), 0),
       coalesce(sum(tokens) FILTER (WHERE reread), 0),
       CASE WHEN sum(tokens) > 0 THEN coalesce(sum(tokens) FILTER (WHERE used), 0) / sum(tokens) END,
       coalesce(sum(carry_tokens) FILTER (WHERE NOT used), 0),
       CASE WHEN sum(carry_tokens) > 0
            THEN 100.0 * coalesce(sum(carry_tokens) FILTER (WHERE NOT used), 0) / sum(carry_tokens) END,
       to_json(coalesce(any_value(l.needed), []::VARCHAR[])[1:10]),
       to_json(coalesce(any_value(l.unused), []::VARCHAR[])[1:10])
FROM context_outputs o LEFT JOIN lists l USING (signature)
WHERE o.signature IS NOT NULL GROUP BY o.signature
"""

_CALLS = ("SELECT session_id, id, tool_name, tool_input, status, started_at, ended_at, output_tokens_est, "
          "output_bytes, signature FROM tool_calls WHERE session_id IN (SELECT s FROM ctx_sessions) "
          "AND tool_name IS NOT NULL")
_USAGE = ("SELECT session_id, id, model, \"timestamp\", input_tokens, output_tokens, cache_read_input_tokens, "
          "cache_creation_input_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens FROM usage "
          "WHERE session_id IN (SELECT s FROM ctx_sessions)")
OUTPUT_CAP = 200_000  # characters of an output searched for evidence
_R = "h.payload, '$.tool_response"
_TEXT = (  # what sizes.output_text takes from a Post hook payload, extracted in SQL and cut at OUTPUT_CAP
    f"left(coalesce(json_extract_string({_R}.stdout') || chr(10) || coalesce(json_extract_string({_R}.stderr'), ''), "
    f"json_extract_string({_R}.stderr'), json_extract_string({_R}.file.content'), "
    f"json_extract_string({_R}.content'), json_extract_string({_R}')), {OUTPUT_CAP})")
_POST = ("h.hook_event_name IN ('PostToolUse', 'PostToolUseFailure') "
         "AND h.session_id IN (SELECT s FROM ctx_sessions) AND t.tool_name NOT IN "
         "('Edit', 'Write', 'MultiEdit', 'NotebookEdit', 'TodoWrite')")  # their outputs count as used anyway
_POSTED = (  # the Post hook events of the sessions' calls (ids only: payloads stay in the table here)
    f"SELECT t.id, h.id FROM hook_events h JOIN tool_calls t ON t.id = h.tool_use_id "
    f"WHERE h.tool_use_id IS NOT NULL AND {_POST} UNION ALL "
    "SELECT t.id, h.id FROM (SELECT id, session_id, hook_event_name, "
    "json_extract_string(payload, '$.call_key') AS k FROM hook_events WHERE tool_use_id IS NULL "
    "AND session_id IN (SELECT s FROM ctx_sessions)) h "
    f"JOIN tool_calls t ON t.call_key = h.k AND t.session_id = h.session_id WHERE {_POST}")
_TEXTS = f"SELECT h.id, {_TEXT} FROM hook_events h WHERE h.id IN (SELECT x FROM ctx_hooks)"
TEXT_CHUNK = 50  # hook payloads whose text is read at a time
_SIDE = ("FROM api_messages WHERE is_sidechain AND session_id IN (SELECT s FROM ctx_sessions)")
_SIDE_USAGE = f"SELECT id, coalesce(agent_id, '{UNNAMED_CHAIN}') {_SIDE}"  # usage.id is the message's id
_SIDE_CALLS = (f"SELECT unnest(CAST(tool_use_ids AS VARCHAR[])), coalesce(agent_id, '{UNNAMED_CHAIN}') {_SIDE} "
               "AND tool_use_ids IS NOT NULL")
_COMPACT = ("SELECT session_id, received_at FROM hook_events WHERE hook_event_name = 'PreCompact' "
            "AND received_at IS NOT NULL AND session_id IN (SELECT s FROM ctx_sessions)")
CHUNK = 100  # sessions measured per round trip (their hook payloads are read with them)


def _sessions_of(table: pa.Table | None) -> set[str]:
    if table is None or table.num_rows == 0 or "session_id" not in table.column_names:
        return set()
    return {s for s in pc.unique(table.column("session_id")).to_pylist() if s is not None}


def mark(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]) -> bool:
    """Mark dirty the sessions of a batch's staged tool calls, usage, API messages and PreCompact hook events;
    whether any was."""
    sessions = (_sessions_of(tables.get("tool_calls")) | _sessions_of(tables.get("usage"))
                | _sessions_of(tables.get("api_messages")))  # a message tells which chain a call and usage are of
    hooks = tables.get("hook_events")
    if hooks is not None and hooks.num_rows:
        sessions |= _sessions_of(hooks.filter(pc.equal(hooks.column("hook_event_name"), "PreCompact")))
    if not sessions:
        return False
    con.register("ctx_dirty", pa.table({"key": sorted(sessions)}))
    try:
        con.execute("INSERT INTO pattern_dirty SELECT 'context', key FROM ctx_dirty ON CONFLICT DO NOTHING")
    finally:
        unregister_quietly(con, "ctx_dirty")
    return True


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _tokens(est: int | None, size: int | None, cpt: float) -> int:
    if cpt != 4.0 and size is not None:
        return math.ceil(size / cpt)
    return int(est or 0)


def _texts(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Tool call id -> output text, for the calls of ``ctx_sessions`` a stored Post hook payload carries:
    the matching hook ids first, then their texts a few at a time (payloads can be large; DuckDB's memory
    is small)."""
    calls = dict((h, t) for t, h in con.execute(_POSTED).fetchall())
    hooks = sorted(calls)
    texts: dict[str, str] = {}
    for start in range(0, len(hooks), TEXT_CHUNK):
        con.register("ctx_hooks", pa.table({"x": hooks[start:start + TEXT_CHUNK]}))
        try:
            for hook, text in con.execute(_TEXTS).fetchall():
                if text is not None:
                    texts[calls[hook]] = text
        finally:
            unregister_quietly(con, "ctx_hooks")
    return texts


def load(con: duckdb.DuckDBPyConnection, sessions: list[str]
         ) -> dict[str, tuple[list[Call], list[Api], list[datetime]]]:
    """The stored facts of ``sessions``: their tool calls, API calls and compaction times. A call or usage
    record of a sub-agent's API message (``api_messages.is_sidechain``) is of that agent's chain."""
    facts: dict[str, tuple[list[Call], list[Api], list[datetime]]] = defaultdict(lambda: ([], [], []))
    cpt = chars_per_token()
    con.register("ctx_sessions", pa.table({"s": sessions}))
    try:
        texts = _texts(con)
        side_calls = dict(con.execute(_SIDE_CALLS).fetchall())
        side_usage = dict(con.execute(_SIDE_USAGE).fetchall())
        for sid, id_, tool, ti, status, started, ended, est, size, sig in con.execute(_CALLS).fetchall():
            parsed = orjson.loads(ti) if ti else None
            start, end = _utc(started), _utc(ended)
            facts[sid][0].append(Call(id_, tool, parsed if isinstance(parsed, dict) else {}, status,
                                      start or end, end or start, _tokens(est, size, cpt), sig, texts.get(id_),
                                      side_calls.get(id_)))
        for sid, id_, model, at, inp, out, read, write, w5, w1 in con.execute(_USAGE).fetchall():
            facts[sid][1].append(Api(id_, model, _utc(at), inp, out, read, write, w5, w1, chain=side_usage.get(id_)))
        for sid, at in con.execute(_COMPACT).fetchall():
            facts[sid][2].append(_utc(at))  # type: ignore[arg-type]
    finally:
        unregister_quietly(con, "ctx_sessions")
    return facts


_KEYS = {"context_outputs": "id", "cache_breaks": "usage_id"}  # keyed by a fact whose session may change


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    con.register("ctx_rows", pa.Table.from_pylist(rows))
    try:
        cols = ", ".join(f'"{c}"' for c in rows[0])
        key = _KEYS.get(table)
        if key is not None:  # a tool call or usage record stored under another session before: it moved
            con.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM ctx_rows)")
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM ctx_rows")
    finally:
        unregister_quietly(con, "ctx_rows")


def store(con: duckdb.DuckDBPyConnection, sessions: list[str], results: Iterable[SessionContext]) -> None:
    """Replace the rows of ``sessions`` by ``results``."""
    con.register("ctx_sessions", pa.table({"s": sessions}))
    try:
        for table in ("context_efficiency", "context_outputs", "file_reads", "cache_breaks"):
            con.execute(f"DELETE FROM {table} WHERE session_id IN (SELECT s FROM ctx_sessions)")
    finally:
        unregister_quietly(con, "ctx_sessions")
    eff: list[dict[str, Any]] = []
    outs: list[dict[str, Any]] = []
    reads: list[dict[str, Any]] = []
    breaks: list[dict[str, Any]] = []
    for r in results:
        eff.append(r.row)
        outs += [{"id": o.id, "session_id": o.session_id, "signature": o.signature, "tool_name": o.tool_name,
                  "target": o.target, "tokens": o.tokens, "carry": o.carry, "carry_tokens": o.carry_tokens,
                  "used": o.used, "reread": o.reread, "oversized": o.oversized} for o in r.outputs]
        reads += r.file_reads
        breaks += [{"usage_id": b.usage_id, "session_id": b.session_id, "at": b.at, "model": b.model,
                    "cause": b.cause, "gap_seconds": b.gap_seconds, "tokens": b.tokens, "cost_usd": b.cost_usd,
                    "extra_cost_usd": b.extra_cost_usd} for b in r.breaks]
    for table, rows in (("context_efficiency", eff), ("context_outputs", outs), ("file_reads", reads),
                        ("cache_breaks", breaks)):
        _insert(con, table, rows)


def refresh_profiles(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DELETE FROM context_profiles")
    con.execute(PROFILES)


def refresh_context(con: duckdb.DuckDBPyConnection, sessions: set[str] | None = None,
                    deadline: float | None = None) -> tuple[int, bool]:
    """Measure the dirty sessions again (or ``sessions``) and clear their marks, CHUNK sessions at a
    time, stopping after the chunk that passes ``deadline`` (``time.monotonic``; None: no limit): the
    sessions left keep their marks for the next refresh. Returns (sessions measured, whether all were)."""
    if sessions is None:
        sessions = {r[0] for r in con.execute("SELECT key FROM pattern_dirty WHERE kind = 'context'").fetchall()}
    if not sessions:
        return 0, True
    ordered = sorted(sessions)
    prices = active_table()
    done = 0
    while done < len(ordered) and (deadline is None or done == 0 or time.monotonic() < deadline):
        chunk = ordered[done:done + CHUNK]
        facts = load(con, chunk)
        results = [measure(s, *facts[s], prices=prices) for s in chunk if s in facts]
        store(con, chunk, results)
        store_overhead(con, chunk, {r.session_id: (facts[r.session_id][0], r.row["fixed_prefix_tokens"])
                                    for r in results})
        done += len(chunk)
    con.register("ctx_done", pa.table({"s": ordered[:done]}))
    try:
        con.execute("DELETE FROM pattern_dirty WHERE kind = 'context' AND key IN (SELECT s FROM ctx_done)")
    finally:
        unregister_quietly(con, "ctx_done")
    refresh_profiles(con)
    return done, done == len(ordered)
