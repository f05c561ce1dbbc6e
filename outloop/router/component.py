"""The router as a component of ``outloop up``: start, ready, alive, stop, and a stdlib client.

:class:`RouterProcess` runs ``python -m outloop.router.server`` in a process of its own (its log in
the stack's log folder); the supervisor starts a fresh one when it exits. :func:`ask` is the client
the benchmarks, tests and ``OutloopClient`` use: one request, one answer, over the socket.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


class RouterProcess:
    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_path = log_dir / "router.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def socket_path(self) -> str:
        return router_socket({**os.environ, **self.settings.to_env()})

    def start(self, timeout: float = 20.0) -> RouterProcess:
        env = {**os.environ, **self.settings.to_env()}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "outloop.router.server"], env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited with {self.proc.returncode}; see {self.log_path}")
            if ping(self.socket_path, 0.5):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"router not ready within {timeout:.0f}s; see {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """A fresh router after the last one exited (its memory of sessions starts empty)."""
        self.stop()
        self.restarts += 1
        self.start()
