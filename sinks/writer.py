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

from outloop.sinks.decode import Folded, Message, TopicPartition, fold
from outloop.sinks.projection import Projection, enrichers, requests, stale_projections, store_version
from outloop.sinks.query import Bounded, confine, run_bounded, run_readonly, use_utc
from outloop.sinks.schema import migrate
from outloop.sinks.snapshot import Publisher as SnapshotPublisher
from outloop.sinks.upsert import KeyConflict, Optimism, apply
from outloop.streams.codec import Rejected, dead_letter
from outloop.streams.heaps import gc_paused

log = logging.getLogger("outloop.sink")

REFRESH_BUDGET_S = 2.0  # the time the refreshes after one batch may take, where a projection can stop early
READ_RETRIES = 3  # a read that ran out of memory beside a write, or was cut by a reopen, runs again this often
READ_RETRY_S = 0.2  # first wait before a read runs again, doubled each time
REOPEN_WAIT_S = 10.0  # how long a reopen waits for the reads it interrupted to let go of their cursors


def _out_of_memory(exc: BaseException) -> bool:
    """An out-of-memory error, or one raised while handling one (a statement after it in the aborted
    transaction says "transaction is aborted": the cause is in the chain)."""
    oom = getattr(duckdb, "OutOfMemoryException", None)
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        text = str(found).lower()
        if (oom is not None and isinstance(found, oom)) or "could not allocate" in text \
                or "failed to pin block" in text:
            return True
        found = found.__cause__ or found.__context__
    return False


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
                 memory_limit: str | None = None, projections: list[Projection] | None = None) -> None:
        """``projections``: the derived tables to keep up to date (``sinks.projection``), handed in by the
        layer that composes the product (``outloop.projections.standard``); none by default."""
        self.path = Path(path)
        self.memory_limit = memory_limit
        self._memory_bytes: int | None = None
        self.clock = clock or (lambda: datetime.now(UTC))
        self._con: duckdb.DuckDBPyConnection | None = None
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._reads_done = threading.Condition(self._read_lock)
        self._reading: set[duckdb.DuckDBPyConnection] = set()  # cursors of reads in flight
        self._generation = 0  # closings so far: a read whose connections were closed under it runs again
        self.totals = WriteResult()
        self.optimism = Optimism()
        self.projections = list(projections or ())
        self._enrich = enrichers(self.projections)
        self._requests = requests(self.projections)
        self.snapshots = SnapshotPublisher(self.path)  # for the router: published after each refresh
        self._snapshot_owed = True
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
            self._rebuild_stale()
        return self

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._close_connections()

    def _close_connections(self) -> None:
        """Close both connections (the read lock held): the reads in flight are interrupted first and
        waited for (DuckDB refuses to close a connection whose cursor is busy); they run again on the
        connections opened next, if any (see :meth:`_read`)."""
        self._generation += 1  # before the interrupts: each read then knows why it stopped
        for cursor in list(self._reading):
            with suppress(duckdb.Error):
                cursor.interrupt()
        deadline = time.monotonic() + REOPEN_WAIT_S
        while self._reading and self._reads_done.wait(max(deadline - time.monotonic(), 0.0)):
            pass
        if self._reading:
            log.warning("sink: %d reads still running after %.0f s; closing anyway", len(self._reading),
                        REOPEN_WAIT_S)
        for con in (self._reader, self._con):
            if con is not None:
                with suppress(duckdb.Error):
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
            self._close_connections()
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
                        self._mark(con, folded)
                except KeyConflict as conflict:  # rolled back: again, that table upserted
                    self.optimism.conflicted(conflict.table)
                    continue
                self.optimism.written(plain, rows)
                for p in self.projections:
                    p.committed()
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

    def _mark(self, con: duckdb.DuckDBPyConnection, folded: Folded) -> None:
        """Every projection's dirty marks, in the batch's transaction. A batch carrying a flush marker
        also brings every projection up to date in that transaction, so whoever sees the marker reads
        final rows (``outloop replay`` waits for its markers)."""
        for p in self.projections:
            p.mark(con, folded)
        if folded.rows["flush_markers"]:
            now = time.monotonic()
            for p in self.projections:
                if p.flush(con, now):
                    self._snapshot_owed = True

    def _refresh_due(self) -> None:
        """The refreshes the projections say are due, each in a transaction of its own after the batch
        committed (so the batch's rows are visible without waiting for them), together within
        REFRESH_BUDGET_S where a projection can stop early. The dirty marks were committed with the batch:
        a crash in between leaves the refresh owed, never lost. An essential projection's failure is
        raised (the caller retries the batch); any other is logged."""
        now = time.monotonic()
        deadline = now + REFRESH_BUDGET_S
        for p in self.projections:
            if not p.due(now):
                continue
            try:
                with self.transaction() as con:
                    changed = p.refresh(con, now, deadline)
            except Exception as exc:
                if p.essential:
                    raise
                log.error("sink: %s refresh failed: %r", p.name, exc, exc_info=True)
                continue
            p.committed()
            self._snapshot_owed = self._snapshot_owed or changed

    def _rebuild_stale(self) -> None:
        """At open: every projection whose derived rows are of another version is rebuilt (in
        transactions of its choosing, so a crash keeps what was done), then its version stored."""
        for p in list(stale_projections(self.con, self.projections)):
            p.rebuild(self)
            with self.transaction() as con:
                store_version(con, p.name, p.version)

    def request(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Answer a projection's request (e.g. a workflow budget check) in a write transaction of its
        own, serialized with every write: it reads everything written before it."""
        answer = self._requests.get(name)
        if answer is None:
            raise KeyError(f"no projection answers {name!r}")
        with self._write_lock, self.transaction() as con:
            return answer(con, self.clock(), *args, **kwargs)

    def check_budget(self, workflow: str, estimated_tokens: int | None = None, run_id: str | None = None,
                     ttl_s: float | None = None) -> dict[str, Any]:
        """A workflow budget check (the quota projection's ``budget`` request)."""
        answer: dict[str, Any] = self.request("budget", workflow, estimated_tokens, run_id, ttl_s)
        return answer

    def release_budget(self, check_id: str) -> bool:
        return bool(self.request("budget_release", check_id))

    def take_quota_decisions(self, latest: bool = False) -> list[dict[str, Any]]:
        """The throttle decisions the quota projection stored since the last call, oldest first, for the
        consumer to publish; with ``latest``, at least the latest stored one. None without that projection."""
        if "quota_decisions" not in self._requests:
            return []
        found: list[dict[str, Any]] = self.request("quota_decisions", latest)
        return found

    def discover(self, config_path: str | None = None) -> list[dict[str, Any]]:
        """Run discovery (the discovery projection's ``discover`` request); the current recommendations."""
        found: list[dict[str, Any]] = self.request("discover", config_path)
        return found

    def recommendation_feedback(self, rec: str, action: str, rule: str | None = None, url: str | None = None,
                                note: str | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("rec_feedback", rec, action, rule=rule, url=url, note=note)
        return answer

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
        return self._read(lambda cursor, _left: run_readonly(cursor, sql, params, max_rows))

    def query_bounded(self, sql: str, params: Any, max_rows: int, timeout: float) -> Bounded:
        """:meth:`query` within a time limit and a row cap (see ``sinks.query.run_bounded``): what the
        worker's HTTP endpoint runs."""
        return self._read(lambda cursor, left: run_bounded(cursor, sql, params, max_rows, left, timeout), timeout)

    def _read(self, run: Callable[[duckdb.DuckDBPyConnection, float], Any], timeout: float | None = None) -> Any:
        """``run(cursor, seconds left)`` on a cursor of its own. Reads share DuckDB's memory with the writer:
        one that ran out of memory beside a write, or that a reopen (:meth:`_grow_memory`) interrupted, runs
        again after a pause, at most READ_RETRIES times and within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = READ_RETRY_S
        for attempt in range(READ_RETRIES + 1):
            with self._read_lock:
                if self._reader is None:
                    raise SinkError("the sink is closed")
                cursor = self._reader.cursor()
                generation = self._generation
                self._reading.add(cursor)
            left = float("inf") if deadline is None else deadline - time.monotonic()
            try:
                return run(cursor, left)
            except Exception as exc:
                reopened = generation != self._generation
                if not (reopened or _out_of_memory(exc)) or attempt == READ_RETRIES \
                        or (deadline is not None and time.monotonic() + pause >= deadline):
                    raise
                log.info("sink: a read runs again after %r", exc)
            finally:
                with self._read_lock:
                    self._reading.discard(cursor)
                    with suppress(duckdb.Error):
                        cursor.close()
                    self._reads_done.notify_all()
            time.sleep(pause)
            pause *= 2
        raise AssertionError("unreachable")
