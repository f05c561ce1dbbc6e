"""Thin Faust agents: decode, fold, emit, dead-letter.

* ``sessions`` reads the session-scoped input topic in batches (``take_events``), folds each batch
  with :class:`agents.pairing.Pairing` and emits hook events, tool calls, usage records and API
  messages to their
  output topics on the partition the input came from (outputs stay co-partitioned and a flush
  marker follows everything its partition produced before it).
* ``workflows`` validates workflow run events and forwards them.
Each batch is folded and delivered while Faust fills the next one (:class:`HandOver`); its input
events are acknowledged only once its outputs are on the broker, batches in order.
Bad records become dead letters with their bytes and a reason; they never stop an agent.
Secrets never leave an agent: each record's raw bytes are scanned once (:func:`agents.redact.scan`)
and, when an anchor occurs, the content it carries onward is redacted (dead letters in the codec).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
import orjson

from outloop.agents.contextwindow import ContextWindows, Window, feed
from outloop.agents.pairing import BatchOut, Pairing, tool_call_json
from outloop.schemas.events import ContextWindow, EventType, Flush
from outloop.streams.app import Topics
from outloop.streams.codec import Decoded, Rejected, dead_letter, decode, encode
from outloop.streams.heaps import gc_paused
from outloop.streams.redact import redact_json, scan
from outloop.streams.settings import Settings

log = logging.getLogger("outloop.agents")


# only these carry content onward (tool results and usage yield sizes, statuses and ids): the others
# are not scanned for secrets, which matters for large transcript tool results during a backfill
_CARRY_CONTENT = frozenset((EventType.HOOK_EVENT, EventType.TOOL_USE, EventType.TOOL_CALL))
_NOTHING: frozenset[str] = frozenset()


def flush_value(marker: str, partition: int) -> bytes:
    return orjson.dumps({"control": "flush", "marker": marker, "partition": partition})


class Emitter:
    """Collects the records of one batch, hands them to the producer and awaits their delivery together.

    Records go straight to the Kafka producer rather than through ``Topic.send``: Faust's
    per-message machinery (future-message wrappers, send sensors, declare checks) cost more than the
    agents' own work. They are appended, in order, to one aiokafka batch per topic and partition
    (``create_batch`` / ``send_batch``: no future per record) - so each partition receives its
    records in the order they were emitted, a flush marker after everything before it. A record
    larger than a batch (512 KB) takes one of its own, as ``send`` would. :meth:`drain` returns once
    every record is delivered (acks=all); :class:`HandOver` acks the inputs only then, so Faust commits
    no input offset whose outputs are not on the broker."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer  # Faust's producer; its aiokafka producer does the sending
        self.pending: list[tuple[str, bytes | None, bytes, int]] = []

    def send(self, topic: faust.TopicT, key: bytes | None, value: bytes, partition: int) -> None:
        self.pending.append((topic.get_topic_name(), key, value, partition))

    async def drain(self) -> None:
        if not self.pending:
            return
        kafka = self.producer._ensure_producer()  # the aiokafka producer Faust started
        open_batches: dict[tuple[str, int], Any] = {}
        delivered: list[Awaitable[Any]] = []

        async def submit(name: str, partition: int) -> None:
            batch = open_batches.pop((name, partition))
            batch.close()  # nothing else may be added to it
            if batch.record_count():
                delivered.append(await kafka.send_batch(batch, name, partition=partition))

        for name, key, value, partition in self.pending:
            batch = open_batches.get((name, partition))
            if batch is None:
                batch = open_batches[(name, partition)] = kafka.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is not None:
                continue
            await submit(name, partition)  # full: send it, start the next one
            batch = open_batches[(name, partition)] = kafka.create_batch()
            batch.append(key=key, value=value, timestamp=None)  # the first record always fits (alone if larger)
        for name, partition in list(open_batches):
            await submit(name, partition)
        self.pending.clear()
        await asyncio.gather(*delivered)


class HandOver:
    """Folds and delivers each batch ``take_events`` yields *after* handing control back to Faust, so
    Faust fills the next batch while this one is processed and its outputs travel to the broker; acks
    the batch's events only once those outputs are delivered.

    ``take_events`` acks a batch's events as soon as the agent's loop body returns, and also when
    the body raises (its ``finally``). So each event's message is held first (``incref``): Faust's ack
    then only drops its own reference, and the final ack - the one that makes an offset committable -
    is made here, after delivery. (The overlap itself did not measurably change throughput: the
    delivery wait it hides was ~9 ms a batch of ~1,100 events, about 6% of the agents' time.)

    One batch at a time: the next starts only when the previous one is delivered and acked. So the
    fold sees batches in order, and acks come in offset order within each partition - Faust commits
    the end of the first run of consecutive acked offsets, and does not reliably notice a hole at the
    head of that run, so it must never see one. A batch whose processing or delivery fails is never
    acked, nor is any batch after it (they are not processed either), so none of their offsets is
    committed: ``on_failure`` (the app's crash) stops the worker, and the next start reads them
    again (at least once; the sink drops the duplicates). Before the hand-over, ``take_events``'
    ``finally`` acked a batch whose delivery had failed."""

    def __init__(self, process: Callable[[list[faust.EventT]], Awaitable[None]],
                 sensors: Any, on_failure: Callable[[BaseException], Awaitable[None]]) -> None:
        self._process = process
        self._sensors = sensors
        self._on_failure = on_failure
        self._tail: asyncio.Future[None] | None = None

    async def take(self, events: Iterable[faust.EventT]) -> None:
        """Hold ``events`` and queue their processing behind the batch before them; return once that
        batch (not this one) is delivered and acked. A failed batch raises here."""
        held = list(events)
        for event in held:  # before anything can raise: from here on only this hand-over acks them
            event.message.incref()
        previous = self._tail
        self._tail = asyncio.ensure_future(self._run(previous, held))
        if previous is not None:
            # shielded: an actor cancelled here (a rebalance, a stop) leaves the batches running
            await asyncio.shield(previous)

    async def settle(self) -> None:
        """Wait until every batch handed over is delivered and acked (a failure raises here)."""
        if self._tail is not None:
            await asyncio.shield(self._tail)

    async def _run(self, previous: asyncio.Future[None] | None, events: list[faust.EventT]) -> None:
        if previous is not None:
            await previous  # a batch before this one failed: this one is neither processed nor acked
        try:
            await self._process(events)
        except asyncio.CancelledError:
            raise  # stopping: not acked, read again by the next worker
        except Exception as exc:
            await self._on_failure(exc)
            raise
        on_out = self._sensors.on_message_out
        for event in events:  # in the order Faust gave them: offset order within each partition
            if event.ack():  # the last reference: the offset may now be committed
                message = event.message
                on_out(message.tp, message.offset, message)


def forwarded_reason(headers: Any) -> str | None:
    """The ``outloop-reason`` header the hook forwarder puts on bytes that are not a hook payload."""
    for k, v in headers.items() if isinstance(headers, dict) else headers or ():
        if k == "outloop-reason" and v:
            return bytes(v).decode("utf-8", "replace")
    return None


def stated_rejection(headers: Any) -> Rejected | None:
    """The rejection a publisher stated in the record's headers (``outloop-reason`` with an
    ``outloop-detail``: a record too large to send, whose stand-in holds only its first bytes), which
    decides over whatever the cut bytes would decode to."""
    found: dict[str, str] = {}
    for k, v in headers.items() if isinstance(headers, dict) else headers or ():
        if k in ("outloop-reason", "outloop-detail") and v:
            found[k] = bytes(v).decode("utf-8", "replace")
    if "outloop-reason" in found and "outloop-detail" in found:
        return Rejected(found["outloop-reason"][:100], found["outloop-detail"][:1000])
    return None


def _key(subject: str) -> bytes:
    return subject.encode()


Message = tuple[str, int, int, bytes | None, bytes | None, Any]  # topic, partition, offset, key, value, headers
Record = tuple[str, bytes | None, bytes, int]  # topic, key, value, partition


@dataclass(frozen=True)
class SessionOutputs:
    """The names of the topics the sessions agent writes."""

    hook_events: str
    tool_calls: str
    usage: str
    dead_letters: str
    routing_decisions: str = "outloop.routing-decisions"
    routing_rules: str = "outloop.routing-rules"
    adw_tools: str = "outloop.adw-tools"
    api_messages: str = ""  # empty: a test's outputs without that topic (no API message is emitted)
    context_windows: str = "outloop.context-windows"
    routing_savings: str = "outloop.routing-savings"

    @classmethod
    def of(cls, topics: Topics) -> SessionOutputs:
        return cls(topics.hook_events.get_topic_name(), topics.tool_calls.get_topic_name(),
                   topics.usage.get_topic_name(), topics.dead_letters.get_topic_name(),
                   topics.routing_decisions.get_topic_name(), topics.routing_rules.get_topic_name(),
                   topics.adw_tools.get_topic_name(), api_messages=topics.api_messages.get_topic_name(),
                   context_windows=topics.context_windows.get_topic_name(),
                   routing_savings=topics.routing_savings.get_topic_name())

    def routing(self) -> tuple[str, str, str, str]:
        return self.routing_decisions, self.routing_rules, self.adw_tools, self.routing_savings

    def flushed(self) -> tuple[str, ...]:
        """The topics a flush marker of the events topic is fanned out to."""
        return tuple(t for t in (self.hook_events, self.tool_calls, self.usage, self.dead_letters, *self.routing(),
                                 self.api_messages, self.context_windows) if t)


# the router's records: already final, passed on as they came (secrets redacted) to their own topic
_ROUTING = {EventType.ROUTING_DECISION: "routing_decisions", EventType.ROUTING_RULE: "routing_rules",
            EventType.ROUTING_TOOL: "adw_tools", EventType.ROUTING_SAVING: "routing_savings"}


def session_records(pairing: Pairing, messages: Iterable[Message], names: SessionOutputs, now: datetime,
                    stats: dict[str, int], windows: dict[int, ContextWindows] | None = None) -> list[Record]:
    """What the sessions agent emits for one batch of input records, in order: decode, fold, encode,
    dead-letter. Pure but for the fold's memory (``pairing``, ``windows`` per partition) and ``stats``;
    ``now`` stamps dead letters. The context windows are fed one input at a time, in each partition's
    order, so how the input is cut into batches changes none of them (``agents.contextwindow``)."""
    out: list[Record] = []
    per_partition: dict[int, BatchOut] = {}
    closed: dict[int, list[Window]] = {}

    def reject(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
               reason: Rejected) -> None:
        dl = dead_letter(value, reason, topic, partition, offset, key, now=now)
        out.append((names.dead_letters, key, encode(dl), partition))
        stats["dead_letters"] += 1

    for topic, partition, offset, key, value, headers in messages:
        result = stated_rejection(headers) or decode(value)
        forwarded = forwarded_reason(headers)
        if forwarded and isinstance(result, Decoded):  # hook input shaped like an envelope: untrusted
            result = Rejected(forwarded, "hook input the forwarder sent raw")
        if not isinstance(result, Decoded):
            reject(topic, partition, offset, key, value, result)
            continue
        kind = result.envelope.type
        if kind.value.startswith("workflow."):
            reject(topic, partition, offset, key, value,
                   Rejected("wrong_topic", f"{kind.value} belongs on the workflow topic"))
            continue
        routed = _ROUTING.get(kind)
        if routed is not None:
            out.append((getattr(names, routed), key, _redacted(value or b"", result), partition))
            stats["events"] += 1
            continue
        batch = per_partition.setdefault(partition, BatchOut())
        secrets = scan(value or b"") if kind in _CARRY_CONTENT else _NOTHING
        try:
            pairing.apply(result.envelope, result.data, batch, secrets=secrets)
        except Exception as exc:  # a bug on one event must not lose the batch: keep it as a dead letter
            log.exception("event %s could not be folded", result.envelope.id)
            reject(topic, partition, offset, key, value, Rejected("agent_error", f"{type(exc).__name__}: {exc}"[:500]))
            continue
        if windows is not None:
            fold = windows.get(partition)
            if fold is None:
                fold = windows[partition] = ContextWindows()
            done = _window_events(fold, result.envelope, result.data,
                                  batch.tool_calls.get(pairing.touched) if pairing.touched else None)
            if done:
                closed.setdefault(partition, []).extend(done)
        if kind is EventType.FLUSH:
            _partition_records(out, names, partition, per_partition.pop(partition), closed.pop(partition, []),
                               windows)
        stats["events"] += 1
    for partition, batch in per_partition.items():
        _partition_records(out, names, partition, batch, closed.pop(partition, []), windows)
    return out


def _window_events(fold: ContextWindows, env: Any, data: Any, view: dict[str, Any] | None) -> list[Window]:
    """Feed one input's share to its partition's context windows (``agents.contextwindow.feed``); returns the
    windows that closed. A sub-agent's API message marks its usage and tool calls as not the main context's
    (its calls re-read nothing of the window, its outputs are loaded but carried by no main call)."""
    events: list[tuple[datetime | None, str, Any]] = []
    kind = env.type
    if kind is EventType.HOOK_EVENT and env.time is not None:
        events.append((env.time, "hook", env))
    if view is not None:
        at = view.get("ended_at") or view.get("started_at")
        if at is not None:
            events.append((at, "tool_call", view))
    elif kind is EventType.USAGE and data.timestamp is not None:
        events.append((data.timestamp, "usage", data))
    elif kind is EventType.MESSAGE and data.is_sidechain:
        events.append((data.timestamp, "message", data))
    return feed(fold, events)


def _partition_records(out: list[Record], names: SessionOutputs, partition: int, batch: BatchOut,
                       closed: list[Window], windows: dict[int, ContextWindows] | None = None) -> None:
    for env in batch.hook_events:
        out.append((names.hook_events, _key(env.subject), encode(env), partition))
    for view in batch.tool_calls.values():
        out.append((names.tool_calls, _key(view["session_id"]), tool_call_json(view), partition))
    for usage in batch.usage.values():
        out.append((names.usage, _key(usage.session_id), encode(usage), partition))
    if names.api_messages:
        for message in batch.messages.values():
            out.append((names.api_messages, _key(message.session_id), encode(message), partition))
    if windows is not None:  # the windows that closed, and at a flush marker every open one as it stands
        shown = closed + (windows[partition].snapshot() if batch.flushes and partition in windows else [])
        for w in shown:
            out.append((names.context_windows, _key(w.session_id), encode(ContextWindow(**w.record())), partition))
    for marker in batch.flushes:
        value = flush_value(marker, partition)
        for t in names.flushed():
            out.append((t, None, value, partition))


def register(app: faust.App, topics: Topics, settings: Settings,
             price: Callable[[Any], float | None] | None) -> None:
    pairing = Pairing(price=price)
    windows: dict[int, ContextWindows] = {}  # per input partition: the sessions agent's context windows
    stats = app_stats(app)
    names = SessionOutputs.of(topics)

    def reject(out: Emitter, ev: faust.EventT, reason: Any) -> None:
        msg = ev.message
        dl = dead_letter(msg.value, reason, msg.topic, msg.partition, msg.offset, msg.key)
        out.send(topics.dead_letters, msg.key, encode(dl), msg.partition)
        stats["dead_letters"] += 1

    async def emit_session_batch(events: Iterable[faust.EventT]) -> None:
        out = Emitter(app.producer)
        messages = ((m.topic, m.partition, m.offset, m.key, m.value, m.headers) for m in (ev.message for ev in events))
        with gc_paused():  # the batch's decode, fold and encode make no cycles: see streams.heaps
            out.pending.extend(session_records(pairing, messages, names, datetime.now(UTC), stats, windows))
        await out.drain()

    async def emit_workflow_batch(events: Iterable[faust.EventT]) -> None:
        out = Emitter(app.producer)
        for ev in events:
            msg = ev.message
            result = stated_rejection(msg.headers) or decode(msg.value)
            if not isinstance(result, Decoded):
                reject(out, ev, result)
            elif result.envelope.type is EventType.FLUSH:
                assert isinstance(result.data, Flush)
                value = flush_value(result.data.marker, msg.partition)
                for t in (topics.workflow_runs, topics.dead_letters):
                    out.send(t, None, value, msg.partition)
            elif not result.envelope.type.value.startswith("workflow."):
                reject(out, ev, Rejected("wrong_topic", f"{result.envelope.type.value} on the workflow topic"))
            else:
                out.send(topics.workflow_runs, msg.key, _redacted(msg.value or b"", result), msg.partition)
                stats["workflow_events"] += 1
        await out.drain()

    async def failed(exc: BaseException) -> None:
        if app.should_stop:  # the producer went away under a batch: it is read again on the next start
            log.info("a batch in flight at shutdown was not delivered (%s); it will be read again", exc)
            return
        log.error("a batch could not be processed or delivered (%s: %s); its events stay unacknowledged "
                  "and the worker stops, to read them again", type(exc).__name__, exc)
        await app.crash(exc)

    # one per agent for the app's life, not per actor: an actor restarted (after a rebalance) waits
    # for the batch its predecessor left in flight, so batches stay in order
    session_batches = HandOver(emit_session_batch, app.sensors, failed)
    workflow_batches = HandOver(emit_workflow_batch, app.sensors, failed)

    async def run(stream: faust.StreamT[bytes], batches: HandOver) -> None:
        try:
            async for events in stream.take_events(  # type: ignore[attr-defined]
                    settings.batch_size, within=settings.batch_within):
                await batches.take(events)
        finally:  # a stop waits for the batch in flight to reach the broker (a failure was reported)
            with suppress(Exception):
                await batches.settle()

    @app.agent(topics.events, name="sessions")
    async def sessions(stream: faust.StreamT[bytes]) -> None:
        await run(stream, session_batches)

    @app.agent(topics.workflows, name="workflows")
    async def workflows(stream: faust.StreamT[bytes]) -> None:
        await run(stream, workflow_batches)


def _redacted(raw: bytes, result: Decoded) -> bytes:
    """The record as it came, or re-encoded with its data redacted when it may hold a secret."""
    secrets = scan(raw)
    if not secrets:
        return raw
    env = result.envelope
    data = redact_json(env.data, secrets)
    return raw if data == env.data else encode(env.model_copy(update={"data": data}))


def app_stats(app: faust.App) -> dict[str, int]:
    existing = getattr(app, "_outloop_stats", None)
    if existing is None:
        existing = {"events": 0, "dead_letters": 0, "workflow_events": 0}
        app._outloop_stats = existing  # type: ignore[attr-defined]
    return existing
