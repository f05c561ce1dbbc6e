"""Starting and stopping the pieces: broker (embedded when none is configured), worker process,
forwarder. Used by ``outloop up``, ``replay`` and ``demo`` and by the integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from outloop.client import WorkerClient
from streams.broker import EmbeddedBroker, free_port, wait_for_kafka
from streams.settings import Settings


class StackError(RuntimeError):
    pass


class Stack:
    """broker + worker (+ forwarder thread). ``settings.http_port == 0`` picks a free port."""

    def __init__(self, settings: Settings, *, forwarder: bool = False, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.want_forwarder = forwarder
        self.log_dir = log_dir or settings.home / "logs"
        self.broker: EmbeddedBroker | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self._fwd_stop = threading.Event()
        self._fwd_thread: threading.Thread | None = None

    @property
    def worker_log(self) -> Path:
        return self.log_dir / "worker.log"

    def start(self, timeout: float = 30.0) -> Stack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        if s.broker:
            wait_for_kafka(s.broker, timeout)
            bootstrap = s.broker
        else:
            self.broker = EmbeddedBroker(self.log_dir / "broker.log").start(timeout)
            bootstrap = self.broker.bootstrap
        port = s.http_port or free_port(s.http_host)
        self.settings = s = replace(s, broker=bootstrap, http_port=port)
        from streams.publisher import Publisher

        with Publisher(bootstrap, partitions=s.partitions, prefix=s.topic_prefix) as pub:
            pub.ensure_topics()
        self.start_worker(timeout)
        if self.want_forwarder:
            self._start_forwarder()
        return self

    def start_worker(self, timeout: float = 30.0) -> None:
        env = {**os.environ, **self.settings.to_env()}
        log = open(self.worker_log, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.worker = subprocess.Popen([sys.executable, "-m", "streams.worker"], env=env,
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.worker.poll() is not None:
                raise StackError(f"worker exited with {self.worker.returncode}; see {self.worker_log}")
            health = self.client.health(timeout=1.0)
            if health and health.get("ok"):
                return
            time.sleep(0.1)
        raise StackError(f"worker not ready within {timeout:.0f}s; see {self.worker_log}")

    def _start_forwarder(self) -> None:
        from streams.forwarder import Forwarder

        fwd = Forwarder.from_settings(self.settings)
        self._fwd_thread = threading.Thread(target=fwd.run_forever, args=(self._fwd_stop,),
                                            name="outloop-forwarder", daemon=True)
        self._fwd_thread.start()

    @property
    def client(self) -> WorkerClient:
        return WorkerClient(self.settings.http_host, self.settings.http_port)

    def stop_worker(self, timeout: float = 30.0) -> None:
        proc, self.worker = self.worker, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.kill()
            self.worker.wait()
        self.worker = None

    def stop(self) -> None:
        self._fwd_stop.set()
        if self._fwd_thread is not None:
            self._fwd_thread.join(timeout=15)
        self.stop_worker()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
