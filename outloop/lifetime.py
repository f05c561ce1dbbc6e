"""What a command holds and starts lives exactly as long as the command.

* One ``outloop up`` per ``OUTLOOP_HOME`` (:class:`InstanceLock`): a second one would run a forwarder
  of its own on the same spool, taking hook events into a broker nothing reads (lost for good once the
  first instance prunes its journal). The lock is an ``flock`` on a file in the home, held for the life
  of the process: the kernel releases it when the process ends, however it ends, so a crash never
  leaves a stale lock behind. The file holds the holder's pid, for the error message.
* The signals that stop a command (SIGTERM from ``timeout`` or ``kill``, SIGHUP when its terminal
  closes, SIGINT) unwind it like Ctrl-C (:func:`stopped_by_signals`), so the ``with Stack(...)`` of a
  replay stops the embedded broker and the worker it started instead of leaving them running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

LOCK_NAME = "outloop.lock"


class AlreadyRunning(RuntimeError):
    """Another process holds the instance lock of this home."""

    def __init__(self, home: Path, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"outloop is already running ({who}) with OUTLOOP_HOME={home}; stop it first "
                         f"(or use another OUTLOOP_HOME)")


class InstanceLock:
    """An exclusive ``flock`` on ``<home>/outloop.lock``; :meth:`acquire` raises
    :class:`AlreadyRunning` at once when another process holds it. The file is never deleted:
    unlinking a locked file lets a third process lock a new file of the same name beside it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> InstanceLock:
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise AlreadyRunning(self.home, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int, wait: float = 1.0) -> int | None:
    """The pid the lock's holder wrote (it writes it right after taking the lock: wait a little for
    it), or None."""
    deadline = time.monotonic() + wait
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


class Stopped(BaseException):
    """Raised in the main thread when a signal stops the command (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Within the block, SIGTERM, SIGHUP and SIGINT raise :class:`Stopped` in the main thread, so every
    ``with``/``finally`` on the way out runs (stopping what the command started). Only the first one
    does: later ones are ignored, so an impatient second Ctrl-C cannot cut the clean-up short. A
    SIGINT that was ignored when the command started (a background job) stays ignored. The previous
    handlers are restored on the way out."""
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        raise Stopped(signum)

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        if previous[sig] is not signal.SIG_IGN:
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            if old is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(sig, old)
