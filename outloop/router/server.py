"""The router component: a process of its own, started and supervised by ``outloop up``.

It keeps the signature code loaded and the rules, pattern confidences and session memory in
:class:`outloop.router.state.Router`, and answers the hook shim over a Unix socket
(``$OUTLOOP_HOME/router.sock``; ``OUTLOOP_ROUTER_SOCKET`` overrides it). Protocol: the client
sends one hook payload and shuts its writing side; the router answers with the bytes the hook
prints (nothing for "no answer") and closes. A PostToolUse payload gets no answer: the shim does
not wait for one. ``{"outloop":"ping"}`` answers ``pong``.

Every PreToolUse decision (shadow ones too) is recorded as a ``routing.decision`` envelope in the
hook spool, after the answer went out: the forwarder ships it like a hook payload, so nothing is
lost while the broker is down. The rules file and the sink's snapshot are looked at every second:
a rule changed through ``outloop routes`` takes effect within about a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from outloop.router.rules import user_path
from outloop.router.state import Router, registry_records, snapshot_path
from outloop.streams.settings import Settings
from outloop.streams.shim import router_socket
from outloop.streams.spool import Spool, utc_iso

log = logging.getLogger("outloop.router")

MAX_REQUEST = 32 * 1024 * 1024
RECORD_SOURCE = "router"


def envelope(kind: str, id: str, subject: str, data: dict[str, Any], ns: int) -> bytes:
    """A spool record body the forwarder publishes as it is."""
    return orjson.dumps({"specversion": "1", "id": id, "type": kind, "source": RECORD_SOURCE,
                         "time": utc_iso(ns), "subject": subject, "data": data})


def decision_envelope(data: dict[str, Any], ns: int) -> bytes:
    """The spool record body of a decision."""
    return envelope("routing.decision", data["decision_id"], data["session_id"], data, ns)


def registry_envelopes(records: list[tuple[str, str, dict[str, Any]]], ns: int) -> list[bytes]:
    """The spool record bodies of the rule and tool records (ids from their name, version, time)."""
    return [envelope(kind, f"{kind}:{data['name']}:{data['version']}:{data['updated_at']}", subject, data, ns)
            for kind, subject, data in records]


class Recorder(threading.Thread):
    """Writes decision events to the spool off the answering path (a full disk costs no answer)."""

    def __init__(self, spool: Spool) -> None:
        super().__init__(name="outloop-router-recorder", daemon=True)
        self.spool = spool
        self.queue: queue.Queue[dict[str, Any] | bytes | None] = queue.Queue(maxsize=100_000)
        self.written = self.failed = 0

    def put(self, data: dict[str, Any] | bytes) -> None:
        """A decision's data, or a record body already made."""
        try:
            self.queue.put_nowait(data)
        except queue.Full:
            self.failed += 1

    def run(self) -> None:
        while True:
            data = self.queue.get()
            if data is None:
                return
            try:
                ns = time.time_ns()
                body = data if isinstance(data, bytes) else decision_envelope(data, ns)
                self.spool.write(body, ns=ns, source=RECORD_SOURCE)
                self.written += 1
            except Exception as exc:  # noqa: BLE001 - logged, counted; the router keeps answering
                self.failed += 1
                log.error("router: a decision could not be spooled: %r", exc)

    def stop(self, timeout: float = 5.0) -> None:
        self.queue.put(None)
        self.join(timeout)


class Server:
    def __init__(self, router: Router, path: str, recorder: Recorder | None) -> None:
        self.router = router
        self.path = path
        self.recorder = recorder
        self.stop = threading.Event()
        self.sock: socket.socket | None = None
        self._published: set[bytes] = set()

    def publish_registry(self) -> int:
        """Record the rules and tools that changed since the last call (all of them the first time)."""
        if self.recorder is None:
            return 0
        records = registry_envelopes(registry_records(self.router.rules, self.router.rules_path), time.time_ns())
        fresh = [r for r in records if orjson.loads(r)["id"].encode() not in self._published]
        for body in fresh:
            self._published.add(orjson.loads(body)["id"].encode())
            self.recorder.put(body)
        return len(fresh)

    def bind(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        sock.bind(tmp)
        os.chmod(tmp, 0o600)
        sock.listen(512)
        os.replace(tmp, self.path)  # clients never see a socket file nobody listens on
        self.sock = sock

    def serve(self) -> None:
        assert self.sock is not None
        self.sock.settimeout(0.5)
        threading.Thread(target=self._watch, name="outloop-router-reload", daemon=True).start()
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stop.is_set():
                    return
                raise
            threading.Thread(target=self._answer, args=(conn,), name="outloop-router-conn", daemon=True).start()

    def _watch(self) -> None:
        self.publish_registry()
        while not self.stop.wait(1.0):
            try:
                if self.router.refresh():
                    self.publish_registry()
            except Exception:  # noqa: BLE001 - a bad reload keeps the last good state
                log.exception("router: reload failed")

    def _answer(self, conn: socket.socket) -> None:
        event = None
        with conn:
            try:
                conn.settimeout(5.0)
                chunks, size = [], 0
                while True:
                    block = conn.recv(1 << 16)
                    if not block:
                        break
                    size += len(block)
                    if size > MAX_REQUEST:
                        return
                    chunks.append(block)
                reply, event = self.router.handle(b"".join(chunks))
                if reply:
                    conn.sendall(reply)
            except OSError:  # the shim gave up (its budget): it printed nothing, the call went on unchanged
                if event is not None:
                    event = {**event, "answered": False, "reason": event["reason"] + " (not answered: the hook "
                                                                                     "had given up)"}
            except Exception:  # noqa: BLE001 - a bug answers nothing, never crashes the router
                self.router.counters["errors"] += 1
                log.exception("router: a request failed")
                return
        if event is not None and self.recorder is not None:
            self.recorder.put(event)

    def close(self) -> None:
        self.stop.set()
        if self.sock is not None:
            self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def build_server(settings: Settings, path: str | None = None) -> Server:
    router = Router(user_path(), snapshot_path(settings.db))
    recorder = Recorder(Spool(settings.spool))
    return Server(router, path or router_socket(), recorder)


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT."""
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    server = build_server(settings)
    assert server.recorder is not None
    server.recorder.start()
    server.bind()
    signal.signal(signal.SIGTERM, lambda *_: server.stop.set())
    log.info("router: answering on %s (rules %s)", server.path, server.router.rules_path)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        server.recorder.stop()


if __name__ == "__main__":
    run(Settings.from_env())
