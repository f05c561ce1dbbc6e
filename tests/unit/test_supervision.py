"""The supervisor's decisions (``outloop.supervision``): pure, the
time is passed in."""

from __future__ import annotations

from outloop.supervision import Action, JournalConfirmation, Supervision

MB = 2**20


def observe(s: Supervision, now: float, broker: bool = True, worker: bool = True, rss: int | None = 10 * MB) -> Action:
    return s.observe(now, broker_alive=broker, worker_alive=worker, rss=rss).action


def test_a_dead_broker_is_restarted_until_it_crash_loops() -> None:
    s = Supervision(max_rss=0, max_restarts=3, window=600)
    assert observe(s, 0.0) is Action.NONE
    assert [observe(s, t, broker=False) for t in (10.0, 20.0, 30.0)] == [Action.RESTART] * 3
    d = s.observe(40.0, broker_alive=False, worker_alive=False, rss=None)
    assert d.action is Action.FAIL and "4 times within 600s" in d.reason
    s2 = Supervision(max_rss=0, max_restarts=3, window=600)
    for t in (10.0, 20.0, 30.0):
        observe(s2, t, broker=False)
    assert observe(s2, 615.0, broker=False) is Action.RESTART  # the first crash left the window


def test_a_dead_worker_with_a_live_broker_is_restarted_until_it_stops_too_often() -> None:
    s = Supervision(max_rss=0, max_restarts=3, window=600)
    assert [observe(s, t, worker=False) for t in (1.0, 20.0)] == [Action.RESTART_WORKER] * 2
    assert observe(s, 25.0) is Action.NONE  # the fresh worker runs
    # a dead broker takes precedence: the worker is restarted with it; both count toward the limit
    assert observe(s, 30.0, broker=False, worker=False) is Action.RESTART
    d = s.observe(40.0, broker_alive=True, worker_alive=False, rss=None)
    assert d.action is Action.FAIL and "the worker stopped, with 3 restarts within 600s" in d.reason
    s2 = Supervision(max_rss=0, max_restarts=2, window=600)
    assert [observe(s2, t, worker=False) for t in (10.0, 20.0)] == [Action.RESTART_WORKER] * 2
    assert observe(s2, 611.0, worker=False) is Action.RESTART_WORKER  # the first one left the window


def test_a_worker_restart_does_not_end_a_drain_in_progress() -> None:
    s = Supervision(max_rss=100, drain_timeout=120)
    assert observe(s, 0.0, rss=200) is Action.START_DRAIN
    assert observe(s, 1.0, worker=False) is Action.RESTART_WORKER
    assert observe(s, 2.0) is Action.CHECK_DRAIN  # the drain marker waits in the broker for the fresh worker


def test_the_memory_bound_drains_then_recycles() -> None:
    s = Supervision(max_rss=100 * MB, drain_timeout=60, drain_backoff=300)
    assert observe(s, 0.0, rss=100 * MB) is Action.NONE  # at the bound, not above
    assert observe(s, 1.0, rss=101 * MB) is Action.START_DRAIN
    assert observe(s, 2.0, rss=101 * MB) is Action.CHECK_DRAIN
    assert s.drain_checked(2.0, drained=False).action is Action.NONE
    assert observe(s, 3.0, rss=5 * MB) is Action.CHECK_DRAIN  # a drain, once started, runs to its end
    assert s.drain_checked(3.0, drained=True).action is Action.RECYCLE
    assert not s.draining
    assert observe(s, 4.0, rss=5 * MB) is Action.NONE
    assert s.drain_checked(4.0, drained=True).action is Action.NONE  # no drain, no recycle


def test_a_drain_that_takes_too_long_is_aborted_and_retried_after_the_backoff() -> None:
    s = Supervision(max_rss=100 * MB, drain_timeout=60, drain_backoff=300)
    assert observe(s, 0.0, rss=200 * MB) is Action.START_DRAIN
    assert observe(s, 60.0, rss=200 * MB) is Action.CHECK_DRAIN
    assert observe(s, 61.0, rss=200 * MB) is Action.ABORT_DRAIN
    assert observe(s, 300.0, rss=200 * MB) is Action.NONE
    assert observe(s, 361.0, rss=200 * MB) is Action.START_DRAIN
    assert s.drain_failed(362.0, "no pause").action is Action.ABORT_DRAIN
    assert observe(s, 363.0, rss=200 * MB) is Action.NONE


def test_a_broker_crash_during_a_drain_cancels_it() -> None:
    s = Supervision(max_rss=100 * MB)
    assert observe(s, 0.0, rss=200 * MB) is Action.START_DRAIN
    assert observe(s, 1.0, broker=False, rss=None) is Action.RESTART
    assert not s.draining
    assert s.drain_checked(2.0, drained=True).action is Action.NONE


def test_no_memory_bound_never_drains() -> None:
    s = Supervision(max_rss=0)
    assert observe(s, 0.0, rss=10**12) is Action.NONE
    assert Supervision(max_rss=MB).observe(0.0, broker_alive=True, worker_alive=True, rss=None).action is Action.NONE


def held(s: Supervision, now: float, assigned: int | None, broker: bool = True) -> Action:
    return s.observe(now, broker_alive=broker, worker_alive=True, rss=10 * MB, assigned=assigned).action


def test_a_worker_without_partitions_for_too_long_unsticks_the_broker() -> None:
    s = Supervision(max_rss=0, max_restarts=2, stall_after=60)
    assert [held(s, t, a) for t, a in ((0, 8), (5, 0), (30, None), (64, 0))] == [Action.NONE] * 4
    d = s.observe(65, broker_alive=True, worker_alive=True, rss=None, assigned=0)
    assert d.action is Action.UNSTICK and "no partition for 60s" in d.reason
    assert held(s, 70, 0) is Action.NONE  # a new span starts: the restarted worker is joining
    assert held(s, 100, 8) is Action.NONE and held(s, 150, 0) is Action.NONE  # partitions again: span reset
    assert held(s, 209, 0) is Action.NONE and held(s, 210, 0) is Action.UNSTICK
    assert held(s, 211, 0) is Action.NONE and held(s, 300, None) is Action.NONE
    d = s.observe(400, broker_alive=True, worker_alive=True, rss=None, assigned=0)  # 3rd in the window
    assert d.action is Action.FAIL and "giving up" in d.reason


def test_partitions_are_not_watched_when_off_and_a_dead_broker_ends_a_span() -> None:
    off = Supervision(max_rss=0)
    assert all(held(off, t, 0) is Action.NONE for t in range(0, 1000, 50))
    s = Supervision(max_rss=0, stall_after=60)
    assert held(s, 0, 0) is Action.NONE and held(s, 50, 0, broker=False) is Action.RESTART
    assert held(s, 100, 0) is Action.NONE and held(s, 159, 0) is Action.NONE  # counted from 100, not 0
    assert held(s, 160, 0) is Action.UNSTICK


def test_journal_confirmation_schedule() -> None:
    c = JournalConfirmation(every=300, timeout=600)
    assert not c.due(0.0, 10)  # not before the first interval
    assert not JournalConfirmation(every=300).due(10**6, 10)  # counted from the first look, not from 0
    assert not c.due(300.0, 0)  # nothing to prove: wait another interval
    assert not c.due(301.0, 10)
    assert c.due(600.0, 10)
    c.started(600.0, "m1", ["a", "b"])
    assert not c.due(2000.0, 10)  # one proof at a time
    assert not c.expired(1200.0)
    assert c.confirmed(1300.0) == ["a", "b"] and c.pending is None
    assert not c.due(1500.0, 10) and c.due(1600.0, 10)
    c.started(1600.0, "m2", ["c"])
    assert c.expired(2201.0) and c.pending is None  # given up, tried again an interval later
    c.started(2600.0, "m3", ["d"])
    c.void(2601.0)  # a broker restart: the marker died with the log
    assert c.pending is None and c.confirmed(2602.0) == []
    assert not JournalConfirmation(every=0).due(10**6, 10)
