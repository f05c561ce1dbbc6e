"""The publisher client (kafka-python) for ADWs, importers and the spool forwarder.

Every event goes out as an :class:`~schemas.events.Envelope` serialised with ``model_dump_json``,
keyed by ``env.subject`` (session id, or run id for ``workflow.*`` events) so session-scoped topics
stay co-partitioned. Producer: ``acks='all'``, idempotent, a few ms of linger for batching.

Sends return a :class:`Delivery` at once; ``flush()`` waits for the broker, after which
``Delivery.acked`` says which records it acknowledged (the forwarder deletes only those).
Every broker or client failure surfaces as :class:`PublishError`.

Secrets are redacted here, before a record leaves the process: every source (the hook forwarder,
the importers through ``outloop replay``, ADWs) publishes through this class, so no token, key or
password reaches a Kafka topic. The rules are those of :mod:`agents.redact` (the agents apply them
again as a second line of defence; redaction is idempotent). Each record is scanned once
(:func:`agents.redact.scan` on its serialised bytes); a record without any redaction anchor is
sent as it is.

* Envelopes (:meth:`Publisher.envelope` and every typed call): ``data`` is redacted value by value
  (:func:`redact_envelope`), so the JSON stays valid and the agents see what they saw before. When
  the redaction changed a tool's input or output, the sizes of the original content travel with it
  (``input_bytes`` / ``output_bytes`` of transcript records, ``outloop_sizes`` in a hook payload):
  sizes and token estimates stay those of the original content.
* Raw records (:meth:`Publisher.raw`): an envelope sent as bytes is redacted as above; anything
  else, and any record carrying an ``outloop-reason`` header (bytes the agents will dead-letter), is
  redacted as text (:func:`agents.redact.redact_bytes`: bytes that are not UTF-8 stay as they are),
  so a dead letter's bytes are the redacted bytes. The record key and header values are redacted as
  text too.

A record larger than the producer's ``max_request_size`` (the broker's record limit, 16 MiB by
default) is never sent as it is and never stops the caller: :meth:`Publisher.envelope` sends in its
place its first :data:`~streams.codec.DEAD_LETTER_RAW_MAX` bytes, keyed by its subject, with the
headers ``outloop-reason: too_large`` and ``outloop-detail`` (type, id, subject, size, limit, how much
was kept), so the agents turn it into a ``too_large`` dead letter (:func:`too_large_headers`).
``oversize="raise"`` raises :class:`RecordTooLarge` instead.

``Publisher(..., redact=False)`` turns this off; it exists for tests and benchmarks that need the
unredacted reference.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaProducer
from kafka import errors as kerr
from kafka.admin import NewTopic
from pydantic import ValidationError

from outloop.schemas.events import (
    Envelope,
    EventType,
    ToolCall,
    ToolResultRecord,
    ToolUseRecord,
    UsageRecord,
    WorkflowEnded,
    WorkflowPhaseChanged,
    WorkflowStarted,
)
from outloop.schemas.sizes import SIZES_KEY, hook_sizes, json_size, text_size
from outloop.schemas.topics import TOPICS, TopicCatalogue
from outloop.streams.codec import DEAD_LETTER_RAW_MAX
from outloop.streams.redact import ALL, redact_bytes, redact_json, scan
from outloop.streams.spool import uuid7

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024


class PublishError(RuntimeError):
    """The broker did not take a record (unreachable, timed out, refused). ``cause`` is the client's
    own exception when there is one."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class RecordTooLarge(PublishError):
    """This record can never be sent as it is (larger than the producer's ``max_request_size``)."""


class Delivery:
    """The fate of one send. ``acked`` is True once the broker acknowledged the record (``acks=all``)."""

    __slots__ = ("topic", "key", "id", "_future")

    def __init__(self, topic: str, key: bytes | None, id: str | None, future: Any) -> None:
        self.topic = topic
        self.key = key
        self.id = id
        self._future = future

    @property
    def done(self) -> bool:
        return bool(self._future.is_done)

    @property
    def acked(self) -> bool:
        return bool(self._future.is_done and self._future.succeeded())

    @property
    def error(self) -> PublishError | None:
        if not self._future.is_done or self._future.succeeded():
            return None
        return _wrap(self._future.exception, f"send to {self.topic} failed")

    def get(self, timeout: float | None = None) -> Any:
        """Block until acknowledged; returns kafka-python's ``RecordMetadata`` (topic, partition,
        offset). Raises :class:`PublishError`."""
        try:
            return self._future.get(timeout=timeout)
        except kerr.KafkaError as exc:
            raise _wrap(exc, f"send to {self.topic} failed") from exc

    def __repr__(self) -> str:
        state = "acked" if self.acked else ("failed" if self.done else "pending")
        return f"Delivery(topic={self.topic!r}, id={self.id!r}, {state})"


def _wrap(exc: BaseException | None, what: str) -> PublishError:
    if isinstance(exc, PublishError):
        return exc
    if isinstance(exc, kerr.MessageSizeTooLargeError):
        return RecordTooLarge(f"{what}: {exc}", exc)
    return PublishError(f"{what}: {exc}", exc)


def too_large_headers(env: Envelope, size: int, limit: int, kept: int) -> dict[str, bytes]:
    """The headers that make the agents dead-letter a record as ``too_large``: the envelope fields
    that can be kept (type, id, subject) and the sizes, in words (they end up in ``detail``)."""
    detail = (f"{env.type.value} {env.id} of {env.subject}: {size:,} bytes, over the record limit of "
              f"{limit:,} bytes; raw truncated to its first {kept:,} bytes")
    return {"outloop-reason": b"too_large", "outloop-detail": detail.encode(),
            "outloop-type": env.type.value.encode(), "outloop-id": env.id.encode()}


def _now() -> datetime:
    return datetime.now(UTC)


# -- redaction --------------------------------------------------------------------------------------
def redact_envelope(env: Envelope, only: frozenset[str] | None = ALL) -> Envelope:
    """``env`` with the secrets of its ``data`` redacted (``env`` itself when there were none), and
    the sizes of the original content added where a tool's input or output changed. ``only``: what
    :func:`agents.redact.scan` found in the serialised envelope (default: search everything)."""
    data = env.data
    clean = redact_json(data, only)
    if clean == data:
        return env
    kind = env.type
    if kind is EventType.HOOK_EVENT:
        if isinstance(data.get("tool_name"), str) and SIZES_KEY not in data:
            clean[SIZES_KEY] = hook_sizes(data)
    elif kind is EventType.TOOL_USE:
        if data.get("input_bytes") is None and clean.get("tool_input") != data.get("tool_input"):
            clean["input_bytes"] = json_size(data.get("tool_input"))
    elif kind is EventType.TOOL_RESULT:
        text = data.get("output_text")
        if data.get("output_bytes") is None and isinstance(text, str) and clean.get("output_text") != text:
            clean["output_bytes"] = text_size(text)
    return env.model_copy(update={"data": clean})


def redact_envelope_bytes(env: Envelope, value: bytes | None = None) -> bytes:
    """The bytes to publish for ``env`` (``value``: its serialisation, when already made)."""
    if value is None:
        value = env.model_dump_json().encode()
    only = scan(value)
    if not only:
        return value
    clean = redact_envelope(env, only)
    return value if clean is env else clean.model_dump_json().encode()


def redact_record(value: bytes, dead_letter: bool = False) -> bytes:
    """Bytes of a raw record, redacted: an envelope value by value (it stays a valid envelope),
    anything else, or anything ``dead_letter`` (sent with an ``outloop-reason``), as text."""
    only = scan(value)
    if not only:
        return value
    if not dead_letter and value[:1] == b"{":
        try:
            env = Envelope.model_validate(orjson.loads(value))
        except (orjson.JSONDecodeError, ValidationError):
            pass
        else:
            clean = redact_envelope(env, only)
            return value if clean is env else clean.model_dump_json().encode()
    return redact_bytes(value)


class Publisher:
    """Publishes outloop events. Thread-safe for sends (kafka-python's producer is)."""

    def __init__(
        self,
        bootstrap: str,
        catalogue: TopicCatalogue = TOPICS,
        partitions: int = 4,
        *,
        prefix: str | None = None,
        replication_factor: int = 1,
        linger_ms: int = 5,
        client_id: str = "outloop-publisher",
        timeout: float = 10.0,
        max_request_size: int = DEFAULT_MAX_REQUEST_BYTES,
        redact: bool = True,
        oversize: str = "dead_letter",
        **producer_config: Any,
    ) -> None:
        """``prefix`` is a shorthand for ``catalogue=TopicCatalogue(prefix)``. ``timeout`` bounds each
        wait on the broker (connect, metadata, request); a record not acknowledged within
        ``3 * timeout`` fails. ``redact=False`` publishes secrets as they are (tests and benchmarks
        only). ``oversize``: ``"dead_letter"`` sends a record over ``max_request_size`` as a
        ``too_large`` dead letter (see the module docstring), ``"raise"`` raises
        :class:`RecordTooLarge`. Extra keyword arguments go to ``KafkaProducer``."""
        if oversize not in ("dead_letter", "raise"):
            raise ValueError("oversize must be 'dead_letter' or 'raise'")
        self.oversize = oversize
        self.max_request_size = max_request_size
        self.too_large = 0  # records sent as too_large dead letters instead of themselves
        self.bootstrap = bootstrap
        self.redact = redact
        self.catalogue = TopicCatalogue(prefix=prefix) if prefix is not None else catalogue
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.timeout = timeout
        ms = int(timeout * 1000)
        config: dict[str, Any] = dict(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_request_size=max_request_size,
            bootstrap_timeout_ms=ms,
            max_block_ms=ms,
            request_timeout_ms=ms,
            delivery_timeout_ms=3 * ms + linger_ms,
        )
        config.update(producer_config)
        try:
            self._producer: KafkaProducer | None = KafkaProducer(**config)
        except kerr.KafkaError as exc:
            raise PublishError(f"cannot connect to Kafka at {bootstrap}: {exc}", exc) from exc

    # -- topics -------------------------------------------------------------------------------
    def ensure_topics(self) -> list[str]:
        """Create every topic of the catalogue that does not exist yet, with ``partitions``
        partitions; returns the names created. Existing topics are left as they are."""
        wanted = [t.name for t in self.catalogue.all()]
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id="outloop-admin",
                request_timeout_ms=int(self.timeout * 1000),
            )
        except (kerr.KafkaError, OSError) as exc:
            msg = f"cannot reach Kafka at {self.bootstrap} to create topics: {exc}"
            raise PublishError(msg, exc) from exc
        created: list[str] = []
        try:
            existing = set(admin.list_topics())
            for name in wanted:
                if name in existing:
                    continue
                try:  # one by one: kafka-python raises on the first "already exists" of a batch
                    admin.create_topics([NewTopic(name, self.partitions, self.replication_factor)])
                    created.append(name)
                except kerr.TopicAlreadyExistsError:
                    pass  # created concurrently by another client
        except kerr.KafkaError as exc:
            raise PublishError(f"creating topics on {self.bootstrap} failed: {exc}", exc) from exc
        finally:
            with contextlib.suppress(Exception):
                admin.close()
        return created

    # -- sending ------------------------------------------------------------------------------
    def topic_for(self, type: EventType | str) -> str:
        """``workflow.*`` events go to the workflows topic, everything else to the events topic."""
        kind = str(type)
        return self.catalogue.workflows.name if kind.startswith("workflow.") else self.catalogue.events.name

    def envelope(self, env: Envelope, *, partition: int | None = None) -> Delivery:
        value = env.model_dump_json().encode()
        if self.redact:
            value = redact_envelope_bytes(env, value)
        key = env.subject.encode()
        topic = self.topic_for(env.type)
        try:
            return self._send(topic, key, value, env.id, partition=partition)
        except RecordTooLarge:
            if self.oversize == "raise":
                raise
            return self._send_too_large(topic, key, env, value, partition)

    def _send_too_large(self, topic: str, key: bytes, env: Envelope, value: bytes,
                        partition: int | None) -> Delivery:
        """The stand-in of a record too large to send: its first bytes (already redacted), to be
        dead-lettered as ``too_large`` by the agents, under the record's own key and partition."""
        kept = value[:DEAD_LETTER_RAW_MAX]
        headers = too_large_headers(env, len(value), self.max_request_size, len(kept))
        log.warning("%s", headers["outloop-detail"].decode())
        self.too_large += 1
        return self._send(topic, key, kept, env.id, partition=partition, headers=list(headers.items()))

    def raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes] | None = None,
        *,
        partition: int | None = None,
    ) -> Delivery:
        """Bytes sent as they are, secrets redacted: records that are not valid events (the agents
        dead-letter them) or envelopes serialised elsewhere (see the module docstring)."""
        if self.redact:
            value = redact_record(value, dead_letter=bool(headers and "outloop-reason" in headers))
            key = redact_bytes(key) if key else key
            headers = {k: redact_bytes(v) if v else v for k, v in headers.items()} if headers else headers
        hdrs = list(headers.items()) if headers else None
        return self._send(topic, key, value, None, headers=hdrs, partition=partition)

    def _require(self) -> KafkaProducer:
        if self._producer is None:
            raise PublishError("publisher is closed")
        return self._producer

    def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        id: str | None,
        *,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Delivery:
        producer = self._require()
        try:
            future = producer.send(topic, value=value, key=key, headers=headers, partition=partition)
        except kerr.KafkaError as exc:
            raise _wrap(exc, f"send to {topic} failed") from exc
        return Delivery(topic, key, id, future)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent so far is acknowledged or failed. Raises
        :class:`PublishError` when that takes longer than ``timeout`` seconds."""
        try:
            self._require().flush(timeout)
        except kerr.KafkaError as exc:
            raise PublishError(f"flush to {self.bootstrap} did not complete within {timeout}s", exc) from exc

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` s, then close; records still pending are abandoned (their
        deliveries fail), never waited for without bound."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=timeout)
        except kerr.KafkaError:
            # kafka-python's close() raises when its flush times out and leaves the sender thread
            # running; stop it without sending what is left.
            sender = getattr(producer, "_sender", None)
            if sender is not None:
                sender.force_close()
                sender.join(timeout)
            producer._closed = True  # type: ignore[attr-defined]
            log.warning("publisher closed with unacknowledged records (broker %s)", self.bootstrap)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- one call per event type --------------------------------------------------------------
    def hook_event(
        self,
        payload: Mapping[str, Any],
        received_at: datetime | str | None = None,
        id: str | None = None,
        *,
        source: str = "hook",
    ) -> Delivery:
        """A Claude Code hook payload, lossless. ``id`` should be made once (a UUIDv7) and reused when
        the same payload is sent again; a new one is made when it is None."""
        session = payload.get("session_id")
        if not isinstance(session, str) or not session:
            raise ValueError("a hook payload needs a non-empty string session_id")
        env = Envelope(
            id=id or uuid7(),
            type=EventType.HOOK_EVENT,
            source=source,
            time=received_at if received_at is not None else _now(),
            subject=session,
            data=dict(payload),
        )
        return self.envelope(env)

    def tool_use(
        self, record: ToolUseRecord, *, source: str = "transcript", id: str | None = None
    ) -> Delivery:
        """id: the ``tool_use_id``."""
        return self._typed(EventType.TOOL_USE, record, record.session_id, id or record.tool_use_id,
                           record.timestamp, source)

    def tool_result(
        self, record: ToolResultRecord, *, source: str = "transcript", id: str | None = None
    ) -> Delivery:
        """id: ``<tool_use_id>:result``."""
        return self._typed(EventType.TOOL_RESULT, record, record.session_id,
                           id or f"{record.tool_use_id}:result", record.timestamp, source)

    def tool_call(self, call: ToolCall, *, id: str | None = None) -> Delivery:
        """id: ``ToolCall.id``; source: ``ToolCall.source``."""
        return self._typed(EventType.TOOL_CALL, call, call.session_id, id or call.id,
                           call.ended_at or call.started_at, call.source)

    def usage(self, record: UsageRecord, *, id: str | None = None) -> Delivery:
        """id: ``UsageRecord.id`` (``message.id:requestId``)."""
        return self._typed(EventType.USAGE, record, record.session_id, id or record.id,
                           record.timestamp, record.source)

    def workflow_started(
        self,
        run_id: str,
        workflow: str,
        *,
        session_id: str | None = None,
        started_at: datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
        source: str = "adw",
        id: str | None = None,
    ) -> Delivery:
        """id: ``<run_id>:started``."""
        rec = WorkflowStarted(run_id=run_id, workflow=workflow, session_id=session_id,
                              started_at=started_at or _now(), attributes=dict(attributes or {}))
        return self._typed(EventType.WORKFLOW_STARTED, rec, run_id, id or f"{run_id}:started",
                           rec.started_at, source)

    def workflow_phase_changed(
        self,
        run_id: str,
        phase: str,
        seq: int,
        *,
        at: datetime | None = None,
        source: str = "adw",
        id: str | None = None,
    ) -> Delivery:
        """id: ``<run_id>:<seq>``."""
        rec = WorkflowPhaseChanged(run_id=run_id, phase=phase, seq=seq, at=at or _now())
        return self._typed(EventType.WORKFLOW_PHASE_CHANGED, rec, run_id, id or f"{run_id}:{seq}",
                           rec.at, source)

    def workflow_ended(
        self,
        run_id: str,
        status: str,
        *,
        ended_at: datetime | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        cost_usd: float | None = None,
        source: str = "adw",
        id: str | None = None,
    ) -> Delivery:
        """id: ``<run_id>:ended``."""
        rec = WorkflowEnded.model_validate(dict(
            run_id=run_id, status=status, ended_at=ended_at or _now(), input_tokens=input_tokens,
            output_tokens=output_tokens, cache_read_input_tokens=cache_read_input_tokens,
            cache_creation_input_tokens=cache_creation_input_tokens, cost_usd=cost_usd,
        ))
        return self._typed(EventType.WORKFLOW_ENDED, rec, run_id, id or f"{run_id}:ended",
                           rec.ended_at, source)

    def _typed(
        self, type: EventType, record: Any, subject: str, id: str, time: datetime | None, source: str
    ) -> Delivery:
        env = Envelope(id=id, type=type, source=source, time=time, subject=subject,
                       data=record.model_dump(mode="json"))
        return self.envelope(env)
