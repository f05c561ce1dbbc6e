"""Fixtures of the reliability scenarios: a broker started late, a tiny real filesystem, a stack that
drains a spool into DuckDB."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from outloop.runtime import Stack
from outloop.streams.broker import EmbeddedBroker
from outloop.streams.settings import Settings
from outloop.streams.spool import Spool
from tests import SESSION_TIMEOUT


@pytest.fixture
def late_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker whose address is known but which is not running: the test starts it when it wants."""
    b = EmbeddedBroker(tmp_path / "tansu.log", die_with_parent=True)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs mounted on a temporary folder, unmounted afterwards (needs root on Linux)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a real full filesystem needs root on Linux to mount a tiny tmpfs")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip() or done.returncode}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def drain_and_flush(stack: Stack, spool: Path, timeout: float) -> None:
    """Wait until the stack's forwarder emptied ``spool``, then until a flush marker published after
    that reached every output partition: everything spooled is then in DuckDB."""
    from outloop.replay import publish_markers, wait_for_marker
    from outloop.schemas.topics import TopicCatalogue
    from outloop.streams.publisher import Publisher

    deadline = time.monotonic() + timeout
    while Spool(spool).count():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{Spool(spool).count()} records still spooled after {timeout:.0f}s")
        time.sleep(0.2)
    s = stack.settings
    assert s.broker
    cat, marker = TopicCatalogue(prefix=s.topic_prefix), uuid.uuid4().hex
    with Publisher(s.broker, catalogue=cat, partitions=s.partitions) as pub:
        expected = publish_markers(pub, cat, marker, s.partitions)
    wait_for_marker(stack.client, marker, expected, max(deadline - time.monotonic(), 30.0))


@pytest.fixture
def drained_stack(tmp_path: Path) -> Callable[..., Any]:
    """``with drained_stack(broker, spool) as stack:`` an isolated stack (own topics, consumer group,
    database) whose forwarder drains ``spool``; entered once all of it is materialized."""

    @contextlib.contextmanager
    def make(broker: str, spool: Path, timeout: float = 120.0) -> Iterator[Stack]:
        tag = uuid.uuid4().hex[:8]
        settings = Settings.from_env({}, home=tmp_path / "home", broker=broker, db=tmp_path / "out.duckdb",
                                     spool=spool, topic_prefix=f"r{tag}", app_id=f"outloop-r{tag}", http_port=0,
                                     session_timeout=SESSION_TIMEOUT)
        with Stack(settings, forwarder=True) as stack:
            drain_and_flush(stack, spool, timeout)
            yield stack

    return make
