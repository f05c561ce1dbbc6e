"""The worker, the forwarder and the transcript tailer as components of a stack (see
``outloop.streams.lifecycle``; the broker and the router are components of their own modules).

:class:`WorkerProcess` is ``python -m outloop.worker``: ready once its own ``/health`` answers ok (the
pid in the answer is its own: another worker on the same HTTP port is not this stack's); its exits
count toward the stack's restart bound (:attr:`Restart.COUNTED`); a stop or kill takes its process
group, so its DuckDB sink child goes with it. A start that is not ready in time leaves it starting:
the supervisor judges it later (a worker joins its consumer group only after a dead member timed out).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from outloop.client import WorkerClient
from outloop.streams.lifecycle import ComponentError, ProcessComponent, Restart, ThreadComponent
from outloop.streams.settings import Settings

if TYPE_CHECKING:  # imported by their users when they run: a replay without them does not pay for them
    from outloop.streams.forwarder import Forwarder
    from outloop.streams.tailer import Tailer


class StackError(ComponentError):
    pass


class WorkerProcess(ProcessComponent):
    name = "worker"
    restart_policy = Restart.COUNTED
    kill_group = True  # its sink child too: it would otherwise finish its write and hold the DuckDB file
    kill_unready = False
    ready_every = 0.1
    error = StackError

    def __init__(self, settings: Settings, log_path: Path, *, die_with_parent: bool = False) -> None:
        super().__init__(log_path, die_with_parent=die_with_parent)
        self.settings = settings
        self.other: int | None = None  # the pid of another worker answering on our port

    @property
    def client(self) -> WorkerClient:
        return WorkerClient(self.settings.http_host, self.settings.http_port)

    def argv(self) -> list[str]:
        # -P: the installed outloop, not one in the current folder (an outloop checkout, say)
        return [sys.executable, "-P", "-m", "outloop.worker"]

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings.to_env()}

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        self.other = None
        super().start(timeout)
        return self

    def ready(self) -> bool:
        health = self.client.health(timeout=1.0)
        if not health:
            return False
        if health.get("pid") not in (None, self.pid):
            self.other = health.get("pid")
            return False
        return bool(health.get("ok")) and health.get("pid") == self.pid

    def exited_message(self, code: int) -> str:
        taken = (f" (HTTP port {self.settings.http_port} is taken by another worker, pid {self.other})"
                 if self.other is not None else "")
        return f"worker exited with {code}{taken}; see {self.log_path}"

    def unready_message(self, timeout: float) -> str:
        return f"worker not ready within {timeout:.0f}s; see {self.log_path}"


def forwarder_component(forwarder: Forwarder) -> ThreadComponent:
    """The forwarder's loop as a component; a kill abandons a pass waiting for a dead broker."""
    return ThreadComponent("forwarder", forwarder, on_kill=forwarder.abandon)


def tailer_component(tailer: Tailer) -> ThreadComponent:
    return ThreadComponent("tailer", tailer)
