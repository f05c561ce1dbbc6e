"""Kafka -> DuckDB: reads every partition of every output topic and hands batches to the sink.

No consumer group: partitions are assigned by hand, positions come from DuckDB's
``consumer_offsets`` (written in the same transaction as the rows), else the log start. Offsets
are never committed to Kafka.

Log restarts. The embedded broker keeps its log in memory: a restart empties every topic and offsets
start again at 0. The consumer notices it two ways and then re-reads the partition from its start
(the upserts make re-reading safe, so no row is lost or counted twice):

* the stored/next offset is beyond the log end (the log restarted and has fewer records): the high
  watermark of every fetch response is compared with the position (ListOffsets is not used: Tansu
  0.6 answers it with the last batch's base offset + 1), and OFFSET_OUT_OF_RANGE errors count too;
* the log restarted and was refilled past the stored offset: each partition keeps an *anchor*, a
  digest of key, value and timestamp of the record at the log's first offset; a probe consumer
  re-reads that record on assignment and periodically, and a different record means a new log.

Topics that do not exist yet are waited for (metadata is refreshed periodically, listing all
topics so that the check itself does not auto-create them); new partitions are picked up the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from outloop.schemas.topics import TopicCatalogue
from outloop.sinks.probe import anchor_of, probe_anchors
from outloop.sinks.quota_publish import DecisionPublisher
from outloop.sinks.writer import DuckSink, ErrorKind, classify_error

log = logging.getLogger("outloop.sink")


class SinkConsumer:
    def __init__(self, bootstrap: str, sink: DuckSink, catalogue: TopicCatalogue, *, max_batch: int = 5000,
                 poll_ms: int = 200, refresh_s: float = 5.0, probe_s: float = 10.0,
                 client_id: str = "outloop-sink", after_write: Callable[[], None] | None = None) -> None:
        self.bootstrap = bootstrap
        self.after_write = after_write  # called after every batch written (the sink process trims its heap)
        self.sink = sink
        self.topics = sorted(t.name for t in catalogue.outputs())
        self.max_batch, self.poll_ms = max_batch, poll_ms
        self.refresh_s, self.probe_s = refresh_s, probe_s
        self.client_id = client_id
        self.positions: dict[TopicPartition, int] = {}  # next offset to read
        self.anchors: dict[TopicPartition, str | None] = {}
        self.log_start: dict[TopicPartition, int] = {}
        self.counters = {"records": 0, "batches": 0, "decode_errors": 0, "refused": 0, "restarts": 0,
                         "write_retries": 0}
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._probe: AIOKafkaConsumer | None = None
        self.last_write: float | None = None
        self.decisions = DecisionPublisher(bootstrap, catalogue.throttle_decisions.name, client_id + "-quota")

    # -- public ------------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        lag = 0
        quota = {"decisions_published": self.decisions.published, "decisions_pending": len(self.decisions.pending)}
        if self._consumer is not None:
            for tp, pos in self.positions.items():
                high = self._consumer.highwater(tp) if tp in self._consumer.assignment() else None
                lag += max(0, (high or 0) - pos)
        age = None if self.last_write is None else round(time.monotonic() - self.last_write, 3)
        return {**self.counters, "partitions": len(self.positions), "lag": lag, "last_write_age_s": age, **quota}

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set. Returns after a clean stop; raises only when the sink
        cannot go on (see :class:`sinks.writer.SinkError`)."""
        self.positions, self.anchors, self.log_start = {}, {}, {}  # from DuckDB, on assignment
        common = {"bootstrap_servers": self.bootstrap, "request_timeout_ms": 10_000}
        self._consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="none",
                                          client_id=self.client_id, fetch_max_wait_ms=self.poll_ms,
                                          max_poll_records=self.max_batch, **common)
        self._probe = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="none",
                                       client_id=self.client_id + "-probe", fetch_max_wait_ms=100,
                                       max_partition_fetch_bytes=64 * 1024, **common)
        self._admin = AIOKafkaAdminClient(client_id=self.client_id + "-admin", **common)
        try:
            for client in (self._consumer, self._probe, self._admin):
                if not await self._start(client, stop):
                    return
            latest = await asyncio.get_running_loop().run_in_executor(None, self.sink.take_quota_decisions, True)
            await self.decisions.publish(latest)  # again after a start: it may not have left before a crash
            await self._loop(stop)
        finally:
            for close in (self._consumer.stop, self._probe.stop, self._admin.close, self.decisions.stop):
                try:
                    await close()
                except Exception as exc:  # never started, or the broker is gone
                    log.debug("sink: closing a client: %r", exc)

    # -- the loop ----------------------------------------------------------------------------
    async def _start(self, client: Any, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            try:
                await client.start()
                return True
            except (KafkaError, OSError) as exc:
                log.info("sink: broker not reachable yet (%s); retrying", exc)
                await _wait(stop, 1.0)
        return False

    async def _loop(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None
        next_refresh = next_probe = 0.0
        while not stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_refresh:
                    if await self._refresh():
                        next_probe = 0.0
                    next_refresh = now + self.refresh_s
                if not self.positions:  # no output topic exists yet
                    await _wait(stop, min(self.refresh_s, 0.5))
                    continue
                if now >= next_probe:
                    next_probe = now + (0.5 if await self._check_logs() else self.probe_s)
                data = await self._consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_batch)
                if not await self._consume(data, stop):
                    return
                if await self._check_high_watermarks():
                    next_probe = 0.0
            except OffsetOutOfRangeError as exc:
                for tp in (exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}):
                    await self._restart(tp, "offset out of range")
                next_probe = 0.0
                continue
            except (KafkaError, OSError, TimeoutError) as exc:
                log.info("sink: broker error %r; refreshing metadata", exc)
                next_refresh = next_probe = 0.0
                await _wait(stop, 0.5)

    async def _consume(self, data: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
                       stop: asyncio.Event) -> bool:
        """Write the records of one fetch; False when stopped before they could be written."""
        messages: list[tuple[str, int, int, bytes | None, bytes | None]] = []
        ends: dict[TopicPartition, int] = {}
        for tp in sorted(data):
            expected = self.positions.get(tp)
            for record in data[tp]:
                if expected is None or record.offset < expected:
                    continue  # prefetched before a seek: not ours any more
                if record.offset == self.log_start.get(tp, 0):
                    self.anchors[tp] = anchor_of(record)
                messages.append((tp.topic, tp.partition, record.offset, record.key, record.value))
                ends[tp] = record.offset + 1
        if not messages:
            return True
        anchors = {(tp.topic, tp.partition): self.anchors.get(tp) for tp in ends}
        if not await self._write(messages, anchors, stop):
            return False
        self.positions.update(ends)
        return True

    async def _write(self, messages: list[Any], anchors: dict[tuple[str, int], str | None],
                     stop: asyncio.Event) -> bool:
        """Write one batch, retrying transient DuckDB errors until written or stopped."""
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                result = await loop.run_in_executor(None, self.sink.write_batch, messages, anchors)
                break
            except Exception as exc:
                if classify_error(exc) is not ErrorKind.TRANSIENT:
                    raise
                if stop.is_set():
                    return False  # not stored: the next start reads it again
                self.counters["write_retries"] += 1
                log.warning("sink: transient write error %r; retrying in %.1fs", exc, delay)
                await _wait(stop, delay)
                delay = min(delay * 2, 10.0)
        self.counters["records"] += result.records
        self.counters["batches"] += 1
        self.counters["decode_errors"] += result.decode_errors
        self.counters["refused"] += result.refused
        self.last_write = time.monotonic()
        await self.decisions.publish(self.sink.take_quota_decisions())  # those the batch's refresh stored
        if self.after_write is not None:
            self.after_write()
        return True

    # -- assignment and log identity ---------------------------------------------------------
    async def _refresh(self) -> bool:
        """Assign every partition of every existing output topic; True when the set changed."""
        assert self._consumer is not None and self._admin is not None
        described = await self._admin.describe_topics()  # all topics: never auto-creates one
        want = {TopicPartition(t["topic"], p["partition"]) for t in described
                if t["topic"] in self.topics and t.get("error_code", 0) == 0 for p in t["partitions"]}
        if want == set(self.positions):
            return False
        stored = await asyncio.get_running_loop().run_in_executor(None, self.sink.stored_offsets)
        self._consumer.assign(sorted(want))
        begin = await self._consumer.beginning_offsets(sorted(want))
        for tp in sorted(want):
            saved = stored.get((tp.topic, tp.partition))
            if tp not in self.positions:
                self.positions[tp] = saved.next_offset if saved else begin[tp]
                self.anchors[tp] = saved.anchor if saved else None
            self.log_start[tp] = begin[tp]
            if self.positions[tp] < begin[tp]:
                log.warning("sink: %s fell behind retention (%d < %d)", tp, self.positions[tp], begin[tp])
                self.positions[tp] = begin[tp]
            self._consumer.seek(tp, self.positions[tp])
        for tp in set(self.positions) - want:
            self.positions.pop(tp)
        log.info("sink: assigned %d partitions of %d topics", len(want), len({tp.topic for tp in want}))
        return True

    async def _check_high_watermarks(self) -> bool:
        """A position beyond the log end the last fetch reported: the log restarted shorter."""
        assert self._consumer is not None
        behind = []
        for tp, position in list(self.positions.items()):
            high = self._consumer.highwater(tp)
            if high is not None and position > high:
                behind.append(tp)
                await self._restart(tp, f"position {position} > high watermark {high}")
        return bool(behind)

    async def _check_logs(self) -> bool:
        """Detect restarted logs; True when one was found."""
        assert self._probe is not None
        restarted = await self._check_high_watermarks()
        wanted = {tp: anchor for tp, anchor in self.anchors.items()
                  if anchor and tp in self.positions and self.positions[tp] > self.log_start.get(tp, 0)}
        for tp, reason in (await probe_anchors(self._probe, wanted)).items():
            await self._restart(tp, reason)
            restarted = True
        return restarted

    async def _restart(self, tp: TopicPartition, reason: str) -> None:
        assert self._consumer is not None
        log.warning("sink: %s-%d restarted (%s); reading it again", tp.topic, tp.partition, reason)
        self.counters["restarts"] += 1
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.sink.reset_partition, tp.topic, tp.partition)
        begin = (await self._consumer.beginning_offsets([tp]))[tp]
        self.anchors[tp] = None
        self.log_start[tp] = self.positions[tp] = begin
        if tp in self._consumer.assignment():
            self._consumer.seek(tp, begin)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
