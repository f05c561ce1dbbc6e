"""Quota materialization and workflow budget checks, run by the sink (the one writer of the database).

Projection (:func:`refresh_quota`): the quota status is stored at *points* of event time, one per hour
of data: the time ``W`` of the latest usage record (or rate-limit stop: ``agents.quota_signals``; a stop
writes no usage) within that hour. At each point every window's status is computed by
:func:`agents.quota_status.assess` from the usage of the 40 days before ``W`` and the official figures
seen up to ``W`` (status-line figures and rate-limit stops), and stored in ``quota_snapshots`` and
``quota_forecasts`` (keyed by window and ``W``) and ``throttle_decisions`` (keyed by ``W``, window and
level). A status at ``W`` reads only facts at or before ``W``, so every batch marks dirty the hour of the
earliest fact it brings - a usage, status-line or API-error time, or the time of a usage record whose API
response (its turn state, ``sinks.quotarows``) it brings (``pattern_dirty`` kind ``quota``, in its
transaction), and the refresh recomputes every point from that hour on, replacing the hour's rows (its
``W`` may have moved). Points, keys and values are thus functions of the events alone: a second replay of
the same input, or one cut into other batches, stores the same rows, whenever the refreshes ran. Live,
events come in time order and a refresh recomputes the current hour's point; a late import recomputes
the points after it, within the writer's time budget (the rest stays marked for the next refresh).

Budgets (:func:`check_budget`, :func:`release_budget`): each check runs in one write transaction of
the sink, so checks are serialized: the reservations a check reads include every one made before it
(see ``agents.quota_budget``). Reservations end when released, when their run's ``workflow.ended``
is stored, or when they expire.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from outloop.agents.quota import UsageRow, window_at
from outloop.agents.quota_budget import answer, estimate_from_history
from outloop.agents.quota_risk import QuotaConfig
from outloop.agents.quota_signals import merge_official, rate_limit_stops
from outloop.agents.quota_status import OFFICIAL_MAX_AGE_S, assess, official_from
from outloop.sinks.quotarows import USAGE_COLUMNS
from outloop.sinks.upsert import unregister_quietly

log = logging.getLogger("outloop.sink")
QUOTA_REFRESH_S = 5.0
HISTORY = timedelta(days=40)
DEFAULT_TTL_S = 3600.0


_USAGE = f"""SELECT {USAGE_COLUMNS}
WHERE u."timestamp" IS NOT NULL AND u."timestamp" > ? AND u."timestamp" <= ? ORDER BY u."timestamp", u.id"""
_OFFICIAL = """SELECT received_at, CAST((payload->'rate_limits') AS VARCHAR) FROM hook_events
WHERE hook_event_name = 'Status' AND received_at <= ? AND received_at >= ? AND (payload->'rate_limits') IS NOT NULL
ORDER BY received_at DESC, id LIMIT 20"""  # only those that can still count (OFFICIAL_MAX_AGE_S), not every one
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


_POINTS = """SELECT date_trunc('hour', t) AS hour, max(t) AS w FROM (
    SELECT "timestamp" AS t FROM usage WHERE "timestamp" >= ?
    UNION ALL SELECT received_at FROM hook_events WHERE hook_event_name = 'ApiError'
        AND payload->>'error' = 'rate_limit' AND received_at >= ?) GROUP BY 1 ORDER BY 1"""
QUOTA_TABLES = ("quota_snapshots", "quota_forecasts", "throttle_decisions")
POINT = timedelta(hours=1)


def _hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def mark_quota(con: duckdb.DuckDBPyConnection, usage: pa.Table, hooks: pa.Table, messages: pa.Table) -> bool:
    """Mark dirty the hour of the earliest time a batch's staged rows (in its transaction) bring to a status:
    usage times, status-line and API-error times, and the times of the usage rows whose API response (its turn
    state, ``sinks.quotarows``) came; whether a mark was made."""
    times = [pc.min(usage.column("timestamp")).as_py()] if usage.num_rows else []
    if messages.num_rows:
        times.append(pc.min(messages.column("timestamp")).as_py())
        con.register("quota_msgs", messages.select(["id"]))
        try:
            row = con.execute('SELECT min(u."timestamp") FROM usage u JOIN quota_msgs m ON m.id = u.id').fetchone()
        finally:
            unregister_quietly(con, "quota_msgs")
        times.append(row[0] if row else None)
    if hooks.num_rows:
        names = hooks.column("hook_event_name")
        signals = hooks.filter(pc.fill_null(pc.is_in(names, pa.array(["Status", "ApiError"])), False))
        if signals.num_rows:
            times.append(pc.min(signals.column("received_at")).as_py())
    found = [t for t in times if t is not None]
    if not found:
        return False
    con.execute("INSERT INTO pattern_dirty VALUES ('quota', ?) ON CONFLICT DO NOTHING", [_hour(min(found)).isoformat()])
    return True


def mark_all(con: duckdb.DuckDBPyConnection) -> None:
    """Forget every stored status and mark the first hour of the data dirty (a rebuild)."""
    for table in QUOTA_TABLES:
        con.execute(f"DELETE FROM {table}")
    row = con.execute('SELECT least((SELECT min("timestamp") FROM usage), (SELECT min(received_at) FROM hook_events '
                      "WHERE hook_event_name IN ('Status', 'ApiError')))").fetchone()
    if row and row[0] is not None:
        con.execute("INSERT INTO pattern_dirty VALUES ('quota', ?) ON CONFLICT DO NOTHING", [_hour(row[0]).isoformat()])


def refresh_quota(con: duckdb.DuckDBPyConnection, config: QuotaConfig, decisions: list[dict[str, Any]] | None = None,
                  deadline: float | None = None) -> bool:
    """Recompute the points the marks owe (see the module doc): the latest first (the current status: its
    throttle decision is appended to ``decisions``, for the sink to publish), then the others oldest first,
    stopping after the point that passes ``deadline`` (``time.monotonic``; None: no limit) with the rest
    still marked. Returns whether every point owed was computed."""
    row = con.execute("SELECT min(key) FROM pattern_dirty WHERE kind = 'quota'").fetchone()
    if not row or row[0] is None:
        return True
    since = datetime.fromisoformat(row[0])
    points = con.execute(_POINTS, [since, since]).fetchall()
    if not points:
        con.execute("DELETE FROM pattern_dirty WHERE kind = 'quota'")
        return True
    latest = _point(con, config, *points[-1], forecasts=True)
    con.execute('DELETE FROM quota_forecasts WHERE "at" < ?', [points[-1][0]])  # the latest point's only
    if latest is not None and decisions is not None:
        decisions.append(latest)
    for hour, at in points[:-1]:
        if deadline is not None and time.monotonic() > deadline:
            con.execute("DELETE FROM pattern_dirty WHERE kind = 'quota'")
            con.execute("INSERT INTO pattern_dirty VALUES ('quota', ?)", [hour.isoformat()])
            return False
        _point(con, config, hour, at, forecasts=False)
    con.execute("DELETE FROM pattern_dirty WHERE kind = 'quota'")
    return True


def _point(con: duckdb.DuckDBPyConnection, config: QuotaConfig, hour: datetime, at: datetime, *,
           forecasts: bool) -> dict[str, Any] | None:
    """Replace the rows of the hour starting at ``hour`` by the status at ``at`` (with its forecasts at the
    latest point only: they are simulated, and only the current one is read); its throttle decision."""
    for table in QUOTA_TABLES:
        con.execute(f'DELETE FROM {table} WHERE "at" >= ? AND "at" < ?', [hour, hour + POINT])
    try:
        return _store(con, config, at, forecasts)
    except OverflowError:  # a time near year 1 or 9999: no window fits in the calendar
        log.info("sink: no quota status at %s (out of the calendar's range)", at)
        return None


def _store(con: duckdb.DuckDBPyConnection, config: QuotaConfig, at: datetime, forecasts: bool = True
           ) -> dict[str, Any]:
    seen = con.execute(_OFFICIAL, [at, at - timedelta(seconds=OFFICIAL_MAX_AGE_S)]).fetchall()
    official = merge_official(official_from(seen, at),
                              rate_limit_stops(con.execute(_STOPS, [at, at - timedelta(days=8)]).fetchall(), at))
    status: dict[str, Any] = assess(_rows(con, at - HISTORY, at), at, config, official, forecasts=forecasts).as_dict()
    for w in status["windows"]:
        used, fc, off = w["used"], w["forecast"], w.get("official") or {}
        key = f"{w['window']}:{at.isoformat()}"
        con.execute("INSERT OR REPLACE INTO quota_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                    " ?, ?)", [key, at, w["window"], w["start"], w["end"], used["input"], used["output"],
                               used["cache_write"], used["cache_read"], used["total"], used["cost_usd"],
                               used["requests"], w["tokens_per_hour"], w["recent_tokens_per_hour"],
                               w["limit_tokens"], w["percent"], w["basis"], off.get("used_percentage"),
                               off.get("resets_at")])
        if not forecasts:
            continue
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
