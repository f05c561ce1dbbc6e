"""The sessions agent's hand-over (``agents.sessions.HandOver``) against Faust's own ack accounting: a
real Faust app's consumer (never started, no broker) decides which input offset it would commit.

What must hold: an offset becomes committable only once its batch is processed and delivered;
batches are processed and acked in the order Faust handed them over, whatever order their work
finishes in; a batch that fails, and every batch after it, stays unacked (Faust would commit none of
their offsets) and the failure is reported once; an actor cancelled while it waits (a rebalance)
leaves the batches to finish. Faust's part is played as it plays it: the conductor holds one
reference per message for the stream, and ``take_events`` acks a batch's events when the agent's
loop body returns."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.types.tuples import TP, ConsumerMessage

from outloop.agents.sessions import HandOver

TOPIC = "handover-in"
TP0 = TP(TOPIC, 0)


class Recorder(faust.Sensor):
    """A Faust sensor that records the messages it is told are done (``on_message_out``)."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[int] = []

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        self.out.append(offset)


async def _app() -> tuple[faust.App, Recorder]:
    app = faust.App("handover-test", broker="kafka://127.0.0.1:1")  # never started: nothing connects
    app.topics.add(app.topic(TOPIC, value_serializer="raw"))
    await app.topics._update_indices()  # type: ignore[attr-defined]  # what subscribing does: the topic's acks count for commits
    recorder = Recorder()
    app.sensors.add(recorder)
    return app, recorder


def _batch(app: faust.App, offsets: range) -> list[Any]:
    events = []
    for offset in offsets:
        message = ConsumerMessage(TOPIC, 0, offset, 0.0, 0, {}, b"k", b"v", None, tp=TP0)
        message.incref()  # the conductor's reference for the one stream reading the topic
        events.append(faust.Event(app, b"k", b"v", {}, message))
    return events


def _faust_acks(app: faust.App, events: list[Any]) -> None:
    """What ``take_events`` does once the agent's loop body returns (or raises): ``Stream.ack`` of
    each event, which tells the sensors about a message whose last reference it dropped."""
    for event in events:
        if event.ack():
            message = event.message
            app.sensors.on_message_out(message.tp, message.offset, message)


def _committable(app: faust.App) -> int | None:
    """The offset Faust's consumer would commit for the partition now (None: nothing new)."""
    return app.consumer._new_offset(TP0)  # type: ignore[attr-defined]


class Gated:
    """A batch's work that finishes only when the test says so, recording the order batches ran in."""

    def __init__(self) -> None:
        self.gates: dict[int, asyncio.Event] = {}
        self.started: list[int] = []
        self.fail: set[int] = set()

    async def __call__(self, events: list[Any]) -> None:
        first = events[0].message.offset
        self.started.append(first)
        await self.gates.setdefault(first, asyncio.Event()).wait()
        if first in self.fail:
            raise ConnectionError("the broker did not acknowledge the batch's outputs")

    def release(self, first: int) -> None:
        self.gates.setdefault(first, asyncio.Event()).set()


async def _no_failure(exc: BaseException) -> None:
    raise AssertionError(f"unexpected failure: {exc!r}")


async def _settled(awaitable: Any) -> None:
    await asyncio.wait_for(awaitable, 5)


async def _second_waiting() -> tuple[faust.App, Recorder, Gated, HandOver, list[Any], asyncio.Future[None]]:
    """Two batches (offsets 0-2, 3-5) handed over: the first taken and acked by Faust, its work held;
    the agent waiting in ``take`` of the second. Returns the app, its recorder, the work, the hand-over,
    the second batch and the waiting ``take``."""
    app, recorder = await _app()
    work = Gated()
    hand_over = HandOver(work, app.sensors, _no_failure)
    first, second = _batch(app, range(0, 3)), _batch(app, range(3, 6))
    await hand_over.take(first)  # nothing before it: returns at once
    _faust_acks(app, first)
    taking = asyncio.ensure_future(hand_over.take(second))  # waits for the first batch
    await asyncio.sleep(0.01)
    return app, recorder, work, hand_over, second, taking


def test_offsets_become_committable_only_after_delivery_and_in_order() -> None:
    async def scenario() -> None:
        app, recorder, work, hand_over, second, taking = await _second_waiting()
        assert not taking.done()
        assert work.started == [0]
        assert _committable(app) is None and recorder.out == []

        work.release(0)
        await _settled(taking)
        _faust_acks(app, second)
        await asyncio.sleep(0.01)
        assert work.started == [0, 3]  # the second batch runs now, and is not delivered yet
        assert _committable(app) == 3  # the first batch, and nothing of the second
        assert recorder.out == [0, 1, 2]

        work.release(3)
        await _settled(hand_over.settle())
        assert work.started == [0, 3]
        assert _committable(app) == 6
        assert recorder.out == [0, 1, 2, 3, 4, 5]

    asyncio.run(scenario())


def test_a_batch_whose_work_is_done_first_still_waits_for_the_batch_before_it() -> None:
    async def scenario() -> None:
        app, recorder, work, hand_over, second, taking = await _second_waiting()
        work.release(3)  # the second batch's work would finish at once
        await asyncio.sleep(0.01)
        assert work.started == [0] and _committable(app) is None and recorder.out == []
        work.release(0)
        await _settled(taking)
        _faust_acks(app, second)
        await _settled(hand_over.settle())
        assert work.started == [0, 3] and recorder.out == list(range(6))
        assert _committable(app) == 6

    asyncio.run(scenario())


def test_a_failed_batch_and_every_batch_after_it_stay_unacked() -> None:
    async def scenario() -> None:
        app, recorder = await _app()
        work = Gated()
        failures: list[BaseException] = []

        async def failed(exc: BaseException) -> None:
            failures.append(exc)

        hand_over = HandOver(work, app.sensors, failed)
        first, second, third = _batch(app, range(0, 3)), _batch(app, range(3, 6)), _batch(app, range(6, 9))
        await hand_over.take(first)
        _faust_acks(app, first)
        work.fail.add(0)
        work.release(0)
        with pytest.raises(ConnectionError):
            await _settled(hand_over.take(second))
        _faust_acks(app, second)  # take_events acks when the loop body raises, too
        with pytest.raises(ConnectionError):  # a restarted actor's next batch meets the same failure
            await _settled(hand_over.take(third))
        _faust_acks(app, third)
        with pytest.raises(ConnectionError):
            await _settled(hand_over.settle())

        assert work.started == [0]  # the batches after the failed one were never processed
        assert len(failures) == 1 and isinstance(failures[0], ConnectionError)
        assert _committable(app) is None and recorder.out == []
        assert not any(e.message.acked for e in first + second + third)

    asyncio.run(scenario())


def test_an_actor_cancelled_while_it_waits_leaves_the_batches_to_finish() -> None:
    async def scenario() -> None:
        app, recorder, work, hand_over, second, taking = await _second_waiting()
        taking.cancel()  # Faust cancels the actor on a rebalance
        with pytest.raises(asyncio.CancelledError):
            await taking
        _faust_acks(app, second)
        work.release(0)
        work.release(3)
        await _settled(hand_over.settle())  # the next actor's first take waits the same way
        assert work.started == [0, 3]
        assert _committable(app) == 6 and recorder.out == list(range(6))

    asyncio.run(scenario())
