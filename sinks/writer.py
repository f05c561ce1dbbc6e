"""The one owner of the DuckDB file: batched, idempotent writes and a thread-safe read path.

Each :meth:`DuckSink.write_batch` is one transaction holding the rows of the batch AND the
consumer offsets after it, so a crash replays exactly the batches whose rows are missing and the
upserts (``sinks.upsert``) make a replayed batch a no-op. Records are decoded by ``sinks.decode`` (a
strict msgspec fast path, pydantic for what it does not vouch for) into one Arrow staging table per
table; versions of a key are folded in SQL and go in with one ``INSERT ... ON CONFLICT`` per table, or
a plain ``INSERT`` while the table's batches bring only new keys (``sinks.upsert.Optimism``: a batch
that meets a stored key is rolled back and written again upserted) - never row at a time.

A batch DuckDB or Arrow refuses for a terminal reason (a value it cannot store) is split in halves until the
refused record is alone; that record becomes a ``sink_write`` dead letter and the rest is written.
Transient failures (write conflicts, I/O, memory) are raised for the caller to retry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from outloop.agents.signatures import SIGNATURE_VERSION
from outloop.sinks import context
from outloop.sinks.decode import Folded, Message, TopicPartition, fold
from outloop.sinks.patterns import (
    materialize,
    refresh,
    signature_columns,
    stale_signature_count,
    stale_signature_ids,
)
from outloop.sinks.query import Bounded, confine, run_bounded, run_readonly, use_utc
from outloop.sinks.quota import (
    QUOTA_REFRESH_S,
    check_budget,
    latest_decision,
    quota_config,
    refresh_quota,
    release_budget,
)
from outloop.sinks.schema import migrate
from outloop.sinks.snapshot import Publisher as SnapshotPublisher
from outloop.sinks.upsert import KeyConflict, Optimism, apply
from outloop.streams.codec import Rejected, dead_letter
from outloop.streams.heaps import gc_paused

log = logging.getLogger("outloop.sink")

QUOTA_OUTBOX = 100  # throttle decisions kept for publishing while the broker does not take them
REFRESH_S = 1.0  # patterns and sequences of what changed are recomputed at most this often
SEQUENCE_REFRESH_S = 15.0  # session n-grams are mined again at most this often (and at flush markers)
FULL_REFRESH_S = 60.0  # window counts of quiet patterns are refreshed at least this often
RECOMPUTE_CHUNK = 20_000  # stored tool calls whose signatures are recomputed per transaction (rule change)


def _out_of_memory(exc: BaseException) -> bool:
    oom = getattr(duckdb, "OutOfMemoryException", None)
    text = str(exc).lower()
    return (oom is not None and isinstance(exc, oom)) or "could not allocate" in text or "failed to pin block" in text


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


class ErrorKind(Enum):
    TRANSIENT = "transient"  # retry the same batch later
    TERMINAL = "terminal"  # retrying the same input cannot succeed


_TRANSIENT = tuple(getattr(duckdb, name) for name in (
    "TransactionException", "IOException", "OutOfMemoryException", "InterruptException", "HTTPException",
) if hasattr(duckdb, name))


def classify_error(exc: BaseException) -> ErrorKind:
    """Transient: conflicts, I/O, memory, interrupts. Terminal: everything else (bad data, schema,
    a closed or invalidated database, programming errors)."""
    if isinstance(exc, _TRANSIENT):
        return ErrorKind.TRANSIENT
    return ErrorKind.TERMINAL


class SinkError(RuntimeError):
    """The sink cannot go on (even a dead letter could not be written)."""


@dataclass(frozen=True)
class StoredOffset:
    next_offset: int
    anchor: str | None


@dataclass
class WriteResult:
    records: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    decode_errors: int = 0
    refused: int = 0  # records DuckDB refused, stored as sink_write dead letters

    def add(self, other: WriteResult) -> None:
        self.records += other.records
        self.decode_errors += other.decode_errors
        self.refused += other.refused
        for table, n in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + n


class DuckSink:
    def __init__(self, path: str | Path, clock: Callable[[], datetime] | None = None,
                 memory_limit: str | None = None) -> None:
        self.path = Path(path)
        self.memory_limit = memory_limit
        self._memory_bytes: int | None = None
        self.clock = clock or (lambda: datetime.now(UTC))
        self._con: duckdb.DuckDBPyConnection | None = None
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self.totals = WriteResult()
        self.optimism = Optimism()
        self._enrich = {"tool_calls": signature_columns}
        self._last_full = self._last_refresh = self._last_sequences = 0.0
        self._owed = True  # dirty marks may be waiting (from before a restart): the next refresh looks
        self.snapshots = SnapshotPublisher(self.path)  # for the router: published after each refresh
        self._snapshot_owed = True
        self._quota_config = quota_config()
        self._quota_owed, self._last_quota, self._quota_key = True, 0.0, None
        self._quota_outbox: deque[dict[str, Any]] = deque(maxlen=QUOTA_OUTBOX)  # decisions to publish
        self.open()

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> DuckSink:
        if self._con is None:
            self._con = duckdb.connect(str(self.path))
            if self.memory_limit:
                self._con.execute("SET memory_limit = ?", [self.memory_limit])
                row = self._con.execute("SELECT parse_formatted_bytes(current_setting('memory_limit'))").fetchone()
                self._memory_bytes = int(row[0]) if row else None
            use_utc(self._con)
            migrate(self._con)
            confine(self._con)
            self._reader = self._con.cursor()
            self._recompute_stale_signatures()
        return self

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            for con in (self._reader, self._con):
                if con is not None:
                    con.close()
            self._con = self._reader = None

    def __enter__(self) -> DuckSink:
        return self.open()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise SinkError("the sink is closed")
        return self._con

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        try:
            con.execute("COMMIT")
        except duckdb.Error:  # a commit that failed (e.g. out of memory) leaves the transaction open, aborted
            with suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    # -- writing -----------------------------------------------------------------------------
    def write_batch(self, messages: list[Message],
                    anchors: dict[TopicPartition, str | None] | None = None) -> WriteResult:
        """Upsert the rows of ``messages`` (topic, partition, offset, key, value) and store, in the
        same transaction, the next offset of every partition they came from (with its anchor)."""
        with self._write_lock:
            try:
                result = self._write(messages, anchors or {})
                self._refresh_due()  # before counting: a refresh that fails makes the caller retry the batch
                if self._snapshot_owed:  # after a refresh: confidences (and fidelity) may have changed
                    self.snapshots.publish(self.con)
                    self._snapshot_owed = False
                self.totals.add(result)
            except duckdb.Error as exc:
                self._grow_memory(exc)
                raise
            return result

    def _grow_memory(self, exc: duckdb.Error) -> None:
        """A write that ran out of DuckDB memory doubles the limit (up to half the machine's RAM)
        before the caller retries it: the indexes grow with the database, and a limit that fit a
        young database must not stall an old one. The configuration is locked once open (reads are
        confined), so the connection is reopened with the new limit. The new limit is logged; set
        OUTLOOP_DB_MEMORY to start from it next time."""
        if self._memory_bytes is None or not _out_of_memory(exc):
            return
        ceiling = _physical_memory() // 2
        grown = min(self._memory_bytes * 2, ceiling)
        if grown <= self._memory_bytes:
            log.error("sink: out of DuckDB memory at %d MiB, the ceiling (half the RAM)", grown >> 20)
            return
        log.warning("sink: a write ran out of DuckDB memory at %d MiB; limit raised to %d MiB (set "
                    "OUTLOOP_DB_MEMORY to start there)", self._memory_bytes >> 20, grown >> 20)
        with self._read_lock:
            for con in (self._reader, self._con):
                if con is not None:
                    con.close()
            self._con = self._reader = None
            self.memory_limit = f"{grown}B"
            self.open()

    def _write(self, messages: list[Message], anchors: dict[TopicPartition, str | None]) -> WriteResult:
        if not messages:
            return WriteResult()
        with gc_paused():  # decoding makes Python objects only, and no cycles: see streams.heaps
            folded = fold(messages, self.clock())
        try:
            while True:
                plain = self.optimism.plain()
                try:
                    with self.transaction() as con:
                        rows = apply(con, folded, anchors, plain, self._enrich)
                        self._patterns(con, folded)
                except KeyConflict as conflict:  # rolled back: again, that table upserted
                    self.optimism.conflicted(conflict.table)
                    continue
                self.optimism.written(plain, rows)
                return WriteResult(folded.records, rows, folded.decode_errors)
        except (duckdb.Error, pa.ArrowException, OverflowError, UnicodeError) as exc:
            if classify_error(exc) is ErrorKind.TRANSIENT:
                raise
            if len(messages) == 1:
                return self._refuse(messages[0], exc, anchors)
        half = len(messages) // 2
        result = self._write(messages[:half], anchors)
        result.add(self._write(messages[half:], anchors))
        return result

    def _refuse(self, message: Message, exc: Exception, anchors: dict[TopicPartition, str | None]
                ) -> WriteResult:
        topic, partition, offset, key, value = message
        dl = dead_letter(value, Rejected("sink_write", f"{type(exc).__name__}: {exc}"[:500]),
                         topic, partition, offset, key, now=self.clock())
        folded = Folded()
        folded.records = 1
        folded.add("dead_letters", dl.model_dump())
        folded.offsets[(topic, partition)] = offset + 1
        try:
            with self.transaction() as con:
                rows = apply(con, folded, anchors)
        except duckdb.Error as second:
            raise SinkError(f"cannot store record {topic}:{partition}:{offset} ({exc}) nor its dead letter "
                            f"({second})") from second
        return WriteResult(1, rows, 0, refused=1)

    def _patterns(self, con: duckdb.DuckDBPyConnection, folded: Folded) -> None:
        """Occurrences (and the dirty marks a refresh owes) with every batch, in its transaction. A
        batch carrying a flush marker also refreshes every pattern and sequence in that transaction,
        so whoever sees the marker reads final patterns (``outloop replay`` waits for its markers)."""
        self._quota_owed = True  # refresh_quota itself skips when neither usage nor status events changed
        calls = folded.rows["tool_calls"]
        touched = {t: folded.arrow(t) for t in ("tool_calls", "usage", "hook_events")}
        if context.mark(con, touched):
            self._owed = True
        if calls:
            self._owed = True
            materialize(con, calls.keys(), [v["call_key"] for v in calls.values() if v.get("call_key")],
                        folded.fresh.get("tool_calls"))
        if folded.rows["flush_markers"]:
            refresh(con, True, True)
            context.refresh_context(con)
            self._last_refresh = self._last_full = self._last_sequences = time.monotonic()
            self._snapshot_owed = True
            self._last_quota = 0.0  # the quota projection follows right after this batch commits

    def _refresh_quota_due(self) -> None:
        """The quota projection at most every QUOTA_REFRESH_S after usage or status events arrived, in
        a transaction of its own (a failure is logged, never stops the sink: it is derived data)."""
        if not self._quota_owed or time.monotonic() - self._last_quota < QUOTA_REFRESH_S:
            return
        try:
            decided: list[dict[str, Any]] = []
            with self.transaction() as con:
                key = refresh_quota(con, self._quota_config, self._quota_key, decided)
            self._quota_outbox.extend(decided)  # committed: now it may be published
            self._snapshot_owed = self._snapshot_owed or key != self._quota_key  # the router reads the decision
            self._quota_key = key
        except Exception as exc:
            log.error("sink: quota refresh failed: %r", exc, exc_info=True)
        self._quota_owed, self._last_quota = False, time.monotonic()

    def take_quota_decisions(self, latest: bool = False) -> list[dict[str, Any]]:
        """The throttle decisions stored since the last call, oldest first, for the consumer to publish
        (``sinks.quota_publish``); with ``latest``, at least the latest stored one (after a start: a
        decision stored just before a crash is published again, under its own id)."""
        out = []
        while self._quota_outbox:
            out.append(self._quota_outbox.popleft())
        if latest and not out:
            with self._write_lock, self.transaction() as con:
                found = latest_decision(con)
            out = [found] if found else []
        return out

    def check_budget(self, workflow: str, estimated_tokens: int | None = None, run_id: str | None = None,
                     ttl_s: float | None = None) -> dict[str, Any]:
        """A workflow budget check (``sinks.quota.check_budget``), serialized with every write."""
        with self._write_lock, self.transaction() as con:
            return check_budget(con, self._quota_config, workflow, estimated_tokens, run_id, self.clock(),
                                *(() if ttl_s is None else (ttl_s,)))

    def release_budget(self, check_id: str) -> bool:
        with self._write_lock, self.transaction() as con:
            return release_budget(con, check_id, self.clock())

    def discover(self, config_path: str | None = None) -> list[dict[str, Any]]:
        """Run discovery (``sinks.recommendations``) in a write transaction; the current recommendations."""
        from outloop.agents.discovery import load_config
        from outloop.agents.pricing import active_table
        from outloop.sinks.recommendations import refresh_recommendations

        cfg = load_config(config_path)
        with self._write_lock, self.transaction() as con:
            return refresh_recommendations(con, cfg, active_table())

    def recommendation_feedback(self, rec: str, action: str, rule: str | None = None, url: str | None = None,
                                note: str | None = None) -> dict[str, Any]:
        from outloop.sinks.recommendations import add_feedback

        with self._write_lock, self.transaction() as con:
            return add_feedback(con, rec, action, self.clock(), rule=rule, url=url, note=note)

    def _refresh_due(self) -> None:
        """The periodic refreshes - patterns at most every REFRESH_S, a full one every FULL_REFRESH_S,
        sequences every SEQUENCE_REFRESH_S - in a transaction of their own after the batch
        committed, so the batch's rows are visible without waiting for them. The dirty marks were
        committed with the batch: a crash in between leaves the refresh owed, never lost."""
        self._refresh_quota_due()
        now = time.monotonic()
        if now - self._last_refresh < REFRESH_S:
            return
        full = now - self._last_full >= FULL_REFRESH_S
        sequences = now - self._last_sequences >= SEQUENCE_REFRESH_S
        if not full and not self._owed:  # no tool call since the marks were last cleared: nothing is dirty
            self._last_refresh = now
            return
        with self.transaction() as con:
            refresh(con, full, sequences)
            if sequences:
                context.refresh_context(con)
        self._snapshot_owed = True
        self._last_refresh = now
        if full:
            self._last_full = now
        if sequences:
            self._last_sequences = now
            self._owed = False  # signatures and sessions both refreshed and their marks cleared

    def _recompute_stale_signatures(self) -> None:
        """After a signature rule change (SIGNATURE_VERSION), recompute every stored signature, with
        its occurrence and the pattern state: RECOMPUTE_CHUNK tool calls per transaction, so memory
        stays bounded however large the database, and a crash keeps the chunks done (the next start
        goes on with the rest). Each chunk marks the patterns and sessions it changed dirty in its own
        transaction; a full refresh of patterns and sequences follows. Progress is logged."""
        total = stale_signature_count(self.con)
        if not total:
            return
        log.info("sink: signature rules are now at version %d: recomputing the signatures of %d stored "
                 "tool calls", SIGNATURE_VERSION, total)
        done, started = 0, time.monotonic()
        said = started
        while ids := stale_signature_ids(self.con, RECOMPUTE_CHUNK):
            with self.transaction() as con:
                materialize(con, ids, [])
            done += len(ids)
            if done > total:  # every chunk brings its rows to the current version: this never ends
                raise SinkError(f"recomputing stored signatures does not converge ({done} done of {total})")
            if time.monotonic() - said >= 5.0:
                said = time.monotonic()
                log.info("sink: recomputed %d of %d signatures (%.0f s)", done, total, said - started)
        with self.transaction() as con:
            con.execute("INSERT INTO pattern_dirty SELECT DISTINCT 'session', session_id FROM pattern_occurrences "
                        "ON CONFLICT DO NOTHING")
            refresh(con, full=True)
        log.info("sink: recomputed %d signatures in %.1f s", done, time.monotonic() - started)

    def reset_partition(self, topic: str, partition: int) -> None:
        """The log of ``topic``/``partition`` restarted: read it again from its start."""
        with self._write_lock, self.transaction() as con:
            con.execute('UPDATE consumer_offsets SET next_offset = 0, anchor = NULL '
                        'WHERE topic = ? AND "partition" = ?', [topic, partition])

    def stored_offsets(self) -> dict[TopicPartition, StoredOffset]:
        rows = self.query('SELECT topic, "partition", next_offset, anchor FROM consumer_offsets')[1]
        return {(t, int(p)): StoredOffset(int(n), a) for t, p, n, a in rows}

    # -- reading (any thread) ----------------------------------------------------------------
    def query(self, sql: str, params: Any = None, max_rows: int | None = None
              ) -> tuple[list[str], list[list[Any]]]:
        """One read-only statement (see ``sinks.query``) on a cursor of its own; safe to call from
        other threads while a write runs. Sees committed batches only."""
        with self._read_lock:
            if self._reader is None:
                raise SinkError("the sink is closed")
            cursor = self._reader.cursor()
        try:
            return run_readonly(cursor, sql, params, max_rows)
        finally:
            cursor.close()

    def query_bounded(self, sql: str, params: Any, max_rows: int, timeout: float) -> Bounded:
        """:meth:`query` within a time limit and a row cap (see ``sinks.query.run_bounded``): what the
        worker's HTTP endpoint runs."""
        with self._read_lock:
            if self._reader is None:
                raise SinkError("the sink is closed")
            cursor = self._reader.cursor()
        try:
            return run_bounded(cursor, sql, params, max_rows, timeout)
        finally:
            cursor.close()
