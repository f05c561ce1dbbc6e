"""Human-readable reports of a replay and of the database."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from outloop.client import query_file
from outloop.replay import ReplaySummary


def _kv(table: Table, key: str, value: object) -> None:
    table.add_row(key, str(value))


def print_summary(console: Console, s: ReplaySummary, db: Path) -> None:
    t = Table(title="outloop replay", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    _kv(t, "files", ", ".join(f"{k}: {v}" for k, v in s.files.items()) or "none")
    _kv(t, "events published", sum(s.events.values()))
    for kind, n in s.events.items():
        _kv(t, f"  {kind}", n)
    _kv(t, "damaged lines skipped", s.damaged_lines)
    for reason, n in s.rejected.items():
        _kv(t, f"files skipped: {reason}", n)
    for what, n in s.dropped.items():
        _kv(t, f"dropped on purpose: {what}", n)
    _kv(t, "sessions", s.sessions)
    _kv(t, "tool calls", s.tool_calls)
    for source, n in s.tool_calls_by_source.items():
        _kv(t, f"  from {source}", n)
    _kv(t, "usage records", s.usage_records)
    for kind, n in s.tokens.items():
        _kv(t, f"  {kind} tokens", f"{n:,}")
    _kv(t, "cost (USD, priced models)", "n/a" if s.cost_usd is None else f"{s.cost_usd:,.4f}")
    for reason, n in s.dead_letters_by_reason.items():
        _kv(t, f"dead letters: {reason}", n)
    _kv(t, "elapsed", f"{s.elapsed_s:.1f} s")
    _kv(t, "database", db)
    console.print(t)


TOP_COMMANDS = """
SELECT coalesce(command, tool_name) AS operation, count(*) AS calls,
       count(DISTINCT session_id) AS sessions, sum(output_tokens_est) AS output_tokens_est,
       round(avg(duration_ms)) AS avg_ms
FROM tool_calls GROUP BY 1 HAVING count(*) > 1 ORDER BY calls DESC, output_tokens_est DESC LIMIT 12
"""


def print_demo(console: Console, s: ReplaySummary, db: Path) -> None:
    print_summary(console, s, db)
    columns, rows = query_file(db, TOP_COMMANDS)
    t = Table(*columns, title="operations repeated inside the LLM loop")
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)
    console.print(f"query it: outloop query --db {db} \"SELECT * FROM tool_calls LIMIT 5\"")
