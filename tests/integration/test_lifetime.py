"""Nothing a command started outlives it: a replay stopped by any signal leaves no broker, worker or
sink process (and no temporary folder when it could clean up), and `outloop demo` removes its
temporary folder. Real processes, checked with psutil."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from outloop.sample import write_sample
from outloop.streams.broker import free_port
from tests.polling import wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTLOOP = str(Path(sys.executable).with_name("outloop"))


def command_env(tmp: Path) -> dict[str, str]:
    """A user's environment: no broker configured (the command starts its own), temporary files in
    a folder of the test's own."""
    (tmp / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "OUTLOOP_HOME": str(tmp / "home"), "OUTLOOP_HTTP_PORT": str(free_port()),
           "TMPDIR": str(tmp / "tmp")}
    for name in ("OUTLOOP_BROKER", "OUTLOOP_DB", "OUTLOOP_SPOOL", "OUTLOOP_SESSION_TIMEOUT"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lifetime") / "sample"
    write_sample(folder, sessions=12)
    return folder


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_a_replay_stopped_by_a_signal_leaves_no_process_behind(sig: int, sample: Path, tmp_path: Path) -> None:
    env = command_env(tmp_path)
    # as from a terminal: SIGINT is not inherited as ignored when this test runs in a background job
    proc = subprocess.Popen([OUTLOOP, "replay", str(sample), "--db", str(tmp_path / "out.duckdb")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    started: list[psutil.Process] = []
    try:
        # broker, worker and the worker's sink: the whole tree is up, the replay is under way
        wait(lambda: proc.poll() is not None or len(descendants(proc.pid)) >= 3, 90, "the replay's processes")
        assert proc.poll() is None, "the replay ended before it could be stopped"
        started = descendants(proc.pid)
        proc.send_signal(sig)
        try:  # at once: a worker stopped while its sink opens the database used to take 30 s
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the replay still runs 20 s after {signal.Signals(sig).name}") from None
        assert proc.stderr is not None
        said = proc.stderr.read().decode(errors="replace")
        gone, alive = psutil.wait_procs(started, timeout=15)
        assert not alive, f"left running after {signal.Signals(sig).name}: " + ", ".join(
            f"{p.pid} {' '.join(p.cmdline()[:3])}" for p in alive)
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
            return
        assert code == 128 + sig, said
        assert f"stopped by {signal.Signals(sig).name}" in said, said
        assert not list((tmp_path / "tmp").iterdir())  # its private home removed on the way out
    finally:
        for p in [*started, *descendants(proc.pid)]:
            if p.is_running():
                p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("with_db", [True, False], ids=["with-db", "default-db"])
def test_demo_removes_its_temporary_folder(with_db: bool, tmp_path: Path) -> None:
    env = command_env(tmp_path)
    db = tmp_path / "demo.duckdb"
    r = subprocess.run([OUTLOOP, "demo", "--sessions", "1", *(["--db", str(db)] if with_db else [])], env=env,
                       capture_output=True, timeout=180)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    left = list((tmp_path / "tmp").iterdir())
    if with_db:
        assert db.is_file()
        assert not left, left
    else:  # only the database, a file the report names, kept for querying
        assert len(left) == 1 and left[0].is_file() and left[0].suffix == ".duckdb", left
        assert str(left[0]) in r.stdout.decode()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_up_stopped_by_a_signal_stops_what_it_started(sig: int, tmp_path: Path) -> None:
    """`outloop up` whose terminal closes (SIGHUP) or that is killed (SIGTERM) stops cleanly."""
    env = command_env(tmp_path)
    proc = subprocess.Popen([OUTLOOP, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: list[psutil.Process] = []
    try:
        wait(lambda: proc.poll() is not None or len(descendants(proc.pid)) >= 3, 90, "outloop up's processes")
        assert proc.poll() is None
        started = descendants(proc.pid)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(started, timeout=15)
        assert not alive, [p.pid for p in alive]
    finally:
        for p in [*started, *descendants(proc.pid)]:
            if p.is_running():
                p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
