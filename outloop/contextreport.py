"""``outloop context``: the context-efficiency tables read back for people (tables) and programs (JSON).

Three views: every session (largest carry first), one session in detail (its figures, its fixed overhead
split, its file reads, its cache breaks, its largest unused outputs), and the context profiles of the top patterns. The
figures are read from the materialized tables (see docs/context.md); nothing is recomputed here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

Query = Callable[[str, list[Any] | None], tuple[list[str], list[list[Any]]]]

SESSIONS_SQL = """
SELECT e.session_id, files_read, files_used, loaded_tokens, used_tokens, carry_tokens, efficiency, waste_tokens,
       reread_tokens, oversized_output_tokens, e.fixed_prefix_tokens, fixed_overhead_tokens, fixed_overhead_share,
       o.memory_tokens, o.rest_tokens, o.mcp_calls, o.mcp_output_tokens, cache_breaks,
       cache_break_tokens, cache_break_cost_usd, window_start, window_end
FROM context_efficiency e LEFT JOIN context_overhead o USING (session_id)
ORDER BY carry_tokens DESC, e.session_id LIMIT ?
"""
SESSION_SQL = "SELECT * FROM context_efficiency WHERE session_id = ?"
READS_SQL = ("SELECT file_path, times_read, rereads, tokens, carry_tokens, used, edited FROM file_reads "
             "WHERE session_id = ? ORDER BY carry_tokens DESC, file_path")
BREAKS_SQL = ('SELECT usage_id, "at", model, cause, gap_seconds, tokens, cost_usd, extra_cost_usd FROM cache_breaks '
              'WHERE session_id = ? ORDER BY "at", usage_id')
OVERHEAD_SQL = ("SELECT cwd, fixed_prefix_tokens, memory_tokens, memory_files, rest_tokens, mcp_tools_called, "
                "mcp_calls, mcp_output_tokens, mcp_tools_offered, mcp_servers_configured, mcp_servers_unused, "
                "measured_at "
                "FROM context_overhead WHERE session_id = ?")
UNUSED_SQL = ("SELECT id, tool_name, target, tokens, carry, carry_tokens, reread FROM context_outputs "
              "WHERE session_id = ? AND NOT used ORDER BY carry_tokens DESC, id LIMIT 20")
PROFILES_SQL = """
SELECT signature, tool_name, outputs, sessions, loaded_tokens, used_tokens, carry_tokens, used_carry_tokens,
       waste_tokens, reread_tokens, efficiency, potential_tokens, potential_pct, needed, unused
FROM context_profiles ORDER BY carry_tokens DESC, signature LIMIT ?
"""


def _records(result: tuple[list[str], list[list[Any]]]) -> list[dict[str, Any]]:
    columns, rows = result
    return [dict(zip(columns, r, strict=True)) for r in rows]


def sessions(query: Query, top: int) -> list[dict[str, Any]]:
    return _records(query(SESSIONS_SQL, [top]))


def session(query: Query, session_id: str) -> dict[str, Any] | None:
    """One session's row with its file reads, cache breaks and largest unused outputs (None: unknown)."""
    rows = _records(query(SESSION_SQL, [session_id]))
    if not rows:
        return None
    overhead = _records(query(OVERHEAD_SQL, [session_id]))
    for rec in overhead:
        for key in ("memory_files", "mcp_tools_called", "mcp_servers_configured", "mcp_servers_unused"):
            if isinstance(rec[key], str):
                rec[key] = orjson.loads(rec[key])
    return {**rows[0], "overhead": overhead[0] if overhead else None,
            "file_reads": _records(query(READS_SQL, [session_id])),
            "cache_breaks": _records(query(BREAKS_SQL, [session_id])),
            "unused_outputs": _records(query(UNUSED_SQL, [session_id]))}


def profiles(query: Query, top: int) -> list[dict[str, Any]]:
    out = _records(query(PROFILES_SQL, [top]))
    for rec in out:
        for key in ("needed", "unused"):
            if isinstance(rec[key], str):
                rec[key] = orjson.loads(rec[key])
    return out


def dump(data: Any) -> str:
    return orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2).decode() + "\n"


def _n(value: Any) -> str:
    return "" if value is None else f"{value:,}"


def _pct(value: Any, scale: float = 100.0) -> str:
    return "" if value is None else f"{scale * value:.0f}"


def print_sessions(console: Console, records: list[dict[str, Any]]) -> None:
    table = Table(title="context efficiency by session (tokens estimated from output sizes)")
    table.add_column("session", overflow="fold", min_width=12)
    for name in ("files read", "used", "loaded", "carry", "eff %", "waste", "re-reads", "fixed %", "memory",
                 "mcp calls", "breaks", "$ breaks"):
        table.add_column(name, justify="right")
    for r in records:
        cost = r["cache_break_cost_usd"]
        table.add_row(Text(r["session_id"]), str(r["files_read"]), str(r["files_used"]), _n(r["loaded_tokens"]),
                      _n(r["carry_tokens"]), _pct(r["efficiency"]), _n(r["waste_tokens"]), _n(r["reread_tokens"]),
                      _pct(r["fixed_overhead_share"]), _n(r["memory_tokens"]), _n(r["mcp_calls"]),
                      str(r["cache_breaks"]), "" if cost is None else f"{cost:.2f}")
    console.print(table)


def print_session(console: Console, rec: dict[str, Any]) -> None:
    head = Table(title=f"session {rec['session_id']}", show_header=False,
                 caption="tool-output tokens (loaded, used, carry, waste, re-read, oversized) are estimated from "
                         "output sizes; API calls, total, fixed prefix and cache-break tokens come from the usage "
                         "records (measured), their dollars from the price table")
    for key, value in rec.items():
        if not isinstance(value, list | dict):
            head.add_row(key, Text("" if value is None else str(value)))
    console.print(head)
    if rec.get("overhead"):
        title = "fixed overhead (memory files estimated; MCP tools offered: not in the data)"
        table = Table("part", "value", title=title)
        for key, value in rec["overhead"].items():
            table.add_row(key, Text("" if value is None else str(value)))
        console.print(table)
    for key, title in (("file_reads", "file reads"), ("cache_breaks", "cache breaks"),
                       ("unused_outputs", "largest outputs never used")):
        rows = rec[key]
        if not rows:
            continue
        table = Table(*rows[0].keys(), title=title)
        for r in rows:
            table.add_row(*(Text("" if v is None else str(v)) for v in r.values()))
        console.print(table)


def print_profiles(console: Console, records: list[dict[str, Any]]) -> None:
    table = Table(title="context profiles (tokens estimated from output sizes; largest carry-weighted first; "
                        "--json lists the targets)")
    table.add_column("signature", overflow="fold", min_width=24)
    for name in ("outputs", "sessions", "loaded", "carry", "needed carry", "potential", "pot %", "eff %"):
        table.add_column(name, justify="right")
    for r in records:
        pot = r["potential_pct"]
        table.add_row(Text(r["signature"]), str(r["outputs"]), str(r["sessions"]), _n(r["loaded_tokens"]),
                      _n(r["carry_tokens"]), _n(r["used_carry_tokens"]), _n(r["potential_tokens"]),
                      "" if pot is None else f"{pot:.0f}", _pct(r["efficiency"]))
    console.print(table)
