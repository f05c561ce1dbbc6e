"""The router as a component of ``outloop up``: the lifecycle of every component (start, ready,
alive, stop, kill, restart policy), and a stdlib client.

:class:`RouterProcess` runs ``python -m outloop.router.server`` in a process of its own (its log in
the stack's log folder); the supervisor starts a fresh one when it exits. :func:`ask` is the client
the benchmarks, tests and ``OutloopClient`` use: one request, one answer, over the socket.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from outloop.streams.lifecycle import ComponentError, ProcessComponent, Restart
from outloop.streams.settings import Settings
from outloop.streams.shim import router_socket


def ask(payload: bytes, path: str | None = None, timeout: float = 2.0, wait: bool = True) -> bytes:
    """Send one hook payload to the router; its answer (b"" for none). Raises OSError when it
    does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path or router_socket())
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        if not wait:
            return b""
        chunks: list[bytes] = []
        while True:
            block = sock.recv(65536)
            if not block:
                return b"".join(chunks)
            chunks.append(block)


def ping(path: str | None = None, timeout: float = 1.0) -> bool:
    try:
        return ask(b'{"outloop":"ping"}', path, timeout) == b"pong"
    except OSError:
        return False


class RouterError(ComponentError):
    """The router did not start."""


class RouterProcess(ProcessComponent):
    """``python -m outloop.router.server``, a :class:`~outloop.streams.lifecycle.Component`: ready once
    it answers a ping on its socket; a fresh one replaces it when it exits (:attr:`Restart.ALONE`: the
    hooks fail open meanwhile, its memory of sessions starts empty)."""

    name = "router"
    restart_policy = Restart.ALONE
    kill_unready = False
    error = RouterError

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        super().__init__(log_dir / "router.log")
        self.settings = settings

    @property
    def socket_path(self) -> str:
        return router_socket({**os.environ, **self.settings.to_env()})

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "outloop.router.server"]

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings.to_env()}

    def ready(self) -> bool:
        return ping(self.socket_path, 0.5)

    def exited_message(self, code: int) -> str:
        return f"router exited with {code}; see {self.log_path}"

    def unready_message(self, timeout: float) -> str:
        return f"router not ready within {timeout:.0f}s; see {self.log_path}"

    def start(self, timeout: float = 20.0) -> RouterProcess:
        super().start(timeout)
        return self
