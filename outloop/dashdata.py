"""The figures of the dashboard and of the static report, one function per panel.

Each panel is read from the same tables, views and functions as the CLI command that shows it
(``outloop quota``, ``patterns``, ``context``, ``savings``), through a ``query(sql, params)`` callable:
the running worker's ``/query`` for the live dashboard, a read-only file connection for
``outloop report``. Time is passed in. Nothing is recomputed that the sink already materialized; the
quota forecast is computed as ``outloop quota`` computes it (an estimate, and labelled so).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

Query = Callable[[str, list[Any] | None], tuple[list[str], list[list[Any]]]]

PATTERNS_SQL = """
SELECT signature, category, tool, target, side_effect, occurrence_count, session_count, count_1h, count_24h,
       count_7d, count_30d, windows_as_of, first_seen, last_seen, confidence_score, status, tokens_total,
       avg_output_tokens, success_rate, ok_count, failed_count, avg_duration_ms, samples, confidence_breakdown,
       signature_version, side_effects, side_effect_share
FROM operation_patterns WHERE (? IS NULL OR category = ?)
ORDER BY occurrence_count DESC, confidence_score DESC, signature LIMIT ?
"""
OFFENDERS_SQL = """
SELECT session_id, tool_name, target, tokens, carry_tokens FROM context_outputs
WHERE NOT used ORDER BY carry_tokens DESC, id LIMIT ?
"""
ROUTING_HOURS_SQL = """
SELECT date_trunc('hour', decided_at) AS hour, count(*) AS decisions, sum(net_tokens) AS net_tokens,
       round(sum(net_usd), 6) AS net_usd,
       round(sum(fidelity * fidelity_used) / nullif(sum(CASE WHEN fidelity IS NOT NULL THEN fidelity_used END), 0), 4)
           AS fidelity
FROM cost_savings_log WHERE decided_at IS NOT NULL GROUP BY ALL ORDER BY hour
"""
ACTIONS_SQL = "SELECT mode, action, count(*) AS decisions FROM routing_decisions GROUP BY ALL ORDER BY decisions DESC"
RECOMMENDATION_TABLES = ("discovery", "discoveries", "recommendations", "opportunities")
TABLES_SQL = "SELECT table_name FROM information_schema.tables WHERE table_name IN (?, ?, ?, ?) ORDER BY table_name"
DEAD_BY_REASON_SQL = 'SELECT reason, count(*) AS letters, max("at") AS last FROM dead_letters GROUP BY reason ' \
                     'ORDER BY letters DESC, reason'
DEAD_LATEST_SQL = 'SELECT "at", topic, "partition", "offset", reason, detail FROM dead_letters ' \
                  'ORDER BY "at" DESC, id LIMIT ?'
SERIES_POINTS = 120  # points of a cumulative-use line at most (the page and the PNGs draw these)


def records(result: tuple[list[str], list[list[Any]]]) -> list[dict[str, Any]]:
    columns, rows = result
    return [dict(zip(columns, r, strict=True)) for r in rows]


def cumulative(points: list[tuple[datetime, int]], limit: int = SERIES_POINTS) -> list[list[Any]]:
    """[[iso time, running total], ...] of time-ordered (time, tokens), thinned to ``limit`` points
    (every k-th and the last: the line keeps its end, its figure is the window's use)."""
    out: list[list[Any]] = []
    total = 0
    for ts, n in points:
        total += n
        out.append([ts.isoformat(), total])
    if len(out) <= limit:
        return out
    step = -(-len(out) // limit)
    return out[::step][: limit - 1] + [out[-1]]


def quota_at(last_usage: datetime | None, now: datetime, span: timedelta = timedelta(hours=5)) -> tuple[datetime, str]:
    """The time the quota panel is assessed at, and why: now, unless nothing was used in the five hours
    before it (a replay of old transcripts, a quiet machine): then the last usage, so the panel shows
    the last window that had any use, and says so."""
    if last_usage is None or now - last_usage <= span:
        return now, "now"
    return last_usage, f"as of the last usage ({last_usage.isoformat()[:16]}Z): none in the five hours before now"


def quota(query: Query, now: datetime, config: Any) -> dict[str, Any]:
    """``outloop quota --json`` (status, burn, forecast p10-p90, limit per window) with the cumulative use
    of each window drawn as a line; assessed at :func:`quota_at`."""
    from outloop.agents.quota_status import assess, official_from
    from outloop.quota_cli import OFFICIAL_SQL, USAGE_SQL, usage_rows

    rows = usage_rows(query(USAGE_SQL, [None, None])[1])
    at, basis = quota_at(rows[-1].ts if rows else None, now)
    stamp = at.isoformat()
    official = official_from(query(OFFICIAL_SQL, [stamp, stamp])[1], at)
    status = assess(rows, at, config, official).as_dict()
    for w in status["windows"]:  # type: ignore[attr-defined]
        start, end = datetime.fromisoformat(w["start"]), datetime.fromisoformat(w["end"])
        w["series"] = cumulative([(r.ts, r.total) for r in rows if start <= r.ts <= min(at, end)])
    status["as_of"] = basis
    status["usage_records"] = len(rows)
    return status


def patterns(query: Query, top: int = 10) -> list[dict[str, Any]]:
    """The top patterns of ``outloop patterns``: occurrences, tokens, confidence."""
    keep = ("signature", "category", "status", "occurrence_count", "session_count", "tokens_total",
            "confidence_score", "success_rate")
    return [{k: rec[k] for k in keep} for rec in records(query(PATTERNS_SQL, [None, None, top]))]


def context(query: Query, top: int = 10) -> dict[str, Any]:
    """``outloop context``: efficiency per session (largest carry first) and the worst offenders, the
    largest tool outputs the agent never used, by carry-weighted tokens (estimated from output sizes)."""
    from outloop import contextreport

    keep = ("session_id", "files_read", "loaded_tokens", "used_tokens", "carry_tokens", "efficiency",
            "waste_tokens", "reread_tokens", "cache_breaks")
    sessions = [{k: rec[k] for k in keep} for rec in contextreport.sessions(query, top)]
    return {"sessions": sessions, "offenders": records(query(OFFENDERS_SQL, [top])),
            "basis": "estimate (tokens from output sizes)"}


def routing(query: Query) -> dict[str, Any]:
    """``outloop savings``: decisions, fidelity and net saving per hour and per rule, and the decisions
    by mode and action. ``basis`` of each rule row: measured, or estimated by a shadow replay."""
    from outloop.savings import savings_sql

    hours = records(query(ROUTING_HOURS_SQL, None))
    running = 0
    for h in hours:
        running += int(h["net_tokens"] or 0)
        h["cumulative_net_tokens"] = running
    return {"hours": hours, "by_rule": records(query(savings_sql("rule"), None)),
            "actions": records(query(ACTIONS_SQL, None))}


def recommendations(query: Query, top: int = 10) -> dict[str, Any]:
    """The ranked recommendations of discovery, when its table exists; an honest "none yet" otherwise."""
    found = [r[0] for r in query(TABLES_SQL, list(RECOMMENDATION_TABLES))[1]]
    if not found:
        return {"table": None, "rows": [], "note": "none yet: no discovery analysis has been stored in this database"}
    table = found[0]
    rows = records(query(f'SELECT * FROM "{table}" LIMIT ?', [top]))
    note = "" if rows else f"none yet: the {table} table is empty"
    return {"table": table, "rows": [_plain(r) for r in rows], "note": note}


def dead_letters(query: Query, top: int = 10) -> dict[str, Any]:
    """Records the sink or the agents could not use, by reason, and the latest ones."""
    by_reason = records(query(DEAD_BY_REASON_SQL, None))
    return {"total": sum(int(r["letters"]) for r in by_reason), "by_reason": by_reason,
            "latest": records(query(DEAD_LATEST_SQL, [top]))}


def _plain(rec: dict[str, Any]) -> dict[str, Any]:
    """A row with JSON text decoded and long text cut, for a table cell."""
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, str) and v[:1] in "[{":
            with contextlib.suppress(orjson.JSONDecodeError):
                v = orjson.loads(v)
        out[k] = v
    return out


PANELS: dict[str, Callable[..., Any]] = {"patterns": patterns, "context": context, "routing": routing,
                                         "recommendations": recommendations, "dead_letters": dead_letters}


def panel(name: str, query: Query, now: datetime, config: Any) -> dict[str, Any]:
    """{"data": ...} or {"error": "..."}: one panel's failure (a table a newer outloop adds, a busy sink)
    never takes the others down."""
    try:
        data = quota(query, now, config) if name == "quota" else PANELS[name](query)
    except Exception as exc:  # noqa: BLE001 - shown in the panel
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"data": data}
