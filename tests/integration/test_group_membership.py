"""A stopping worker does not send LeaveGroup (``streams.app.stay_in_group_on_close``): on the embedded
broker a leader that leaves while its group rebalances wedges the group for good, while a member
that is evicted for missed heartbeats hands its leadership over. Checked against a real
Tansu with two consumers in one group: the one that stops sends no LeaveGroup (aiokafka's own stop,
the control, sends one), and the other still takes over all its partitions, once the stopped one's
session timed out.

The wedge itself needs a rebalance in a particular state when the leader leaves; it was seen in
the worker-kill scenario (``tests/reliability/test_crashes.py``) in 3 runs of about 30 under load,
each time with the departed second worker named leader for minutes, never with a killed one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests import SESSION_TIMEOUT

pytestmark = pytest.mark.integration

SESSION_MS = round(SESSION_TIMEOUT * 1000)  # eviction, and Tansu's first join, wait on it: short here
LEAVE_GROUP = 13  # the LeaveGroup API key


@pytest.fixture
def restore_leave() -> Iterator[None]:
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    original = GroupCoordinator._maybe_leave_group
    try:
        yield
    finally:
        GroupCoordinator._maybe_leave_group = original  # type: ignore[method-assign]


async def _two_then_one(bootstrap: str) -> tuple[list[int], float]:
    """Two consumers share a fresh group of 4 partitions; the first one stops. Returns the API keys
    of the requests the first one sent while stopping (13 is LeaveGroup) and the seconds until the
    second one held all 4 partitions."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic, group = f"gm-{uuid.uuid4().hex[:8]}", f"gm-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=SESSION_MS,
                                rebalance_timeout_ms=4000, heartbeat_interval_ms=SESSION_MS // 3)

    async def until(cond: Any, what: str, timeout: float = 90.0) -> float:
        t0 = time.monotonic()
        while not cond():
            assert time.monotonic() - t0 < timeout, what
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    first, second = consumer(), consumer()
    await first.start()
    try:
        await until(lambda: len(first.assignment()) == 4, "the first consumer never held the partitions")
        await second.start()
        await until(lambda: len(first.assignment()) == 2 == len(second.assignment()), "the two never shared")
        sent: list[int] = []
        send = first._client.send

        async def recording(node_id: int, request: Any, **kw: Any) -> Any:
            sent.append(request.API_KEY)
            return await send(node_id, request, **kw)

        first._client.send = recording  # type: ignore[method-assign]
        await first.stop()
        waited = await until(lambda: len(second.assignment()) == 4, "the second never took over")
        return sent, waited
    finally:
        await first.stop()
        await second.stop()


def test_a_stopping_worker_stays_in_the_group_until_evicted(fresh_broker: Any, restore_leave: None) -> None:
    from outloop.streams.app import create_app, stay_in_group_on_close
    from outloop.streams.settings import Settings

    # control: aiokafka's own stop sends LeaveGroup
    sent, waited_left = asyncio.run(_two_then_one(fresh_broker.bootstrap))
    assert LEAVE_GROUP in sent, sent

    # OUTLOOP_LEAVE_GROUP=1 keeps aiokafka's leave
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    original = GroupCoordinator._maybe_leave_group
    create_app(Settings.from_env({"OUTLOOP_LEAVE_GROUP": "1"}), fresh_broker.bootstrap)
    assert GroupCoordinator._maybe_leave_group is original

    # the default: a stopping worker's consumer sends no LeaveGroup, and the other member still
    # takes its partitions over, once the broker evicted it
    create_app(Settings.from_env({}), fresh_broker.bootstrap)
    stay_in_group_on_close()  # idempotent
    sent, waited_evicted = asyncio.run(_two_then_one(fresh_broker.bootstrap))
    assert LEAVE_GROUP not in sent, sent
    assert waited_evicted < SESSION_MS / 1000 + 30, f"taken over only after {waited_evicted:.1f}s"
    print(f"\nthe remaining consumer held every partition {waited_left:.1f}s after the other one left, "
          f"{waited_evicted:.1f}s after it stopped without leaving (session timeout {SESSION_MS} ms)")
