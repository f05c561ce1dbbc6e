"""Storing discovery's results and the users' feedback (called by the one owner of the database file).

:func:`refresh_recommendations` runs the analysis (``outloop.projections.discovery``) and replaces the stored set in one
transaction: every recommendation that passed the thresholds is written with ``current`` true under its
stable id, its occurrences in ``recommendation_occurrences``; one that no longer passes stays, ``current``
false (its feedback and drafts keep their meaning). No clock time is stored: ``as_of`` is the data's
watermark, so analysing the same data twice writes the same rows.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import duckdb

from outloop.agents.discovery import DiscoveryConfig, Recommendation
from outloop.agents.pricing import PriceTable
from outloop.projections.discovery import BASIS, analyse

ACTIONS = ("accept", "reject", "filed")
_COLUMNS = ("id, kind, key, title, priority, rank, current, as_of, window_start, window_end, occurrences, measured, "
            "sessions, occurrences_30d, tokens_per_occurrence, tokens_p10, tokens_p90, usd_per_occurrence, "
            "monthly_tokens, monthly_savings_usd, monthly_low_usd, monthly_high_usd, build_cost_usd, payback_months, "
            "roi_pct, suggestion, criteria, evidence, basis, price_version, config")


def _row(r: Recommendation, rank: int, as_of: datetime, cfg: DiscoveryConfig, prices: PriceTable) -> list[Any]:
    return [r.id, r.kind, r.key, r.title, r.priority, rank, True, as_of, r.window_start, r.window_end, r.occurrences,
            r.measured, r.sessions, r.occurrences_30d, r.tokens_per_occurrence, r.tokens_p10, r.tokens_p90,
            r.usd_per_occurrence, r.monthly_tokens, r.monthly_savings_usd, r.monthly_low_usd, r.monthly_high_usd,
            r.build_cost_usd, r.payback_months, r.roi_pct, r.suggestion, json.dumps(list(r.criteria)),
            json.dumps({**r.evidence, "session_ids": sorted({o.session_id for o in r.detail})[:10]}, default=str),
            BASIS, prices.version, json.dumps(cfg.as_dict())]


def refresh_recommendations(con: duckdb.DuckDBPyConnection, cfg: DiscoveryConfig, prices: PriceTable
                            ) -> list[dict[str, Any]]:
    """Analyse and store (call inside a write transaction); returns the current recommendations, best first."""
    as_of, recs = analyse(con, cfg, prices)
    if as_of is None:
        return []
    con.execute("UPDATE recommendations SET current = false, rank = NULL WHERE current")
    for i, r in enumerate(recs, 1):
        con.execute(f"INSERT OR REPLACE INTO recommendations ({_COLUMNS}) VALUES "
                    f"({', '.join('?' * len(_COLUMNS.split(',')))})", _row(r, i, as_of, cfg, prices))
        con.execute("DELETE FROM recommendation_occurrences WHERE rec_id = ?", [r.id])
        con.executemany("INSERT INTO recommendation_occurrences VALUES (?, ?, ?, ?, ?, ?)",
                        [[r.id, o.ref, o.session_id, o.at, o.tokens, o.usd] for o in r.detail])
    return load(con, current_only=True)


def load(con: duckdb.DuckDBPyConnection, current_only: bool = False, rec: str | None = None
         ) -> list[dict[str, Any]]:
    """Stored recommendations with their status (open, accept, reject) and the URL they were filed at."""
    where = ["(NOT ? OR current)", "(? IS NULL OR id = ? OR id LIKE ? || '%')"]
    cur = con.execute(f"SELECT * FROM v_recommendations WHERE {' AND '.join(where)} "
                      "ORDER BY current DESC, rank NULLS LAST, id", [current_only, rec, rec, rec])
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        item = dict(zip(names, row, strict=True))
        for key in ("criteria", "evidence", "config"):
            if isinstance(item[key], str):
                item[key] = json.loads(item[key])
        out.append(item)
    return out


def add_feedback(con: duckdb.DuckDBPyConnection, rec: str, action: str, at: datetime, *, rule: str | None = None,
                 url: str | None = None, note: str | None = None) -> dict[str, Any]:
    """Record accept / reject / filed for a recommendation (its id or a unique prefix of it). An accept keeps
    the projection of that moment, which the rule's realised savings are later compared with."""
    if action not in ACTIONS:
        raise ValueError(f"action is one of {', '.join(ACTIONS)}, not {action!r}")
    found = con.execute("SELECT id, monthly_savings_usd FROM recommendations WHERE id = ? OR id LIKE ? || '%'",
                        [rec, rec]).fetchall()
    if len(found) != 1:
        raise ValueError(f"no recommendation {rec!r}" if not found else f"{rec!r} matches {len(found)} recommendations")
    rec_id, projected = found[0]
    row = con.execute("SELECT count(*) FROM recommendation_feedback WHERE rec_id = ?", [rec_id]).fetchone()
    fid = f"{rec_id}:{(row[0] if row else 0) + 1}"
    con.execute("INSERT INTO recommendation_feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [fid, rec_id, action, at, rule, projected if action == "accept" else None, url, note])
    return {"id": fid, "rec_id": rec_id, "action": action, "rule": rule, "url": url,
            "projected_monthly_usd": projected if action == "accept" else None}
