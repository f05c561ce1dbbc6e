"""One lifecycle for every component (``outloop.streams.lifecycle``) and the supervisor driving it
(``outloop.runtime.Stack.supervise_once`` over ``Supervision.observe_components``), on real tiny
components: a Python child process that says it is ready by writing a file, and a thread."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from outloop.components import StackError, WorkerProcess, forwarder_component, tailer_component
from outloop.router.component import RouterProcess
from outloop.runtime import Stack
from outloop.streams.broker import BrokerError, EmbeddedBroker
from outloop.streams.forwarder import Forwarder
from outloop.streams.lifecycle import Component, ComponentError, ProcessComponent, Restart, ThreadComponent
from outloop.streams.settings import Settings
from outloop.streams.tailer import Tailer
from outloop.supervision import Action, Observed, Supervision
from tests.polling import wait

# ready once it wrote its pid to argv[1]; with argv[2] == "child", a grandchild in its group first; exits
# with argv[3] when given (before it is ready); SIGTERM ends it with code 3
TINY = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
if len(sys.argv) > 3:
    sys.exit(int(sys.argv[3]))
if sys.argv[2] == "child":
    subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(60)"])
open(sys.argv[1] + ".tmp", "w").write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


class Tiny(ProcessComponent):
    """A real child process, ready once its ready file names its pid."""

    name = "tiny"
    ready_every = 0.01

    def __init__(self, tmp: Path, *, policy: Restart = Restart.ALONE, mode: str = "alone",
                 exit_code: int | None = None, never_ready: bool = False, kill_group: bool = False,
                 kill_unready: bool = True, name: str = "tiny") -> None:
        super().__init__(tmp / f"{name}.log")
        self.name, self.restart_policy, self.kill_group, self.kill_unready = name, policy, kill_group, kill_unready
        self.ready_path = tmp / f"{name}.ready"
        self.mode, self.exit_code, self.never_ready = mode, exit_code, never_ready

    def argv(self) -> list[str]:
        extra = [str(self.exit_code)] if self.exit_code is not None else []
        return [sys.executable, "-S", "-c", TINY, str(self.ready_path), self.mode, *extra]

    def spawn(self):  # type: ignore[no-untyped-def]
        self.ready_path.unlink(missing_ok=True)
        return super().spawn()

    def ready(self) -> bool:
        if self.never_ready:
            return False
        try:
            return self.ready_path.read_text() == str(self.pid)
        except OSError:
            return False


class Loop:
    """A real thread body: runs until stopped, or until ``crash`` is set (an uncaught bug)."""

    def __init__(self) -> None:
        self.runs = 0
        self.crash = threading.Event()

    def run_forever(self, stop: threading.Event) -> None:
        self.runs += 1
        while not stop.wait(0.01):
            if self.crash.is_set():
                self.crash.clear()
                return


def test_a_process_component_starts_ready_stops_and_is_killed(tmp_path: Path) -> None:
    c = Tiny(tmp_path)
    assert isinstance(c, Component) and not c.alive() and c.pid is None
    c.start(timeout=10)
    assert c.alive() and c.ready() and c.pid is not None
    proc = c.proc
    c.stop(timeout=5)
    assert not c.alive() and proc is not None and proc.returncode == 3  # asked with SIGTERM, ended on its own
    c.start(timeout=10)
    proc = c.proc
    c.kill()
    assert not c.alive() and proc is not None and proc.returncode == -signal.SIGKILL
    c.kill()  # twice: nothing left to do
    c.stop()


def test_a_start_that_exits_or_is_not_ready_in_time_raises_and_kills_only_when_told(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match=r"tiny exited with 7; see .*tiny\.log"):
        Tiny(tmp_path, exit_code=7).start(timeout=10)
    killed = Tiny(tmp_path, never_ready=True)
    with pytest.raises(ComponentError, match="tiny not ready within 0s"):
        killed.start(timeout=0.3)
    assert not killed.alive() and killed.proc is None
    kept = Tiny(tmp_path, never_ready=True, kill_unready=False)  # the worker's way: it keeps starting
    with pytest.raises(ComponentError):
        kept.start(timeout=0.3)
    assert kept.alive()
    kept.kill()


def test_a_kill_takes_the_process_group_when_told(tmp_path: Path) -> None:
    def grandchild(c: Tiny) -> psutil.Process:
        assert c.pid is not None
        wait(lambda: psutil.Process(c.pid).children(), 10, "the grandchild started", step=0.01)
        return psutil.Process(c.pid).children()[0]

    c = Tiny(tmp_path, mode="child", kill_group=True).start(timeout=10)
    child = grandchild(c)
    c.kill()
    child.wait(timeout=5)  # psutil.TimeoutExpired if it survived
    c = Tiny(tmp_path, mode="child", kill_group=False).start(timeout=10)
    child = grandchild(c)
    c.kill()
    try:
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    finally:
        child.kill()


def test_a_thread_component_runs_stops_is_killed_and_restarts() -> None:
    loop, abandoned = Loop(), threading.Event()
    c = ThreadComponent("loop", loop, on_kill=abandoned.set)
    assert isinstance(c, Component) and c.restart_policy is Restart.ALONE and not c.alive()
    c.start()
    assert c.alive() and c.ready()
    c.kill()  # does not wait; tells the runner to give up what it waits for
    assert abandoned.is_set()
    wait(lambda: not c.alive(), 5, "the killed thread ended", step=0.01)
    c.restart()
    assert c.alive() and loop.runs == 2 and c.restarts == 1
    c.stop(timeout=5)
    assert not c.alive()


def test_every_part_of_a_stack_is_a_component_with_its_restart_policy(tmp_path: Path) -> None:
    s = Settings.from_env({}, home=tmp_path / "home", broker="127.0.0.1:9", db=tmp_path / "out.duckdb")
    parts = [EmbeddedBroker(tmp_path / "b.log"), WorkerProcess(s, tmp_path / "w.log"),
             forwarder_component(Forwarder(s)), RouterProcess(s, tmp_path), tailer_component(Tailer(s))]
    assert all(isinstance(p, Component) for p in parts)
    assert [(p.name, p.restart_policy) for p in parts] == [
        ("broker", Restart.STACK), ("worker", Restart.COUNTED), ("forwarder", Restart.ALONE),
        ("router", Restart.ALONE), ("tailer", Restart.ALONE)]
    assert issubclass(BrokerError, ComponentError) and issubclass(StackError, ComponentError)


def test_the_decisions_follow_the_restart_policies() -> None:
    s = Supervision(max_rss=0, max_restarts=2, window=600)

    def actions(now: float, **alive: bool) -> list[tuple[Action, str]]:
        policy = {"broker": Restart.STACK, "worker": Restart.COUNTED, "router": Restart.ALONE,
                  "tailer": Restart.ALONE}
        seen = [Observed(n, policy[n], a) for n, a in alive.items()]
        return [(d.action, d.component) for d in s.observe_components(now, seen, rss=None)]

    assert actions(0.0, broker=True, worker=True, router=True) == [(Action.NONE, "")]
    assert actions(1.0, broker=True, worker=True, router=False, tailer=False) == [
        (Action.RESTART_ALONE, "router"), (Action.RESTART_ALONE, "tailer"), (Action.NONE, "")]
    assert actions(2.0, broker=True, worker=False) == [(Action.RESTART_WORKER, "worker")]
    assert actions(3.0, broker=False, worker=False) == [(Action.RESTART, "broker")]
    assert actions(4.0, broker=False, worker=True) == [(Action.FAIL, "")]  # the 3rd counted restart in 600 s
    assert actions(700.0, worker=True) == [(Action.NONE, "")]  # an external broker: nothing plays it
    assert actions(701.0) == [(Action.RESTART_WORKER, "")]  # no worker at all is a dead one


def test_the_supervisor_restarts_real_components_by_their_policy(tmp_path: Path) -> None:
    """The supervisor's loop knows components only by name, liveness and policy: a counted one (the
    worker's place) is started again and counted until the bound, one that restarts alone (the
    router's place) is started again uncounted, a thread that ended is started again."""
    s = Settings.from_env({}, home=tmp_path / "home", broker="127.0.0.1:9", db=tmp_path / "out.duckdb")
    stack = Stack(s)
    stack.supervision = Supervision(max_rss=0, max_restarts=2, window=600)
    counted = Tiny(tmp_path, policy=Restart.COUNTED, name="worker").start(timeout=10)
    alone = Tiny(tmp_path, policy=Restart.ALONE, name="router").start(timeout=10)
    loop = Loop()
    thread = ThreadComponent("tailer", loop).start()
    stack.components = [counted, alone, thread]
    try:
        assert stack.supervise_once(0.0) and stack.events == []
        first = alone.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        loop.crash.set()
        wait(lambda: not alone.alive() and not thread.alive(), 5, "router and thread ended", step=0.01)
        assert stack.supervise_once(1.0)
        assert alone.alive() and alone.pid != first and alone.restarts == 1 and thread.alive() and loop.runs == 2
        for n, now in enumerate((2.0, 3.0), start=1):
            assert counted.pid is not None
            os.kill(counted.pid, signal.SIGKILL)
            wait(lambda: not counted.alive(), 5, "the counted component ended", step=0.01)
            assert stack.supervise_once(now) and counted.alive() and stack.restart_counts == {"worker": n}
        assert stack.worker_restarts == 2
        assert sum("the worker exited with code -9; starting a fresh one (worker log" in e for e in stack.events) == 2
        assert sum("the router exited; starting a fresh one (log" in e for e in stack.events) == 1
        assert counted.pid is not None
        os.kill(counted.pid, signal.SIGKILL)
        wait(lambda: not counted.alive(), 5, "the counted component ended", step=0.01)
        assert not stack.supervise_once(4.0) and stack.failed.is_set()
        assert stack.failure is not None and "giving up" in stack.failure
    finally:
        t0 = time.monotonic()
        stack.stop()
        assert time.monotonic() - t0 < 10
    assert not any(c.alive() for c in (counted, alone, thread))
