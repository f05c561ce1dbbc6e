"""Publishing the quota's throttle decisions on their topic (``<prefix>.throttle-decisions``).

The sink decides (``sinks.quota.refresh_quota``) and stores each decision in ``throttle_decisions`` in
one transaction; once committed, the decision is published here as a ``quota.decision`` envelope
(``schemas.events.QuotaDecision``), keyed ``quota`` (one partition holds them all, in order), so that
subscribers - dashboards, an orchestrator pausing its workflows - follow the decisions without reading
the database. The sink does not read the topic back: it already stored what it publishes.

Delivery is at least once: a decision the broker did not take stays queued (at most
``writer.QUOTA_OUTBOX``) and is sent again with the next batch; after a start the latest stored
decision is published again. Envelope ids are the decisions' ids, so a subscriber drops repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from outloop.schemas.events import EventType, QuotaDecision
from outloop.streams.importers import make_envelope

log = logging.getLogger("outloop.sink")
KEY = b"quota"
TIMEOUT_S = 5.0


def envelope_bytes(decision: dict[str, Any]) -> bytes:
    """The ``quota.decision`` envelope of one stored decision (raises pydantic's ValidationError)."""
    model = QuotaDecision.model_validate(decision)
    env = make_envelope(model, id=model.id, type=EventType.QUOTA_DECISION, source="quota", subject="quota",
                        time=model.at)
    return env.model_dump_json().encode()


class DecisionPublisher:
    """The sink's producer of throttle decisions (see the module doc)."""

    def __init__(self, bootstrap: str, topic: str, client_id: str) -> None:
        self.bootstrap, self.topic, self.client_id = bootstrap, topic, client_id
        self.pending: list[dict[str, Any]] = []
        self.published = 0
        self._producer: AIOKafkaProducer | None = None
        self._created = False

    async def publish(self, decisions: list[dict[str, Any]]) -> None:
        """Send the pending decisions and ``decisions``; on a broker error, or when the broker does not
        answer within ``TIMEOUT_S`` (the sink's loop waits for this), keep them for the next call."""
        self.pending = (self.pending + decisions)[-100:]
        if not self.pending:
            return
        try:
            await asyncio.wait_for(self._send(), TIMEOUT_S)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.info("sink: throttle decisions not published yet (%r); %d pending", exc, len(self.pending))
            await self.stop()  # a producer cut off mid-start is not reused

    async def _send(self) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, client_id=self.client_id,
                                              acks="all", request_timeout_ms=int(TIMEOUT_S * 1000))
            await self._producer.start()
        await self._create_topic()
        while self.pending:
            decision = self.pending[0]
            try:
                value = envelope_bytes(decision)
            except ValueError as exc:  # never expected: the decision came from agents.quota_risk
                log.error("sink: throttle decision %r not published: %s", decision.get("id"), exc)
            else:
                await self._producer.send_and_wait(self.topic, value, key=KEY)
                self.published += 1
            self.pending.pop(0)

    async def _create_topic(self) -> None:
        if self._created:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id + "-admin")
        await admin.start()
        try:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(self.topic, 1, 1)])
        finally:
            await admin.close()
        self._created = True

    async def stop(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
