"""The instance lock, the signals that unwind a command, and which worker answers for which file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from outloop.client import owns
from outloop.lifetime import AlreadyRunning, InstanceLock, Stopped, stopped_by_signals

HOLD = """
import sys, time
from pathlib import Path
from outloop.lifetime import InstanceLock
InstanceLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_lock_on_the_same_home_names_the_holder(tmp_path: Path) -> None:
    with InstanceLock(tmp_path / "home"):
        with pytest.raises(AlreadyRunning) as caught:  # flock is per open file: this process conflicts too
            InstanceLock(tmp_path / "home").acquire()
        assert caught.value.pid == os.getpid()
        assert f"outloop is already running (pid {os.getpid()})" in str(caught.value)
        InstanceLock(tmp_path / "other").acquire().release()  # another home is another instance
    InstanceLock(tmp_path / "home").acquire().release()  # released on the way out


def test_the_lock_of_a_killed_holder_does_not_block(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(AlreadyRunning) as caught:
            InstanceLock(tmp_path).acquire()
        assert caught.value.pid == holder.pid
        holder.kill()  # a crash: nothing released the lock on purpose
        holder.wait()
        with InstanceLock(tmp_path) as lock:  # the kernel released it with the process
            assert lock.path.read_text().strip() == str(os.getpid())
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_lock_file_without_a_pid_still_refuses(tmp_path: Path) -> None:
    with InstanceLock(tmp_path) as lock:
        lock.path.write_text("")  # the holder between taking the lock and writing its pid
        started = time.monotonic()
        with pytest.raises(AlreadyRunning, match=r"pid unknown"):
            InstanceLock(tmp_path).acquire()
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_unwinds_the_block_once(sig: int) -> None:
    unwound = []
    before = signal.getsignal(sig)
    with pytest.raises(Stopped) as caught, stopped_by_signals():
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises in the main thread at once
        finally:
            os.kill(os.getpid(), sig)  # a second one during the clean-up is ignored
            unwound.append(True)
    assert unwound == [True]
    assert caught.value.signum == sig and caught.value.exit_code == 128 + sig
    assert signal.getsignal(sig) is before  # put back


def test_an_ignored_sigint_stays_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stopped_by_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_worker_answers_only_for_the_file_it_owns(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    db = tmp_path / "home" / "outloop.duckdb"
    (tmp_path / "link").symlink_to(tmp_path / "home", target_is_directory=True)
    health = {"ok": True, "db": str(db.resolve())}
    assert owns(health, db)
    assert owns(health, tmp_path / "link" / "outloop.duckdb")  # the same file through a link
    assert owns(health, tmp_path / "home" / ".." / "home" / "outloop.duckdb")
    assert not owns(health, tmp_path / "other.duckdb")
    assert not owns({"ok": True}, db)  # a worker that does not say which file it owns answers for none
    assert not owns(None, db)
