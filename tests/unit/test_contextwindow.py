"""The sessions agent's context windows (agents.contextwindow): rules, and bounded state."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from outloop.agents.contextwindow import ContextWindows, feed
from outloop.schemas.events import UsageRecord
from tests.unit.contextwindowdata import T0, _hook, synthetic_sessions


def tool(n: int, s: int, tool_name: str = "Read", tokens: int = 100, status: str = "ok", **inp: Any
         ) -> tuple[Any, str, dict[str, Any]]:
    return (T0 + timedelta(seconds=s), "tool_call", {
        "id": f"t{n}", "session_id": "s", "tool_name": tool_name, "tool_input": inp, "status": status,
        "file_path": inp.get("file_path"), "output_tokens_est": tokens})


def usage(n: int, s: int, write: int = 500, read: int = 20_000, w1: int | None = None) -> tuple[Any, str, Any]:
    return (T0 + timedelta(seconds=s), "usage", UsageRecord(
        id=f"u{n}", session_id="s", model="m", timestamp=T0, input_tokens=5, output_tokens=10,
        cache_read_input_tokens=read, cache_creation_input_tokens=write, cache_creation_1h_tokens=w1))


def hook(name: str, s: int) -> tuple[Any, str, Any]:
    return _hook("s", name, s, T0 + timedelta(seconds=s))


def test_running_figures_of_one_window() -> None:
    w = ContextWindows()
    closed = feed(w, [
        tool(1, 1, file_path="/a"), usage(1, 2), tool(1, 3, file_path="/a"),  # a second view of t1: once
        tool(2, 4, file_path="/a"), usage(2, 5),  # a re-read of /a
        tool(3, 6, "Edit", tokens=10, file_path="/a"), tool(4, 7, file_path="/a"), usage(3, 8),  # after an edit: not
        tool(5, 9, "Bash", status="started", command="x"), hook("PreCompact", 10), usage(4, 11),
        tool(6, 12, file_path="/a"), usage(5, 13), hook("Stop", 14)])
    assert len(closed) == 1 and not w.open
    r = closed[0].record()
    assert (r["outputs"], r["loaded_tokens"], r["reread_tokens"]) == (5, 410, 100)
    assert r["carry_tokens"] == 100 + 200 + 310 + 0 + 100  # what each API call re-read; the compaction empties
    assert (r["api_calls"], r["compactions"], r["close_reason"]) == (5, 1, "Stop")
    assert r["id"] == f"s:{(T0 + timedelta(seconds=1)).isoformat()}" and r["closed_at"] == T0 + timedelta(seconds=14)


def test_inactivity_closes_and_more_events_open_a_new_window_that_starts_with_a_cache_break() -> None:
    w = ContextWindows(timeout=timedelta(minutes=30))
    assert feed(w, [tool(1, 0, file_path="/a"), usage(1, 1)]) == []
    other = (T0 + timedelta(minutes=31, seconds=2), "hook",
             _hook("other", "UserPromptSubmit", 0, T0 + timedelta(minutes=31, seconds=2))[2])
    closed = feed(w, [other])
    assert [(c.session_id, c.close_reason, c.closed_at) for c in closed] == [
        ("s", "inactive", T0 + timedelta(minutes=30, seconds=1))]
    assert set(w.open) == {"other"}
    closed = feed(w, [usage(2, 40 * 60, write=30_000, read=0), hook("SessionEnd", 40 * 60 + 1)])
    again = closed[0].record()
    assert again["id"] != closed[0].session_id + ":" + T0.isoformat() and again["cache_break_tokens"] == 30_000
    assert again["carry_tokens"] == 0 and again["outputs"] == 0  # nothing of the closed window was kept


def test_idle_gap_inside_a_window_past_the_cache_lifetime_is_a_cache_break() -> None:
    w = ContextWindows()
    feed(w, [usage(1, 0, write=30_000, read=0), usage(2, 10, write=40_000, read=0, w1=40_000),
             usage(3, 10 + 20 * 60, write=45_000, read=0),  # 20 min < the 1-hour lifetime: not a break
             usage(4, 10 + 30 * 60), usage(5, 10 + 36 * 60, write=50_000, read=1_000)])  # 6 min > 5 min: a break
    assert w.open["s"].figures().cache_break_tokens == 30_000 + 50_000  # the window's first call came after no call


def test_open_windows_are_capped() -> None:
    w = ContextWindows(max_open=3)
    closed = []
    for i in range(10):
        ev = _hook(f"s{i}", "UserPromptSubmit", 0, T0 + timedelta(seconds=i))
        closed += feed(w, [ev])
    assert len(w.open) == 3 and [c.close_reason for c in closed] == ["evicted"] * 7


def state_bytes(windows: ContextWindows) -> int:
    """Bytes held by the fold's state: its open windows with their facts."""
    total = sys.getsizeof(windows.open)
    for key, w in windows.open.items():
        total += sys.getsizeof(key) + sys.getsizeof(w) + sys.getsizeof(w.__dict__)
        for facts in (w.calls, w.usage, w.hooks):
            total += sys.getsizeof(facts) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in facts.items())
        total += sys.getsizeof(w.side) + sum(sys.getsizeof(i) for i in w.side)
    return total + sys.getsizeof(windows.idle) + sum(sys.getsizeof(e) for e in windows.idle)


def _held(sessions: int, windows: ContextWindows) -> list[int]:
    out = []
    for n, batch in enumerate(synthetic_sessions(sessions), start=1):
        feed(windows, batch)
        if n % 1000 == 0:
            out.append(state_bytes(windows))
    return out


def test_state_does_not_grow_with_closed_sessions() -> None:
    """10,000 synthetic sessions (half closed by SessionEnd, half by inactivity): the fold's state after
    10,000 is within 1.5x of that after 1,000; the same fold without the inactivity close grows ~10x
    (bench/bench_context_windows.py measures the same with tracemalloc)."""
    bounded = ContextWindows()
    held = _held(10_000, bounded)
    assert len(bounded.open) <= 100
    assert max(held) < 1.5 * held[0]
    kept = _held(3_000, ContextWindows(timeout=timedelta(days=3650)))
    assert kept[-1] > 2.5 * kept[0]


def test_a_sub_agents_outputs_are_loaded_but_not_carried_by_the_main_chain() -> None:
    side = tool(2, 2, tokens=1_000, file_path="/a")
    w = ContextWindows()
    closed = feed(w, [tool(1, 1, file_path="/a"), (side[0], "side_call", side[2]), usage(1, 3),
                      tool(3, 4, file_path="/a"), usage(2, 5), hook("Stop", 6)])
    r = closed[0].record()
    assert (r["outputs"], r["loaded_tokens"]) == (3, 1_200)
    assert r["carry_tokens"] == 100 + 200  # the sub-agent's 1,000 tokens are in its own context
    assert r["reread_tokens"] == 100  # t3 re-reads the main chain's /a; the sub-agent's read changes nothing


def test_the_order_facts_arrive_in_within_a_window_and_repeated_versions_change_no_figure() -> None:
    """A transcript's usage records come after its tool results, and a record may come again, larger, in a
    later batch: the figures are those of the facts in time order, each counted once."""
    timeline = [tool(1, 1, file_path="/a"), usage(1, 2, write=30_000, read=0), tool(2, 4, file_path="/a"),
                usage(2, 5), hook("PreCompact", 6), tool(3, 7, file_path="/b"), usage(3, 8)]
    in_order = ContextWindows()
    feed(in_order, timeline)
    arrived = ContextWindows()
    smaller = usage(1, 2, write=20, read=0)  # an earlier, smaller version of u1
    feed(arrived, [e for e in timeline if e[1] != "usage"] + [smaller] + [e for e in timeline if e[1] == "usage"])
    want, got = in_order.open["s"].record(), arrived.open["s"].record()
    assert {**got, "events": 0} == {**want, "events": 0}
    assert (want["api_calls"], want["carry_tokens"], want["reread_tokens"], want["cache_break_tokens"]) == (
        3, 100 + 200 + 100, 100, 30_000)  # u1, the window's first call, wrote its whole prompt


def _usage_of(session: str, n: int, at: Any) -> tuple[Any, str, Any]:
    return (at, "usage", UsageRecord(id=f"u:{session}:{n}", session_id=session, model="m", timestamp=at,
                                     input_tokens=5, output_tokens=10, cache_read_input_tokens=1_000,
                                     cache_creation_input_tokens=100))


def test_an_older_session_replayed_after_a_newer_one_keeps_one_window() -> None:
    """A replay brings a session from 10:30-11:30 after one of 10:00-12:00 that ended (its ``Stop``): each
    event of the older session used to close its own window at once (the latest time seen was 12:00), so
    it made seven windows of one event each."""
    w = ContextWindows()
    closed = feed(w, [_usage_of("A", i, T0 + timedelta(minutes=10 * i)) for i in range(13)])
    closed += feed(w, [_hook("A", "Stop", 0, T0 + timedelta(minutes=121))])
    closed += feed(w, [_usage_of("B", i, T0 + timedelta(minutes=30 + 10 * i)) for i in range(7)])
    assert [(c.session_id, c.close_reason, c.events) for c in closed] == [("A", "Stop", 14)]
    assert [(o.session_id, o.events) for o in w.snapshot()] == [("B", 7)]


def test_two_older_sessions_replayed_interleaved_after_a_newer_one_keep_one_window_each() -> None:
    w = ContextWindows()
    closed = feed(w, [_usage_of("new", 0, T0 + timedelta(days=30))])
    closed += feed(w, [_usage_of(s, i, T0 + timedelta(minutes=5 * i)) for i in range(10) for s in ("A", "B")])
    assert closed == []
    assert sorted((o.session_id, o.events) for o in w.snapshot()) == [("A", 10), ("B", 10), ("new", 1)]
    closed = feed(w, [_usage_of("newer", 0, T0 + timedelta(days=31))])  # the clock moves on: idle ones close
    assert sorted((c.session_id, c.close_reason, c.events) for c in closed) == [
        ("A", "inactive", 10), ("B", "inactive", 10), ("new", "inactive", 1)]


def _windows_by_partition(events: list[tuple[Any, str, Any]], partitions: int) -> list[dict[str, Any]]:
    """The windows of ``events`` (in time order) folded by ``partitions`` folds, each session's events to
    one of them, then every open window as it stands (a flush)."""
    folds = [ContextWindows() for _ in range(partitions)]
    out = []
    for ev in events:
        item = ev[2]
        session = item.subject if ev[1] == "hook" else item.session_id
        out += feed(folds[int(session[1:]) % partitions], [ev])
    out += [o for f in folds for o in f.snapshot()]
    return sorted((o.record() for o in out), key=lambda r: r["id"])


def test_a_sessions_windows_do_not_depend_on_the_sessions_sharing_its_partition() -> None:
    """Live input (in event-time order) from 30 sessions, some idle past the timeout and back, folded by
    1, 4 and 7 partitions: the same windows with the same figures. A session that came back after idling
    past the timeout used to stay in one window unless another session's event came in between, in its
    partition. What may differ is only whether the last window of a session shows as closed at the end of
    the input (a later event of another session in its partition closes it, none leaves it open)."""
    import random

    rng = random.Random(5)
    events = []
    for i in range(30):
        at = T0 + timedelta(minutes=rng.randrange(120))
        for n in range(rng.randint(3, 12)):
            at += timedelta(minutes=rng.choice([1, 2, 5, 45 if rng.random() < 0.15 else 3]))
            events.append(_usage_of(f"s{i:02d}", n, at))
        if i % 3 == 0:
            events.append(_hook(f"s{i:02d}", "Stop", 0, at + timedelta(seconds=5)))
    events.sort(key=lambda ev: ev[0])
    def settled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        last = {r["session_id"]: r["id"] for r in sorted(rows, key=lambda r: r["opened_at"])}
        return [{**r, "closed_at": None, "close_reason": None} if r["id"] == last[r["session_id"]]
                and r["close_reason"] in ("inactive", None) else r for r in rows]

    one = _windows_by_partition(events, 1)
    assert settled(_windows_by_partition(events, 4)) == settled(one) == settled(_windows_by_partition(events, 7))
    assert len(one) > 30 and sum(r["close_reason"] == "inactive" for r in settled(one)) >= 3  # sessions came back
