"""The product's projections (``sinks.projection.Projection``): patterns, context efficiency, quota.

Each wraps the SQL and capability code of its module (``patterns``, ``context``, ``quota`` here) in the
interface the writer runs: dirty marks with every batch, a refresh when due, everything final at a flush
marker, a rebuild when its version changes. Their cadences are the ones the writer used to hard-code:

* patterns: dirty patterns at most every REFRESH_S, all of them every FULL_REFRESH_S (window counts move
  with the watermark), session n-grams every SEQUENCE_REFRESH_S; version = the signature rules' version,
  and a rebuild recomputes stored signatures RECOMPUTE_CHUNK tool calls per transaction;
* context: the dirty sessions every CONTEXT_REFRESH_S, chunk by chunk within the writer's time budget;
* quota: at most every QUOTA_REFRESH_S after a batch; it fails open (derived data; a bad refresh is
  logged and never stops the sink), answers the workflow budget checks and hands the consumer the throttle
  decisions it stored (once committed) to publish;
* discovery: recommendations and their feedback, on request only.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from datetime import datetime
from typing import Any

import duckdb

from outloop.agents.discovery import load_config
from outloop.agents.pricing import active_table
from outloop.projections import context
from outloop.projections.patterns import (
    SIGNATURE_VERSION,
    materialize,
    refresh,
    signature_columns,
    stale_signature_count,
    stale_signature_ids,
)
from outloop.projections.quota import (
    QUOTA_REFRESH_S,
    check_budget,
    latest_decision,
    mark_all,
    mark_quota,
    quota_config,
    refresh_quota,
    release_budget,
)
from outloop.projections.recommendations import add_feedback, refresh_recommendations
from outloop.sinks.context import MARK_ALL
from outloop.sinks.decode import Folded
from outloop.sinks.projection import Projection, Writer
from outloop.sinks.writer import SinkError

log = logging.getLogger("outloop.sink")

REFRESH_S = 1.0  # patterns of what changed are recomputed at most this often
SEQUENCE_REFRESH_S = 15.0  # session n-grams are mined again at most this often (and at flush markers)
FULL_REFRESH_S = 60.0  # window counts of quiet patterns are refreshed at least this often
CONTEXT_REFRESH_S = 15.0  # dirty sessions' context tables are measured again at most this often
RECOMPUTE_CHUNK = 20_000  # stored tool calls whose signatures are recomputed per transaction (rule change)
QUOTA_OUTBOX = 100  # throttle decisions kept for publishing while the broker does not take them


class Patterns(Projection):
    """Occurrences, per-signature state and ``operation_patterns``, session n-grams (``patterns``)."""

    name = "patterns"

    def __init__(self) -> None:
        self.enrich = {"tool_calls": signature_columns}
        self._last_full = self._last_refresh = self._last_sequences = 0.0
        self._owed = True  # dirty marks may be waiting (from before a restart): the first refresh looks

    @property
    def version(self) -> str:
        return str(SIGNATURE_VERSION)

    def stale(self, con: duckdb.DuckDBPyConnection, stored: str | None) -> bool:
        """Also when a stored tool call was signed by other rules (each row carries its rule version)."""
        return stored != self.version or stale_signature_count(con) > 0

    def mark(self, con: duckdb.DuckDBPyConnection, batch: Folded) -> None:
        calls = batch.rows["tool_calls"]
        if calls:
            self._owed = True
            materialize(con, calls.keys(), [v["call_key"] for v in calls.values() if v.get("call_key")],
                        batch.fresh.get("tool_calls"))

    def flush(self, con: duckdb.DuckDBPyConnection, now: float) -> bool:
        refresh(con, True, True)
        self._last_refresh = self._last_full = self._last_sequences = now
        return True

    def due(self, now: float) -> bool:
        if now - self._last_refresh < REFRESH_S:
            return False
        if not self._owed and now - self._last_full < FULL_REFRESH_S:  # nothing is dirty
            self._last_refresh = now
            return False
        return True

    def refresh(self, con: duckdb.DuckDBPyConnection, now: float, deadline: float) -> bool:
        full = now - self._last_full >= FULL_REFRESH_S
        sequences = now - self._last_sequences >= SEQUENCE_REFRESH_S
        refresh(con, full, sequences)
        self._last_refresh = now
        if full:
            self._last_full = now
        if sequences:
            self._last_sequences = now
            self._owed = False  # signatures and sessions both refreshed and their marks cleared
        return True

    def rebuild(self, writer: Writer) -> None:
        """After a signature rule change, recompute every stored signature, with its occurrence and the
        pattern state: RECOMPUTE_CHUNK tool calls per transaction, so memory stays bounded however large
        the database, and a crash keeps the chunks done (the next start goes on with the rest). Each chunk
        marks the patterns and sessions it changed dirty; a full refresh follows. Progress is logged."""
        total = stale_signature_count(writer.con)
        if not total:
            return
        log.info("sink: signature rules are now at version %d: recomputing the signatures of %d stored "
                 "tool calls", SIGNATURE_VERSION, total)
        done, started = 0, time.monotonic()
        said = started
        while ids := stale_signature_ids(writer.con, RECOMPUTE_CHUNK):
            with writer.transaction() as con:
                materialize(con, ids, [])
            done += len(ids)
            if done > total:  # every chunk brings its rows to the current version: this never ends
                raise SinkError(f"recomputing stored signatures does not converge ({done} done of {total})")
            if time.monotonic() - said >= 5.0:
                said = time.monotonic()
                log.info("sink: recomputed %d of %d signatures (%.0f s)", done, total, said - started)
        with writer.transaction() as con:
            con.execute("INSERT INTO pattern_dirty SELECT DISTINCT 'session', session_id FROM pattern_occurrences "
                        "ON CONFLICT DO NOTHING")
            refresh(con, full=True)
        log.info("sink: recomputed %d signatures in %.1f s", done, time.monotonic() - started)


class Context(Projection):
    """``context_efficiency``, ``context_outputs``, ``file_reads``, ``cache_breaks``, ``context_profiles``."""

    name = "context"

    def __init__(self) -> None:
        self._owed, self._last = True, 0.0

    def rebuild(self, writer: Writer) -> None:
        with writer.transaction() as con:
            con.execute(MARK_ALL)
        self._owed = True

    def mark(self, con: duckdb.DuckDBPyConnection, batch: Folded) -> None:
        if context.mark(con, {t: batch.arrow(t) for t in ("tool_calls", "usage", "hook_events")}):
            self._owed = True

    def flush(self, con: duckdb.DuckDBPyConnection, now: float) -> bool:
        context.refresh_context(con)
        self._owed, self._last = False, now
        return True

    def due(self, now: float) -> bool:
        return self._owed and now - self._last >= CONTEXT_REFRESH_S

    def refresh(self, con: duckdb.DuckDBPyConnection, now: float, deadline: float) -> bool:
        measured, complete = context.refresh_context(con, deadline=deadline)
        self._owed, self._last = not complete, now
        return measured > 0


class Quota(Projection):
    """``quota_snapshots``, ``quota_forecasts``, ``throttle_decisions`` at event-time points (one per hour of
    data, ``projections.quota``); budget checks; the throttle decisions it stored, for the consumer to publish
    once their transaction committed."""

    name = "quota"
    essential = False

    def __init__(self) -> None:
        self.config = quota_config()
        self._owed, self._last, self._final = True, 0.0, False
        self._pending: list[dict[str, Any]] = []  # stored by a refresh whose transaction has not committed yet
        self._outbox: deque[dict[str, Any]] = deque(maxlen=QUOTA_OUTBOX)  # committed, not yet taken
        self.requests = {"budget": self._budget, "budget_release": self._release, "quota_decisions": self._take}

    @property
    def version(self) -> str:
        return "2"  # statuses at hourly event-time points (1: at the watermark of each refresh)

    def rebuild(self, writer: Writer) -> None:
        with writer.transaction() as con:
            mark_all(con)
        self._owed = True

    def mark(self, con: duckdb.DuckDBPyConnection, batch: Folded) -> None:
        if mark_quota(con, batch.arrow("usage"), batch.arrow("hook_events"), batch.arrow("api_messages")):
            self._owed = True

    def flush(self, con: duckdb.DuckDBPyConnection, now: float) -> bool:
        self._last, self._final = 0.0, True  # the quota refresh follows right after this batch commits, in full
        return False

    def due(self, now: float) -> bool:
        return self._owed and now - self._last >= QUOTA_REFRESH_S

    def refresh(self, con: duckdb.DuckDBPyConnection, now: float, deadline: float) -> bool:
        self._last = now  # a failure waits for the next batch and interval too
        self._pending.clear()
        complete = refresh_quota(con, self.config, self._pending, None if self._final else deadline)
        self._owed, self._final = not complete, False
        return bool(self._pending)  # the router reads the decision

    def committed(self) -> None:
        self._outbox.extend(self._pending)
        self._pending.clear()

    def _take(self, con: duckdb.DuckDBPyConnection, now: datetime, latest: bool = False) -> list[dict[str, Any]]:
        """The decisions stored since the last call, oldest first; with ``latest``, at least the latest
        stored one (after a start: a decision stored just before a crash is published again, under its id)."""
        out = list(self._outbox)
        self._outbox.clear()
        if latest and not out:
            found = latest_decision(con)
            out = [found] if found else []
        return out

    def _budget(self, con: duckdb.DuckDBPyConnection, now: datetime, workflow: str,
                estimated_tokens: int | None = None, run_id: str | None = None, ttl_s: float | None = None
                ) -> dict[str, Any]:
        return check_budget(con, self.config, workflow, estimated_tokens, run_id, now,
                            *(() if ttl_s is None else (ttl_s,)))

    def _release(self, con: duckdb.DuckDBPyConnection, now: datetime, check_id: str) -> bool:
        return release_budget(con, check_id, now)


class Discovery(Projection):
    """Recommendations (``recommendations``, ``discovery``): computed on request, not per batch."""

    name = "discovery"

    def __init__(self) -> None:
        self.requests = {"discover": self._discover, "rec_feedback": self._feedback}

    def _discover(self, con: duckdb.DuckDBPyConnection, now: datetime, config_path: str | None = None
                  ) -> list[dict[str, Any]]:
        return refresh_recommendations(con, load_config(config_path), active_table())

    def _feedback(self, con: duckdb.DuckDBPyConnection, now: datetime, rec: str, action: str,
                  rule: str | None = None, url: str | None = None, note: str | None = None) -> dict[str, Any]:
        return add_feedback(con, rec, action, now, rule=rule, url=url, note=note)


def standard() -> list[Projection]:
    """The product's projections, in refresh order."""
    return [Patterns(), Context(), Quota(), Discovery()]
