"""One lifecycle for every part ``outloop up`` runs: the embedded broker, the worker, the router (child
processes) and the forwarder and the transcript tailer (threads).

Each is a :class:`Component`: ``start`` (returns once it is ready, or raises), ``ready`` (serves now),
``alive`` (still running), ``stop`` (asks it to end, then forces it), ``kill`` (ends it at once, for a
restart or a fault-injection test) and a :class:`Restart` policy that tells the supervisor what its exit
means. The supervisor (``outloop.runtime.Stack``) observes ``alive`` of every component and carries out
what the pure decisions of ``outloop.supervision`` say; it never needs to know which kind of component
it looks at except through the policy.

:class:`ProcessComponent` is the shared body of the three child processes (spawned in a session of
their own, output to a log file, optionally SIGKILLed with the thread that started them);
:class:`ThreadComponent` that of the two threads. Both are plain stdlib: the edge imports this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable


class Restart(enum.Enum):
    """What the supervisor does when a component exits without being asked to."""

    STACK = "stack"  # restart it with everything downstream: its state (the broker's in-memory log) is gone
    COUNTED = "counted"  # start a fresh one alone; its exits count toward the stack's restart bound
    ALONE = "alone"  # start a fresh one alone, uncounted: what it serves fails open meanwhile
    NEVER = "never"  # not ours to restart


class ComponentError(RuntimeError):
    """A component did not start (it exited, or was not ready in time)."""


@runtime_checkable
class Component(Protocol):
    """The lifecycle every supervised part implements (see the module doc)."""

    name: str
    restart_policy: Restart

    def start(self, timeout: float = 30.0) -> object: ...

    def ready(self) -> bool: ...

    def alive(self) -> bool: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def kill(self) -> None: ...

    def restart(self, timeout: float | None = None) -> None: ...


_PR_SET_PDEATHSIG = 1


def killed_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child SIGKILLed when the thread that started it dies (Linux's
    parent-death signal), or None where there is none. It only calls ``prctl`` (resolved before the
    fork) and ``getppid``: a parent that died before the call means the child exits at once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class ProcessComponent:
    """A child process in a session of its own (a Ctrl-C in the terminal is the supervisor's to
    forward, not its), its output appended to ``log_path``.

    Subclasses give :meth:`argv`, :meth:`ready` and the class attributes: ``stop_signal`` (what asks
    it to end), ``kill_group`` (SIGKILL its whole process group: its own children die with it),
    ``kill_unready`` (a start that is not ready in time kills it; otherwise it keeps starting and
    the supervisor judges it later) and ``error`` (the exception a failed start raises)."""

    name = "process"
    restart_policy = Restart.ALONE
    stop_signal: signal.Signals = signal.SIGTERM
    kill_group = False
    kill_unready = True
    ready_every = 0.05  # seconds between two readiness probes while starting
    error: type[Exception] = ComponentError

    def __init__(self, log_path: Path, *, die_with_parent: bool = False) -> None:
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    # -- what a subclass says ---------------------------------------------------------------------
    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def exited_message(self, code: int) -> str:
        return f"{self.name} exited with {code}; see {self.log_path}"

    def unready_message(self, timeout: float) -> str:
        return f"{self.name} not ready within {timeout:.0f}s; see {self.log_path}"

    # -- the lifecycle ----------------------------------------------------------------------------
    def spawn(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        preexec = killed_with(os.getpid()) if self.die_with_parent else None
        try:
            self.proc = subprocess.Popen(self.argv(), env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=preexec)  # noqa: PLW1509
        finally:
            log.close()
        return self.proc

    def start(self, timeout: float = 30.0) -> ProcessComponent:
        """Spawn it and wait until :meth:`ready`; raise ``error`` when it exits first or is not ready
        within ``timeout`` s (killed then if ``kill_unready``)."""
        proc = self.spawn()
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise self.error(self.exited_message(proc.returncode))
                if self.ready():
                    return self
                if time.monotonic() >= deadline:
                    raise self.error(self.unready_message(timeout))
                time.sleep(self.ready_every)
        except self.error:
            if self.kill_unready:
                self.kill()
            raise
        except BaseException:  # stopped while waiting (a signal): the caller never got hold of the process
            self.kill()
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 10.0) -> None:
        """Send ``stop_signal``, wait up to ``timeout`` s, then SIGKILL (its group if ``kill_group``)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(self.stop_signal)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._sigkill(proc)

    def kill(self) -> None:
        """SIGKILL it (and its group if ``kill_group``: also when it exited already, for a child that
        outlived it) and reap it."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self._sigkill(proc)

    def _sigkill(self, proc: subprocess.Popen[bytes]) -> None:
        if self.kill_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: started with start_new_session
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def restart(self, timeout: float | None = None) -> None:
        """A fresh process after the last one exited (or to replace a live one); ``timeout`` None: the
        component's own start timeout."""
        self.stop()
        self.restarts += 1
        if timeout is None:
            self.start()
        else:
            self.start(timeout)


class Runner(Protocol):
    """What a thread component runs: a loop that ends when ``stop`` is set."""

    def run_forever(self, stop: threading.Event) -> None: ...


class ThreadComponent:
    """``runner.run_forever(stop)`` in a daemon thread. Ready as soon as it runs (its loop retries a
    broker that is not there yet on its own); ``kill`` sets ``stop`` and calls ``on_kill`` (to abandon
    a wait on the broker) without waiting for the thread."""

    restart_policy = Restart.ALONE

    def __init__(self, name: str, runner: Runner, *, on_kill: Callable[[], None] | None = None) -> None:
        self.name = name
        self.runner = runner
        self.on_kill = on_kill
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> ThreadComponent:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.runner.run_forever, args=(self._stop,),
                                        name=f"outloop-{self.name}", daemon=True)
        self._thread.start()
        return self

    def ready(self) -> bool:
        return self.alive()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def signal_stop(self) -> None:
        """Ask it to end without waiting (several threads end in parallel, then :meth:`stop` joins)."""
        self._stop.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def kill(self) -> None:
        self._stop.set()
        if self.on_kill is not None:
            self.on_kill()

    def restart(self, timeout: float | None = None) -> None:
        self.stop()
        self.restarts += 1
        self.start()
