"""Human-readable reports of a replay and of the database."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from outloop.client import query_file
from outloop.replay import ReplaySummary


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` without cutting a value: on a terminal at its width, long values wrapped
    (folded) in their cells; elsewhere (a pipe, a file, ``make demo`` in a log) as wide as its widest
    row needs, whatever width the console assumed (80 columns without a terminal)."""
    for column in table.columns:
        column.overflow = "fold"
        column.no_wrap = False
    if console.is_terminal:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update_width(1 << 20), table).maximum
    assumed = console.width
    console.width = max(natural, assumed)  # print(width=...) cannot go past the console's own width
    try:
        console.print(table)
    finally:
        console.width = assumed


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
    _kv(t, "orphan results (no tool_use in the input)", s.orphan_results)
    _kv(t, "usage records", s.usage_records)
    _kv(t, "API messages", s.api_messages)
    for kind, n in s.tokens.items():
        _kv(t, f"  {kind} tokens", f"{n:,}")
    _kv(t, "cost (USD, priced models)", "n/a" if s.cost_usd is None else f"{s.cost_usd:,.4f}")
    unpriced = sum(s.unpriced_by_model.values())
    _kv(t, "  responses without a price", f"{unpriced} of {s.usage_records}")
    for model, n in s.unpriced_by_model.items():
        _kv(t, f"    {model}", n)
    for reason, n in s.dead_letters_by_reason.items():
        _kv(t, f"dead letters: {reason}", n)
    _kv(t, "elapsed", f"{s.elapsed_s:.1f} s")
    _kv(t, "database", db)
    print_table(console, t)
    if s.routing is not None:
        print_routing(console, s.routing)


def _pct(v: object) -> str:
    return "n/a" if v is None else f"{v:.2f}%"


def print_routing(console: Console, r: dict[str, object]) -> None:
    """The routing section of a shadow replay (docs/routing-savings.md)."""
    t = Table(title="routing (shadow): what enforcing the decisions would have saved, net (estimate)",
              show_header=False)
    t.add_column(style="bold")
    t.add_column()
    _kv(t, "sessions / contexts", f"{r['sessions']} / {r['contexts']}")
    _kv(t, "total tokens (distinct API responses)", f"{r['total_tokens']:,}")
    _kv(t, "total cost (USD)", f"{r['total_cost_usd']:,.4f}")
    _kv(t, "decisions priced", r["decisions"])
    _kv(t, "net tokens saved", f"{r['net_tokens_saved']:,} ({_pct(r['reduction_tokens_pct'])})")
    _kv(t, "net USD saved", f"{r['net_usd_saved']:,.4f} ({_pct(r['reduction_cost_pct'])})")
    _kv(t, "  without the largest session", f"{_pct(r['reduction_tokens_pct_without_largest'])} of tokens, "
        f"{_pct(r['reduction_cost_pct_without_largest'])} of cost")
    _kv(t, "median session reduction", _pct(r["median_session_reduction_tokens_pct"]))
    _kv(t, "decisions that lost a string the agent used", r["lost_decisions"])
    ops = r["test_build_operations"]
    if isinstance(ops, dict):
        _kv(t, "test/build operations with a structured decision",
            f"{ops['structured_decisions']} of {ops['test_build_operations']} ({_pct(ops['structured_share_pct'])})")
    est = r["estimator"]
    if isinstance(est, dict):
        _kv(t, "tokens of text", f"{est['chars_per_token']} chars/token (calibrated: {est['calibrated']}, "
            f"{est['observations']} intervals)")
    print_table(console, t)
    by_rule = r["by_rule"]
    if isinstance(by_rule, dict) and by_rule:
        rules = Table("rule", "decisions", "net tokens", "net USD", "fidelity", "lost", title="by rule")
        for name, g in by_rule.items():
            fid = "n/a" if g["fidelity"] is None else f"{g['fidelity']:.3f}"
            rules.add_row(name, str(g["decisions"]), f"{g['net_tokens']:,}", f"{g['net_usd']:.4f}", fid,
                          str(g["lost"]))
        print_table(console, rules)


TOP_PATTERNS = """
SELECT signature, status, confidence_score AS confidence, occurrence_count AS calls, session_count AS sessions,
       tokens_total AS output_tokens, round(100 * success_rate) AS ok_pct, side_effect
FROM operation_patterns WHERE occurrence_count > 1
ORDER BY tokens_total DESC, occurrence_count DESC, signature LIMIT 12
"""

TOP_SEQUENCES = """
SELECT ngram, session_count AS sessions, occurrence_count AS occurrences
FROM sequence_patterns WHERE level = 'category' AND n >= 3 AND session_count > 1
ORDER BY session_count DESC, occurrence_count DESC, n DESC, ngram LIMIT 8
"""


def _table(console: Console, db: Path, sql: str, title: str) -> None:
    columns, rows = query_file(db, sql)
    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, overflow="fold", min_width=24 if i == 0 else None)
    for r in rows:
        t.add_row(*(Text("" if v is None else str(v)) for v in r))
    print_table(console, t)


def print_demo(console: Console, s: ReplaySummary, db: Path) -> None:
    print_summary(console, s, db)
    _table(console, db, TOP_PATTERNS, "repeated operations inside the LLM loop (by output tokens spent)")
    _table(console, db, TOP_SEQUENCES, "recurring loops (category n-grams, by sessions)")
    console.print(f"more: outloop patterns --db {db} --json   |   outloop query --db {db} \"SELECT ...\"",
                  soft_wrap=True)
