"""Log files: repeated library messages are quieted, files rotate by size while a child process
keeps writing to them."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition

from outloop.streams.logfiles import LogRotation, RepeatsQuieted, backup_path, quiet_repeats, rotate
from outloop.streams.settings import Settings


def test_aiokafka_assignments_repeated_every_few_seconds_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """The sink's probe consumer assigns its partitions and releases them every 10 s; aiokafka logs
    'Updating subscribed topics' at each (two alternating messages). Each is logged once; a new one
    at once."""
    quiet_repeats()
    quiet_repeats()  # idempotent
    same = [TopicPartition("t.usage", 0), TopicPartition("t.dlq", 0)]

    async def assign() -> None:  # aiokafka makes futures of the running loop
        state = SubscriptionState()
        for _ in range(5):
            state.assign_from_user(same)
            state.assign_from_user([])
        state.assign_from_user([*same, TopicPartition("t.tool-calls", 0)])

    with caplog.at_level(logging.INFO, logger="aiokafka"):
        asyncio.run(assign())
    lines = [r.getMessage() for r in caplog.records if "Updating subscribed topics" in r.getMessage()]
    assert len(lines) == 3, lines


def test_a_repeat_is_logged_again_after_the_window() -> None:
    now = [0.0]
    f = RepeatsQuieted(window=60, keep=2, clock=lambda: now[0])

    def passes(message: str) -> bool:
        return f.filter(logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None))

    assert [passes("a"), passes("a"), passes("b"), passes("a")] == [True, False, True, False]
    now[0] = 61.0
    assert [passes("a"), passes("a")] == [True, False]
    passes("c")
    passes("d")  # keeps 2: "a" is forgotten
    assert passes("a") is True


def test_rotation_keeps_backups_and_the_writer_goes_on_at_the_new_end(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    code = ("import sys, time\n"
            "for i in range(400):\n"
            "    sys.stdout.write(f'line {i:04d} ' + 'x' * 2000 + '\\n'); sys.stdout.flush(); time.sleep(0.002)\n")
    with log.open("ab") as fh:  # as the runtime opens it for its children
        child = subprocess.Popen([sys.executable, "-c", code], stdout=fh)
    rotation = LogRotation([log, tmp_path / "broker.log"], max_bytes=100_000, backups=2, every=0.0)
    rotated = 0
    while child.poll() is None:
        rotated += len(rotation.check(time.monotonic()))
        time.sleep(0.01)
    assert child.wait() == 0
    assert rotated >= 3
    files = [backup_path(log, 2), backup_path(log, 1), log]
    assert not backup_path(log, 3).exists()
    text = b"".join(p.read_bytes() for p in files)
    assert b"\0" not in text  # appended at the new end: no hole where the old content was
    numbers = [int(line.split()[1]) for line in text.decode().splitlines()]
    assert numbers == sorted(numbers) and numbers[-1] == 399  # oldest to newest, nothing reordered
    assert all(p.stat().st_size <= 100_000 + 2 * 2010 + 100_000 for p in files)


def test_rotate_bounds() -> None:
    assert rotate(Path("/nonexistent/x.log"), 10, 3) is False


def test_rotate_without_backups_truncates(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    log.write_bytes(b"a" * 50)
    assert rotate(log, 0, 3) is False and rotate(log, 100, 3) is False
    assert rotate(log, 10, 0) is True
    assert log.read_bytes() == b"" and not backup_path(log, 1).exists()


def test_settings() -> None:
    s = Settings.from_env({"OUTLOOP_LOG_MAX_MB": "5", "OUTLOOP_LOG_BACKUPS": "7"})
    assert (s.log_max_mb, s.log_backups) == (5.0, 7)
    assert Settings.from_env(s.to_env()) == s
    assert (Settings.from_env({}).log_max_mb, Settings.from_env({}).log_backups) == (20.0, 3)
    with pytest.raises(ValueError, match="must not be negative"):
        Settings.from_env({"OUTLOOP_LOG_BACKUPS": "-1"})
