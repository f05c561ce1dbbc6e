"""outloop's log files: size-based rotation, and a filter that quiets messages repeated over and over.

The log files (``$OUTLOOP_HOME/logs/worker.log``, ``broker.log``) are written by child processes
through the file descriptors they were started with (the worker, its DuckDB sink process, the Tansu
broker, and whatever they print on a crash), so no in-process handler can rotate them. The process
that started them rotates them instead, by copy and truncate (logrotate's ``copytruncate``): past
``OUTLOOP_LOG_MAX_MB`` a file is copied to ``<name>.1`` (older copies shift to ``.2`` ... up to
``OUTLOOP_LOG_BACKUPS``, the oldest is deleted) and truncated; the writers opened it for appending,
so they go on at its new end. Lines written in the instant between the copy and the truncation
can be lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

# loggers that repeat one message unchanged every few seconds; only a change is worth a line
REPEATED = ("aiokafka.consumer.subscription_state", "kafka.consumer.subscription_state")


class RepeatsQuieted(logging.Filter):
    """Lets a message through once per ``window`` seconds: aiokafka logs ``Updating subscribed topics
    to: ...`` at every partition assignment, and the sink's probe consumer assigns and releases its
    partitions every 10 s (two alternating messages, ~17k lines a day). A message not seen within
    the window (a real change) is logged at once. Remembers at most ``keep`` messages."""

    def __init__(self, window: float = 3600.0, keep: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.keep = keep
        self.clock = clock
        self.seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        now = self.clock()
        last = self.seen.get(message)
        if last is not None and now - last < self.window:
            return False
        self.seen.pop(message, None)
        self.seen[message] = now
        while len(self.seen) > self.keep:
            del self.seen[next(iter(self.seen))]
        return True


def quiet_repeats() -> None:
    """Install :class:`RepeatsQuieted` on the loggers of :data:`REPEATED` (idempotent)."""
    for name in REPEATED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatsQuieted) for f in logger.filters):
            logger.addFilter(RepeatsQuieted())


def backup_path(path: Path, i: int) -> Path:
    return path.with_name(f"{path.name}.{i}")


def rotate(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate ``path`` by copy and truncate when it holds more than ``max_bytes`` (0: never);
    True when it did. Keeps ``backups`` copies (0: the file is only truncated)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if max_bytes <= 0 or size <= max_bytes:
        return False
    if backups > 0:
        backup_path(path, backups).unlink(missing_ok=True)
    for i in range(backups - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(backup_path(path, i), backup_path(path, i + 1))
    if backups > 0:
        shutil.copyfile(path, backup_path(path, 1))
    os.truncate(path, 0)
    return True


class LogRotation:
    """Rotates a set of log files (see :func:`rotate`), looking at most every ``every`` seconds."""

    def __init__(self, paths: list[Path], max_bytes: int, backups: int, every: float = 10.0) -> None:
        self.paths = paths
        self.max_bytes = max_bytes
        self.backups = backups
        self.every = every
        self._next = float("-inf")

    def check(self, now: float) -> list[Path]:
        """Rotate what is due; returns the files rotated (errors are logged, never raised)."""
        if now < self._next:
            return []
        self._next = now + self.every
        done = []
        for path in self.paths:
            try:
                if rotate(path, self.max_bytes, self.backups):
                    done.append(path)
            except OSError as exc:
                logging.getLogger("outloop.logs").warning("could not rotate %s: %s", path, exc)
        return done
