"""Quota materialization and workflow budget checks, run by the sink (the one writer of the database).

Projection (:func:`refresh_quota`): after a batch that stored usage or status-line events (at most every
``QUOTA_REFRESH_S`` seconds, and with every flush marker), the status of every window is computed by
:func:`agents.quota_status.assess` at the event-time watermark ``W`` = the latest usage time, from the
usage of the 40 days before ``W`` and the official figures seen up to ``W`` (status-line figures, and
rate-limit stops: ``agents.quota_signals``; a stop, which writes no usage, moves ``W`` to its time), and stored in
``quota_snapshots`` and ``quota_forecasts`` (keyed by window and ``W``) and ``throttle_decisions``
(keyed by ``W``, window and level). ``W`` is a time of the data, not of the clock, so replaying the same
input writes the same rows.

Budgets (:func:`check_budget`, :func:`release_budget`): each check runs in one write transaction of
the sink, so checks are serialized: the reservations a check reads include every one made before it
(see ``agents.quota_budget``). Reservations end when released, when their run's ``workflow.ended``
is stored, or when they expire.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import duckdb

from outloop.agents.quota import UsageRow, window_at
from outloop.agents.quota_budget import answer, estimate_from_history
from outloop.agents.quota_risk import QuotaConfig
from outloop.agents.quota_signals import merge_official, rate_limit_stops
from outloop.agents.quota_status import assess, official_from
from outloop.sinks.quotarows import USAGE_COLUMNS

log = logging.getLogger("outloop.sink")
QUOTA_REFRESH_S = 5.0
HISTORY = timedelta(days=40)
DEFAULT_TTL_S = 3600.0


_USAGE = f"""SELECT {USAGE_COLUMNS}
WHERE u."timestamp" IS NOT NULL AND u."timestamp" > ? AND u."timestamp" <= ? ORDER BY u."timestamp", u.id"""
_OFFICIAL = """SELECT received_at, CAST((payload->'rate_limits') AS VARCHAR) FROM hook_events
WHERE hook_event_name = 'Status' AND (payload->'rate_limits') IS NOT NULL AND received_at <= ?
ORDER BY received_at DESC, id LIMIT 20"""
_STOPS = """SELECT received_at, CAST(payload AS VARCHAR) FROM hook_events
WHERE hook_event_name = 'ApiError' AND payload->>'error' = 'rate_limit' AND received_at <= ? AND received_at > ?
ORDER BY received_at DESC, id LIMIT 20"""


def _rows(con: duckdb.DuckDBPyConnection, since: datetime, until: datetime) -> list[UsageRow]:
    return [UsageRow(*r) for r in con.execute(_USAGE, [since, until]).fetchall()]


def quota_config() -> QuotaConfig:
    """The limits from the environment; a bad configuration is logged and the defaults (no limits) used."""
    try:
        return QuotaConfig.load()
    except (ValueError, OSError) as exc:
        log.error("sink: quota configuration ignored: %s", exc)
        return QuotaConfig()


def refresh_quota(con: duckdb.DuckDBPyConnection, config: QuotaConfig, last_key: Any = None,
                  decisions: list[dict[str, Any]] | None = None) -> Any:
    """Store the quota status at the usage watermark (see module doc), unless neither usage nor status
    events changed since the refresh that returned ``last_key``; returns the key to pass next time.
    The stored throttle decision is appended to ``decisions`` (the sink publishes it)."""
    found = con.execute('SELECT max("timestamp"), count(*), sum(input_tokens + output_tokens + '
                        'cache_read_input_tokens + cache_creation_input_tokens) FROM usage').fetchone()
    status_row = con.execute("SELECT max(received_at), count(*) FROM hook_events WHERE hook_event_name = 'Status'"
                             ).fetchone()
    stop_row = con.execute("SELECT max(received_at), count(*) FROM hook_events WHERE hook_event_name = 'ApiError' "
                           "AND payload->>'error' = 'rate_limit'").fetchone()
    turn_row = con.execute("SELECT count(*), sum(json_array_length(tool_use_ids)) FROM api_messages").fetchone()
    key = (found, status_row, stop_row, turn_row)
    at = found[0] if found else None
    if at is not None and stop_row and stop_row[0] is not None and stop_row[0] > at:
        at = stop_row[0]  # a rate-limit stop writes no usage: it is the latest time of the data
    if at is None or key == last_key:
        return key
    try:
        decision = _store(con, config, at)
        if decisions is not None:
            decisions.append(decision)
    except OverflowError:  # a watermark near year 1 or 9999: no window fits in the calendar
        log.info("sink: no quota status at %s (out of the calendar's range)", at)
    return key


def _store(con: duckdb.DuckDBPyConnection, config: QuotaConfig, at: datetime) -> dict[str, Any]:
    official = merge_official(official_from(con.execute(_OFFICIAL, [at]).fetchall(), at),
                              rate_limit_stops(con.execute(_STOPS, [at, at - timedelta(days=8)]).fetchall(), at))
    status: dict[str, Any] = assess(_rows(con, at - HISTORY, at), at, config, official).as_dict()
    for w in status["windows"]:
        used, fc, off = w["used"], w["forecast"], w.get("official") or {}
        key = f"{w['window']}:{at.isoformat()}"
        con.execute("INSERT OR REPLACE INTO quota_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                    " ?, ?)", [key, at, w["window"], w["start"], w["end"], used["input"], used["output"],
                               used["cache_write"], used["cache_read"], used["total"], used["cost_usd"],
                               used["requests"], w["tokens_per_hour"], w["recent_tokens_per_hour"],
                               w["limit_tokens"], w["percent"], w["basis"], off.get("used_percentage"),
                               off.get("resets_at")])
        con.execute("INSERT OR REPLACE INTO quota_forecasts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [key, at, w["window"], fc["start"], fc["end"], fc["used_tokens"], fc["projected_tokens"],
                     fc["p10"], fc["p90"], fc["mean_tokens"], fc["limit_tokens"], fc["time_to_limit_s"],
                     fc["p_exceed"], fc["basis"], json.dumps(fc["model"])])
    d = status["decision"]
    con.execute("INSERT OR REPLACE INTO throttle_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [d["id"], at, d["level"], d["action"], d["window"], d["percent"], d["basis"], d["abnormal"],
                 d["reason"]])
    return {**d, "at": at.isoformat()}


def latest_decision(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The latest stored throttle decision, as published (``schemas.events.QuotaDecision``)."""
    row = con.execute('SELECT id, "at", level, action, "window", percent, basis, abnormal, reason '
                      'FROM throttle_decisions ORDER BY "at" DESC, id LIMIT 1').fetchone()
    if row is None:
        return None
    keys = ("id", "at", "level", "action", "window", "percent", "basis", "abnormal", "reason")
    return {**dict(zip(keys, row, strict=True)), "at": row[1].isoformat()}


def _end_reservations(con: duckdb.DuckDBPyConnection, now: datetime) -> None:
    con.execute("UPDATE budget_checks SET status = 'expired', ended_at = expires_at "
                "WHERE status = 'reserved' AND expires_at <= ?", [now])
    con.execute("UPDATE budget_checks SET status = 'released', ended_at = w.ended_at FROM workflow_runs w "
                "WHERE budget_checks.status = 'reserved' AND budget_checks.run_id = w.run_id "
                "AND w.status <> 'running'")


def check_budget(con: duckdb.DuckDBPyConnection, config: QuotaConfig, workflow: str, estimated: int | None,
                 run_id: str | None, now: datetime, ttl_s: float = DEFAULT_TTL_S) -> dict[str, Any]:
    """Answer and record one budget check (call inside the sink's write transaction)."""
    _end_reservations(con, now)
    past = [int(r[0]) for r in con.execute(
        "SELECT coalesce(input_tokens, 0) + coalesce(output_tokens, 0) + coalesce(cache_read_input_tokens, 0) "
        "+ coalesce(cache_creation_input_tokens, 0) FROM workflow_runs WHERE workflow = ? "
        "AND status IN ('succeeded', 'failed') ORDER BY started_at DESC LIMIT 200", [workflow]).fetchall()]
    tokens, basis = estimate_from_history(estimated, past)
    window = window_at("five_hour", _rows(con, now - timedelta(hours=10), now), now)
    used = sum(r.total for r in window.rows) if window else 0
    row = con.execute("SELECT coalesce(sum(reserved_tokens), 0) FROM budget_checks WHERE status = 'reserved'"
                      ).fetchone()
    reserved = int(row[0]) if row else 0
    result = answer(tokens, basis, used, reserved, config.five_hour_tokens, config.levels[1])
    n_row = con.execute("SELECT count(*) FROM budget_checks").fetchone()
    check_id = f"budget:{(n_row[0] if n_row else 0) + 1}"
    status = "reserved" if result.reserve_tokens else "none"
    expires = now + timedelta(seconds=ttl_s) if status == "reserved" else None
    con.execute("INSERT INTO budget_checks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                [check_id, workflow, run_id, now, result.decision, json.dumps(list(result.reasons)),
                 result.estimated_tokens, result.estimate_basis, result.headroom_tokens, result.reserve_tokens,
                 status, expires])
    return {"id": check_id, "workflow": workflow, "run_id": run_id, **result.as_dict(), "status": status,
            "expires_at": expires.isoformat() if expires else None}


def release_budget(con: duckdb.DuckDBPyConnection, check_id: str, now: datetime) -> bool:
    """End a reservation (the run finished); False when it held none any more."""
    found = con.execute("UPDATE budget_checks SET status = 'released', ended_at = ? WHERE id = ? "
                        "AND status = 'reserved' RETURNING id", [now, check_id]).fetchall()
    return bool(found)
