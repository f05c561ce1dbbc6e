"""Drains the hook spool into Kafka, at least once.

Each spool record becomes a ``hook.event`` :class:`~schemas.events.Envelope` (id = the shim's
UUIDv7, time = its receive stamp, source ``hook``, subject = the payload's ``session_id``) on the
events topic. Bytes that are not a JSON object with a string ``session_id`` are sent raw, with
``outloop-*`` headers saying why, so the agents dead-letter them: nothing is dropped. A record
leaves the spool only after the broker acknowledged its send; a crash (even SIGKILL) at any moment
resends at most the unacknowledged ones, under the same id, and the sink drops the duplicates.

Acknowledged records go to the spool's sent journal (``sent/``) instead of being deleted, because
the embedded broker keeps its log in memory: after it restarts, :meth:`Forwarder.broker_restarted`
makes the next pass send the journal again (same ids: the sink drops what it already stored).
Entries leave the journal when the supervisor proved them stored in DuckDB (``drop_sent``), or by
age and size (``journal_max_age``, ``journal_max_bytes``; a size of 0 deletes on acknowledgement).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from outloop.schemas.events import Envelope, EventType
from outloop.schemas.topics import TopicCatalogue
from outloop.streams.publisher import Delivery, Publisher, PublishError, RecordTooLarge, redact_envelope, redact_record
from outloop.streams.settings import Settings
from outloop.streams.spool import Spool, SpoolCorrupt, SpoolRecord
from outloop.streams.truncated import recover

log = logging.getLogger(__name__)

UNKNOWN_KEY = b"unknown"
TRUNCATED_KEY = "outloop_truncated"  # added to ``data`` when a payload had to be shrunk to fit
DEFAULT_MAX_RECORD_BYTES = 1_000_000  # below Apache Kafka's default message.max.bytes (1 MiB)
_MIN_KEEP_CHARS = 1024
_SUBJECT_MAX = 512
_UNPARSED = object()


def envelope_for(rec: SpoolRecord) -> Envelope | str:
    """The envelope of a spool record, or the reason it cannot be one (``not_json``,
    ``not_object``, ``no_session_id``, ``envelope``). A payload the shim cut keeps the fields that
    arrived whole, marked ``outloop_truncated`` (:mod:`streams.truncated`); one with a tail is
    never read whole, as its head and tail joined can be valid JSON with the middle missing. A record
    the router wrote (``source`` "router") holds an envelope already (a routing decision, rule or
    tool): it is sent as it is."""
    obj: Any = _UNPARSED
    if not rec.tail:
        with contextlib.suppress(orjson.JSONDecodeError):
            obj = orjson.loads(rec.raw)
    if obj is _UNPARSED:
        obj = recover(rec.raw, rec.tail, rec.trunc) if rec.trunc else None
        if obj is None:
            return "not_json"
    if not isinstance(obj, dict):
        return "not_object"
    if rec.source == "router":
        try:
            return Envelope.model_validate(obj)
        except ValidationError:
            return "envelope"
    session = obj.get("session_id")
    if not isinstance(session, str) or not session or len(session) > _SUBJECT_MAX:
        return "no_session_id"
    try:
        return Envelope(id=rec.id, type=EventType.HOOK_EVENT, source="hook", time=rec.received_at,
                        subject=session, data=obj)
    except ValidationError:
        return "envelope"


def _string_leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[int, tuple[str, ...]]]:
    out: list[tuple[int, tuple[str, ...]]] = []
    if isinstance(value, str):
        out.append((len(value), path))
    elif isinstance(value, dict):
        for k, v in value.items():
            out.extend(_string_leaves(v, (*path, str(k))))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_string_leaves(v, (*path, str(i))))
    return out


def _get_parent(root: Any, path: tuple[str, ...]) -> tuple[Any, Any]:
    node = root
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = path[-1]
    return node, int(last) if isinstance(node, list) else last


def shrink_envelope(env: Envelope, limit: int) -> Envelope | None:
    """A copy of ``env`` whose JSON fits in ``limit`` bytes, made by cutting the longest strings of
    ``data`` (each cut listed in ``data["outloop_truncated"]`` as ``{"path", "chars"}`` with the
    original length); None when cutting strings cannot make it fit."""
    data = copy.deepcopy(env.data)
    cuts: list[dict[str, Any]] = []
    for _ in range(64):
        if cuts:
            data[TRUNCATED_KEY] = cuts
        candidate = env.model_copy(update={"data": data})
        size = len(candidate.model_dump_json().encode())
        if size <= limit:
            return candidate
        leaves = [leaf for leaf in _string_leaves({k: v for k, v in data.items() if k != TRUNCATED_KEY})
                  if leaf[0] > _MIN_KEEP_CHARS]
        if not leaves:
            return None
        length, path = max(leaves)
        keep = max(_MIN_KEEP_CHARS, length - (size - limit) - 256)
        parent, key = _get_parent(data, path)
        parent[key] = parent[key][:keep]
        dotted = ".".join(path)
        previous = next((c for c in cuts if c["path"] == dotted), None)
        if previous is None:
            cuts.append({"path": dotted, "chars": length})
    return None


class Forwarder:
    """Spool -> Kafka. ``run_once`` drains what is in the spool now; ``run_forever`` polls, backing
    off while the broker is unreachable. One forwarder per spool folder."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        spool: Spool | str | Path | None = None,
        bootstrap: str | None = None,
        catalogue: TopicCatalogue | None = None,
        partitions: int | None = None,
        batch_size: int = 500,
        batch_bytes: int = 32 * 1024 * 1024,
        flush_timeout: float = 15.0,
        timeout: float = 5.0,
        stale_after: float = 300.0,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        publisher_factory: Callable[[], Publisher] | None = None,
        journal_max_age: float | None = None,
        journal_max_bytes: int | None = None,
        prune_every: float = 30.0,
    ) -> None:
        if settings is None and (spool is None or bootstrap is None):
            settings = Settings.from_env()
        if settings is not None:
            spool = spool if spool is not None else settings.spool
            bootstrap = bootstrap or settings.broker
            catalogue = catalogue or TopicCatalogue(prefix=settings.topic_prefix)
            partitions = partitions or settings.partitions
            if journal_max_age is None:
                journal_max_age = settings.journal_max_age
            if journal_max_bytes is None:
                journal_max_bytes = int(settings.journal_max_mb * 2**20)
        if not bootstrap and publisher_factory is None:
            raise ValueError("the forwarder needs a broker address (OUTLOOP_BROKER)")
        assert spool is not None
        self.spool = spool if isinstance(spool, Spool) else Spool(spool)
        self.bootstrap = bootstrap
        self.catalogue = catalogue or TopicCatalogue()
        self.partitions = partitions or 4
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.flush_timeout = flush_timeout
        self.timeout = timeout
        self.stale_after = stale_after
        self.max_record_bytes = max_record_bytes
        self._factory = publisher_factory
        self._publisher: Publisher | None = None
        self.forwarded = 0  # records acknowledged (journaled or deleted), over the forwarder's life
        self.raw_sent = 0  # of which sent raw (to be dead-lettered)
        self.last_error: PublishError | None = None
        self.journal_max_age = 86400.0 if journal_max_age is None else journal_max_age
        self.journal_max_bytes = 512 * 2**20 if journal_max_bytes is None else journal_max_bytes
        self.prune_every = prune_every
        self.resent = 0  # journal entries queued again after broker restarts
        self._next_prune = 0.0
        self._restarted = threading.Event()
        self._paused = threading.Event()
        self._abandon = threading.Event()  # the broker is gone: stop waiting for acknowledgements
        self._idle = threading.Event()  # set while no pass runs
        self._idle.set()
        self.on_transcript: Callable[[str], None] | None = None  # told every transcript a payload names

    @property
    def keep_sent(self) -> bool:
        return self.journal_max_bytes > 0

    # -- control by a supervisor (any thread) -------------------------------------------------
    def broker_restarted(self) -> int:
        """The broker lost its log: move the sent journal back into the spool (the next pass sends
        it again, oldest first, with what arrived meanwhile) and reconnect. Call it while paused
        (:meth:`pause`), so that no pass moves records into the journal at the same time. Returns
        how many journal entries will be sent again."""
        n = self.spool.requeue_sent()
        self.resent += n
        self._restarted.set()
        if n:
            log.warning("forwarder: the broker restarted; sending the %d events of the sent journal again", n)
        return n

    def pause(self, timeout: float = 30.0) -> bool:
        """Start no new pass; True once no pass is running (within ``timeout``)."""
        self._paused.set()
        return self._idle.wait(timeout)

    def abandon(self) -> None:
        """The broker is gone (a supervisor saw it exit): the running pass stops waiting for
        acknowledgements at once instead of after ``flush_timeout``; what was not acknowledged stays
        in the spool, to be sent again. Call it before :meth:`pause`; :meth:`resume` clears it."""
        self._abandon.set()

    def resume(self) -> None:
        self._abandon.clear()
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def idle(self) -> bool:
        """Paused with no pass running: nothing is in flight."""
        return self._paused.is_set() and self._idle.is_set()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Forwarder:
        return cls(settings, **kwargs)

    # -- connection ---------------------------------------------------------------------------
    def _connect(self) -> Publisher:
        if self._publisher is None:
            if self._factory is not None:
                pub = self._factory()
            else:
                assert self.bootstrap
                pub = Publisher(self.bootstrap, self.catalogue, self.partitions, timeout=self.timeout,
                                client_id="outloop-forwarder")
            try:
                pub.ensure_topics()  # again after every reconnect: a restarted memory broker forgot them
            except PublishError:
                pub.close(timeout=0)
                raise
            self._publisher = pub
        return self._publisher

    def _drop(self) -> None:
        pub, self._publisher = self._publisher, None
        if pub is not None:
            pub.close(timeout=0)

    def close(self) -> None:
        pub, self._publisher = self._publisher, None
        if pub is not None:
            pub.close(timeout=self.flush_timeout)

    # -- one record ---------------------------------------------------------------------------
    def _send_raw(self, pub: Publisher, key: bytes, value: bytes, reason: str, rid: str,
                  received_at: str | None) -> Delivery:
        headers = {"outloop-reason": reason.encode(), "outloop-spool-id": rid.encode(),
                   "outloop-source": b"hook"}
        if received_at:
            headers["outloop-received-at"] = received_at.encode()
        if len(value) > self.max_record_bytes:
            headers["outloop-truncated-from"] = str(len(value)).encode()
            value = redact_record(value, dead_letter=True)[: self.max_record_bytes]  # a cut secret escapes the rules
        return pub.raw(self.catalogue.events.name, key, value, headers)

    def _send_record(self, pub: Publisher, rec: SpoolRecord) -> Delivery:
        env = envelope_for(rec)
        if self.on_transcript is not None and not isinstance(env, str):
            for name in ("transcript_path", "agent_transcript_path"):
                path = env.data.get(name)
                if isinstance(path, str) and path:
                    self.on_transcript(path)
        if isinstance(env, str):
            return self._send_raw(pub, UNKNOWN_KEY, rec.raw, env, rec.id, rec.received_at)
        # cheap pre-check first: serialise only when the payload is near the limit
        if len(rec.raw) + 512 > self.max_record_bytes and (
            len(env.model_dump_json().encode()) > self.max_record_bytes
        ):
            small = shrink_envelope(redact_envelope(env), self.max_record_bytes)  # redact before cutting
            if small is None:
                return self._send_raw(pub, env.subject.encode(), rec.raw, "too_large", rec.id,
                                      rec.received_at)
            env = small
        return pub.envelope(env)

    # -- passes -------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Send every record in the spool now, delete those the broker acknowledged; returns how
        many. Raises :class:`PublishError` (after deleting what was acknowledged) when the broker
        fails; records not acknowledged stay in the spool for the next pass."""
        if self._restarted.is_set():
            self._restarted.clear()
            self._drop()  # a fresh producer for the new broker: ids, sequence numbers, metadata
        self.spool.sweep(self.stale_after)
        self.prune_journal()
        ids = self.spool.ready()
        if not ids:
            return 0
        try:
            pub = self._connect()
        except PublishError as exc:
            self.last_error = exc
            raise
        done = 0
        start = 0
        while start < len(ids):
            sent: list[tuple[str, Delivery, bool]] = []
            size = 0
            error: PublishError | None = None
            i = start
            try:
                while i < len(ids) and len(sent) < self.batch_size and size < self.batch_bytes:
                    rid = ids[i]
                    i += 1
                    try:
                        rec = self.spool.read(rid)
                    except FileNotFoundError:
                        continue
                    except SpoolCorrupt as bad:
                        log.warning("%s; sending it raw", bad)
                        size += len(bad.data)
                        sent.append((rid, self._send_raw(pub, UNKNOWN_KEY, bad.data, "spool_corrupt", rid,
                                                         None), True))
                        continue
                    size += len(rec.raw)
                    try:
                        d = self._send_record(pub, rec)
                    except RecordTooLarge as exc:  # the producer's own limit is below ours
                        log.error("spool record %s is too large to send; kept: %s", rid, exc)
                        continue
                    sent.append((rid, d, d.id is None))
                self._flush(pub)
            except PublishError as exc:
                error = exc
            for rid, d, is_raw in sent:
                if d.acked:
                    self.spool.ack(rid, keep=self.keep_sent)
                    done += 1
                    self.forwarded += 1
                    self.raw_sent += is_raw
                elif error is None:
                    error = d.error or PublishError(f"record {rid} not acknowledged")
            if error is not None:
                self.last_error = error
                self._drop()  # a fresh producer next time: sequence numbers, metadata, buffers
                raise error
            start = i
        self.last_error = None
        return done

    def prune_journal(self, now: float | None = None, force: bool = False) -> int:
        """Apply the journal's age and size bounds (at most every ``prune_every`` s unless ``force``)."""
        mono = time.monotonic()
        if not force and mono < self._next_prune:
            return 0
        self._next_prune = mono + self.prune_every
        n = self.spool.prune_sent(self.journal_max_age, self.journal_max_bytes, now)
        if n:
            log.info("forwarder: pruned %d sent-journal entries by age/size", n)
        return n

    FLUSH_SLICE = 0.25  # seconds: how often a flush looks whether it was abandoned

    def _flush(self, pub: Publisher) -> None:
        """``pub.flush(flush_timeout)`` in slices, ended early by :meth:`abandon`."""
        deadline = time.monotonic() + self.flush_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                pub.flush(max(min(left, self.FLUSH_SLICE), 0.0))
                return
            except PublishError as exc:
                if self._abandon.is_set():
                    raise PublishError("the broker is gone: waiting for acknowledgements abandoned",
                                       exc.cause) from exc
                if left <= self.FLUSH_SLICE:
                    raise PublishError(f"flush to {pub.bootstrap} did not complete within {self.flush_timeout}s",
                                       exc.cause) from exc

    def _pass(self) -> int:
        self._idle.clear()
        try:
            if self._paused.is_set():
                return 0
            return self.run_once()
        finally:
            self._idle.set()

    def _sleep(self, stop: threading.Event, seconds: float) -> None:
        """Wait ``seconds`` or until stopped or told that the broker restarted."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and not self._restarted.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            stop.wait(min(left, 0.1))

    def run_forever(
        self,
        stop: threading.Event,
        idle: float = 0.5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        """Drain until ``stop`` is set: poll the spool every ``idle`` s; while the broker fails,
        wait ``backoff`` s doubling up to ``max_backoff``."""
        delay = backoff
        try:
            while not stop.is_set():
                if self._paused.is_set():
                    stop.wait(min(idle, 0.1))
                    continue
                if self._restarted.is_set():
                    delay = backoff
                try:
                    n = self._pass()
                except PublishError as exc:
                    log.warning("forwarder: broker unavailable (%s); retrying in %.1fs", exc, delay)
                    self._sleep(stop, delay)
                    delay = min(delay * 2, max_backoff)
                    continue
                except Exception:  # a bug must not end the forwarder thread silently
                    log.exception("forwarder pass failed; retrying in %.1fs", delay)
                    self._drop()
                    self._sleep(stop, delay)
                    delay = min(delay * 2, max_backoff)
                    continue
                delay = backoff
                if n == 0:
                    stop.wait(idle)
        finally:
            self.close()
