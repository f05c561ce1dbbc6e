"""`outloop up`'s supervision on real processes: a real Tansu broker SIGKILLed under a running
stack, and recycled past a memory bound; hook events spooled and forwarded, a real worker
subprocess, a real DuckDB file. Every spooled event must end up in DuckDB exactly once, with no
restart done by the test."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from outloop.runtime import Stack
from outloop.streams.settings import Settings
from outloop.streams.spool import Spool
from tests import SESSION_TIMEOUT
from tests.polling import wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def settings_for(tmp: Path, **kw: Any) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings.from_env({}, **{"home": tmp / "home", "broker": None, "db": tmp / "out.duckdb",
                                    "spool": tmp / "spool", "topic_prefix": f"s{tag}", "app_id": f"sup-{tag}",
                                    "http_port": 0, "session_timeout": SESSION_TIMEOUT, **kw})


def spool_hooks(spool: Spool, sessions: int, calls: int) -> set[str]:
    """Pre/Post hook pairs with tool_use_ids: 2 * sessions * calls events, as the shim spools them."""
    ids = set()
    for _ in range(sessions):
        session = str(uuid.uuid4())
        for i in range(calls):
            base = {"session_id": session, "cwd": "/w", "tool_name": "Bash",
                    "tool_input": {"command": f"pytest -q tests/unit/test_{i % 7}.py"},
                    "tool_use_id": f"toolu_{session[:8]}_{i:05d}"}
            ids.add(spool.write(orjson.dumps({**base, "hook_event_name": "PreToolUse"})))
            ids.add(spool.write(orjson.dumps({**base, "hook_event_name": "PostToolUse",
                                              "tool_response": {"stdout": f"{i} passed\n", "stderr": ""}})))
    return ids


def hook_rows(stack: Stack) -> int:
    try:
        return int(stack.client.query("SELECT count(*) FROM hook_events")[1][0][0])
    except Exception:  # the worker is restarting
        return -1


def paired_calls(stack: Stack) -> int:
    try:
        return int(stack.client.query("SELECT count(*) FROM tool_calls WHERE status = 'ok'")[1][0][0])
    except Exception:  # the worker is restarting
        return -1


def assert_exactly_once(stack: Stack, ids: set[str], timeout: float) -> None:
    spool = Spool(stack.settings.spool)
    # the tool-call rows travel on their own topic: the last ones may land a batch after the last hook rows
    wait(lambda: not spool.ready() and hook_rows(stack) >= len(ids) and paired_calls(stack) >= len(ids) // 2,
         timeout, f"all {len(ids)} events in DuckDB (have {hook_rows(stack)}, {paired_calls(stack)} paired "
         f"calls, spool {spool.count()})", step=0.5)
    _, rows = stack.client.query("SELECT count(*), count(DISTINCT id) FROM hook_events")
    assert rows == [[len(ids), len(ids)]]
    _, rows = stack.client.query("SELECT id FROM hook_events")
    assert {r[0] for r in rows} == ids
    _, rows = stack.client.query("SELECT count(*), count(*) FILTER (WHERE status = 'ok') FROM tool_calls")
    _, dead = stack.client.query("SELECT reason, topic, count(*), any_value(detail) FROM dead_letters GROUP BY ALL")
    assert rows == [[len(ids) // 2, len(ids) // 2]], f"dead letters: {dead}; supervisor: {stack.events}"


def test_broker_sigkilled_5_times_under_up_loses_nothing(tmp_path: Path) -> None:
    """6,000 hook events spooled in 6 waves while the stack runs (forwarder, supervised embedded
    broker, worker); the broker is SIGKILLed 5 times, each a random moment after the forwarder began
    shipping a wave, so the broker has acknowledged events that are not in DuckDB yet. Journal
    proofs run every 2 s, so pruning races the kills too. The supervisor alone restarts broker and
    worker; DuckDB must hold every id exactly once."""
    s = settings_for(tmp_path, journal_confirm=2.0)
    spool = Spool(s.spool)
    rng = random.Random(11)
    ids: set[str] = set()
    kills: list[tuple[int, int]] = []  # (hook rows in DuckDB, sent-journal entries) at each kill
    t0 = time.monotonic()
    with Stack(s, forwarder=True, supervise=True) as stack:
        assert stack.broker is not None
        port = stack.broker.port
        for wave in range(6):
            ids |= spool_hooks(spool, sessions=10, calls=50)
            if wave == 5:
                break
            # len(ready()) lists the folder; count() also stats every record (12 ms for 3,000 here), and
            # polled every 10 ms in this process it took the GIL from the forwarder thread it waits for
            wait(lambda: len(spool.ready()) < 1000, 60, "the forwarder did not ship", step=0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            kills.append((hook_rows(stack), spool.sent_stats()[0]))
            restarts = stack.restarts
            pid = stack.broker.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait(lambda r=restarts: stack.restarts > r, 120, "the supervisor did not restart the broker")
            assert stack.broker.port == port and stack.broker.pid != pid
            assert stack.failure is None
        assert_exactly_once(stack, ids, 120)
        assert stack.restarts == 5 and stack.failure is None
        resent = stack.forwarder.resent
        assert resent > 0  # the journal was sent again
    log = "\n".join(stack.events)
    assert log.count("exited with code -9") == 5 and log.count("sends its sent journal") == 5
    print(f"\nsupervised broker: {len(ids)} events, 5 SIGKILLs at (hook rows, journal entries) {kills}; "
          f"{resent} journal entries sent again; exactly once; {time.monotonic() - t0:.0f}s")


def test_broker_recycled_past_a_tiny_memory_bound_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """The memory bound set a few MB above the broker's RSS once up: while 6,000 spooled hook
    events flow, the supervisor drains (forwarder paused, drain marker in DuckDB, committed input
    offsets and stored sink positions at the log ends) and recycles broker and worker at least
    once. Nothing may be lost or counted twice, and the broker must come back small."""
    s = settings_for(tmp_path, journal_confirm=0)
    spool = Spool(s.spool)
    ids: set[str] = set()
    t0 = time.monotonic()
    with Stack(s, forwarder=True, supervise=True) as stack:
        assert stack.broker is not None
        from outloop.runtime import process_rss

        idle = process_rss(stack.broker.pid)
        assert idle is not None
        stack.supervision.max_rss = idle + 6 * 2**20
        for _ in range(3):
            ids |= spool_hooks(spool, sessions=10, calls=100)
            n = len(ids)
            wait(lambda n=n: hook_rows(stack) >= n or stack.recycles > 0, 90, "the worker did not write")
        wait(lambda: stack.recycles >= 1, 120, "no recycle")
        assert_exactly_once(stack, ids, 120)
        rss = process_rss(stack.broker.pid)
        assert stack.failure is None and stack.restarts == 0
        recycles = stack.recycles
        journal = spool.sent_stats()[0]
    log = "\n".join(stack.events)
    assert "draining before a recycle" in log and "recycling the embedded broker" in log
    assert journal < len(ids)  # proven entries left the journal at the recycle
    print(f"\nrecycle: {len(ids)} events, bound {stack.supervision.max_rss / 2**20:.0f} MB (idle "
          f"{idle / 2**20:.0f} MB), {recycles} recycles, broker RSS {rss / 2**20 if rss else 0:.0f} MB at the end, "
          f"journal {journal} entries; exactly once; {time.monotonic() - t0:.0f}s")


class BlindableStack(Stack):
    """Fault injection: while ``blind`` is set, the worker's answer about its partitions reads 0 (as
    from a worker whose consumer group never settles; the real wedge cannot be produced on demand)."""

    blind = False

    def assigned_partitions(self, now: float) -> int | None:
        real = super().assigned_partitions(now)
        return 0 if self.blind and real is not None else real


def test_a_worker_holding_no_partition_gets_the_broker_restarted_and_loses_nothing(tmp_path: Path) -> None:
    """The worker reports holding no partition for longer than OUTLOOP_STALL_RESTART while the broker
    is up: the supervisor kills and restarts the broker and a fresh worker, the forwarder sends its
    journal again, and every spooled event is in DuckDB exactly once."""
    s = settings_for(tmp_path, stall_restart=3.0, journal_confirm=0)
    spool = Spool(s.spool)
    with BlindableStack(s, forwarder=True, supervise=True) as stack:
        stack.ASSIGNED_EVERY = 0.5
        health = stack.client.health() or {}
        wait(lambda: (stack.client.health() or {}).get("assigned", 0) >= 2 * s.partitions, 30,
             f"the worker holds every input partition (health {health})")  # and Faust's leader topic
        ids = spool_hooks(spool, sessions=4, calls=50)
        assert_exactly_once(stack, ids, 60)
        stack.blind = True
        wait(lambda: stack.restarts == 1, 60, "the supervisor did not restart the broker")
        stack.blind = False
        ids |= spool_hooks(spool, sessions=4, calls=50)
        assert_exactly_once(stack, ids, 90)
        assert stack.restarts == 1 and stack.failure is None
    log = "\n".join(stack.events)
    assert "has held no partition for" in log and "killing the embedded broker" in log


def test_a_worker_that_exits_on_its_own_is_replaced_and_loses_nothing(tmp_path: Path) -> None:
    """The worker's own process exits three times while hook events flow - SIGKILLed alone twice (as
    the kernel's OOM killer would: its sink child is left to notice) and stopped once with SIGTERM -
    the broker staying up. The supervisor alone starts a fresh worker each time, which resumes from
    the group's committed offsets; every spooled event is in DuckDB exactly once."""
    s = settings_for(tmp_path, journal_confirm=0)
    spool = Spool(s.spool)
    rng = random.Random(5)
    ids: set[str] = set()
    with Stack(s, forwarder=True, supervise=True) as stack:
        broker_pid = stack.broker.pid if stack.broker is not None else None
        for sig in (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM):
            ids |= spool_hooks(spool, sessions=5, calls=40)
            wait(lambda: len(spool.ready()) < 300, 60, "the forwarder did not ship", step=0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            before, worker = stack.worker_restarts, stack.worker
            assert worker is not None
            os.kill(worker.pid, sig)  # the worker alone, not its process group

            def replaced(b: int = before) -> bool:
                return stack.worker_restarts > b and stack.client.health(timeout=1.0) is not None

            wait(replaced, 90, "the supervisor did not start a fresh worker")
            assert stack.worker is not worker and stack.failure is None
        ids |= spool_hooks(spool, sessions=5, calls=40)
        assert_exactly_once(stack, ids, 120)
        assert stack.worker_restarts == 3 and stack.restarts == 0 and stack.failure is None
        assert stack.broker is None or stack.broker.pid == broker_pid
    log = "\n".join(stack.events)
    assert log.count("the worker exited with code -9; starting a fresh one") == 2
    assert log.count("the worker exited with code") == 3
