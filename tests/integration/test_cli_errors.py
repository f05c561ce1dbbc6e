"""``outloop up`` against a broker that does not answer: one error line, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from outloop.streams.broker import free_port
from tests import SESSION_TIMEOUT
from tests.unit.test_cli_output import OUTLOOP, env_for

pytestmark = pytest.mark.integration


def test_up_with_an_unreachable_broker_says_so_without_a_traceback(tmp_path: Path) -> None:
    env = env_for(tmp_path / "home")
    env["OUTLOOP_BROKER"] = f"127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    env["OUTLOOP_START_TIMEOUT"] = "2"  # the time it waits is not the point: what it says then is
    proc = subprocess.run([OUTLOOP, "up"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == (f"error: broker at {env['OUTLOOP_BROKER']} did not answer within 2s: "
                           f"Unable to bootstrap from {env['OUTLOOP_BROKER']}\n"), proc.stderr


def test_up_rotates_its_log_files_by_size(tmp_path: Path) -> None:
    """With OUTLOOP_LOG_MAX_MB at 2 KB, the worker's start alone fills worker.log past it: outloop up
    rotates it (worker.log.1) while the worker keeps writing to worker.log."""
    import signal
    import time

    home = tmp_path / "home"
    env = env_for(home)
    env.update(OUTLOOP_LOG_MAX_MB="0.002", OUTLOOP_LOG_BACKUPS="2", OUTLOOP_HTTP_PORT="0",
               OUTLOOP_SESSION_TIMEOUT=str(SESSION_TIMEOUT))  # the group's first join is held 1 s, not 3
    proc = subprocess.Popen([OUTLOOP, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        rotated = home / "logs" / "worker.log.1"
        deadline = time.monotonic() + 60
        while not rotated.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rotated.exists() and rotated.stat().st_size > 2048
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert not (home / "logs" / "worker.log.3").exists()
    assert b"\0" not in (home / "logs" / "worker.log").read_bytes()
