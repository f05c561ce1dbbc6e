"""The sink process: the one owner of the DuckDB file, running beside the worker's Faust agents.

The worker starts it as a child process (a fresh interpreter, :meth:`SinkProcess.start`) so the
sink's Python work - decoding, folding, Arrow staging, signatures, pattern maintenance - runs on a
core of its own instead of competing with the agents for one interpreter. The child consumes the output topics
(:class:`sinks.consumer.SinkConsumer`), writes with :class:`sinks.writer.DuckSink`, and answers the
worker's requests (read-only queries for ``POST /query``, progress for ``GET /health``) over a
local socket of :mod:`multiprocessing.connection`: authenticated with a random key, one
connection per request, so concurrent queries run concurrently.

Lifecycle:

* The child opens the database (waiting while a previous owner still holds the file lock), then
  starts listening; :meth:`SinkProcess.ping` answers only from then on.
* It stops on a ``stop`` request, SIGTERM or SIGINT: the write in progress finishes (a batch is one
  transaction with its offsets), the file is closed, exit code 0.
* It never outlives the worker: on Linux the kernel sends it SIGTERM when its parent dies
  (``PR_SET_PDEATHSIG``), and a watcher thread notices a changed parent pid everywhere else.
* A sink that cannot go on exits non-zero; the worker watches the process and crashes with it, so
  a supervisor restarts both and nothing is silently not written.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import pickle
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from outloop.sinks.errors import QueryRejected, QueryTimeout
from outloop.streams.heaps import Trimmer, limit_arenas
from outloop.streams.logfiles import quiet_repeats

log = logging.getLogger("outloop.sink")

OPEN_TIMEOUT_S = 60.0  # how long the child waits for a previous owner to release the file
BOUNDED_GRACE_S = 10.0  # how much longer than a query's own limit the worker waits for the sink's answer


class SinkUnavailable(RuntimeError):
    """The sink process is not (yet, or any more) answering."""


class SinkQueryError(RuntimeError):
    """A query failed inside the sink process (bad SQL, missing table, ...)."""


@dataclass(frozen=True)
class SinkSpec:
    """Everything the child needs; picklable (it reaches the child pickled on its stdin)."""

    db: Path
    bootstrap: str
    topic_prefix: str
    max_batch: int
    memory_limit: str | None
    log_level: str
    address: str
    authkey: bytes
    parent_pid: int
    projections: str = ""  # 'module:function' returning the projections the sink runs (sinks.projection)


def _address(home: Path) -> str:
    """An abstract unix socket on Linux (no file to clean up, no path-length trouble); a socket file
    in a private temporary folder elsewhere."""
    name = f"outloop-sink-{os.getpid()}-{secrets.token_hex(6)}"
    if sys.platform.startswith("linux"):
        return "\0" + name
    import tempfile

    return str(Path(tempfile.mkdtemp(prefix="outloop-")) / "sink.sock")


# -- the parent's side ---------------------------------------------------------------------------
class SinkProcess:
    """Start, query and stop the sink child from the worker."""

    def __init__(self, db: Path, bootstrap: str, *, topic_prefix: str, max_batch: int,
                 memory_limit: str | None, log_level: str, home: Path, projections: str = "") -> None:
        self.spec = SinkSpec(db=db, bootstrap=bootstrap, topic_prefix=topic_prefix, max_batch=max_batch,
                             memory_limit=memory_limit, log_level=log_level, address=_address(home),
                             authkey=secrets.token_bytes(32), parent_pid=os.getpid(), projections=projections)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sentinel: int | None = None
        self.ready = False

    def start(self) -> SinkProcess:
        """Start a fresh interpreter (never fork a process that runs an event loop) on :func:`_child`,
        with this interpreter's ``sys.path`` and the spec pickled on its stdin. Not through
        ``multiprocessing``: its spawn starts a resource-tracker process as well (another
        interpreter, 13 MB of RSS) for semaphores and shared memory the sink never uses. The
        sentinel is the read end of a pipe whose only write end the child holds: it becomes
        readable when the child exits, however it exits."""
        code = f"import sys; sys.path[:0] = {sys.path!r}; from outloop.sinks.service import _child; _child()"
        readable, writable = os.pipe()
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                          pass_fds=(writable,))
        except BaseException:
            os.close(readable)
            raise
        finally:
            os.close(writable)
        self._sentinel = readable
        assert self._proc.stdin is not None
        with self._proc.stdin as stdin:
            stdin.write(pickle.dumps(self.spec))
        return self

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def sentinel(self) -> int:
        assert self._sentinel is not None
        return self._sentinel

    @property
    def exitcode(self) -> int | None:
        """None while running; the exit status, or -N after signal N (as ``multiprocessing``)."""
        return None if self._proc is None else self._proc.poll()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def request(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        """One request on a connection of its own. Raises SinkUnavailable when nobody answers."""
        try:
            conn = Client(self.spec.address, family="AF_UNIX", authkey=self.spec.authkey)
        except (OSError, EOFError) as exc:
            raise SinkUnavailable(f"sink process not answering: {exc}") from exc
        with conn:
            try:
                conn.send((op, args))
                if timeout is not None and not conn.poll(timeout):
                    raise SinkUnavailable(f"sink process did not answer {op!r} within {timeout}s")
                status, value = conn.recv()
            except (OSError, EOFError) as exc:
                raise SinkUnavailable(f"sink process went away during {op!r}: {exc}") from exc
        if status == "ok":
            return value
        if status == "rejected":
            raise QueryRejected(value)
        if status == "timeout":
            raise QueryTimeout(value)
        raise SinkQueryError(value)

    def ping(self) -> bool:
        try:
            self.ready = bool(self.request("ping", timeout=2.0))
        except SinkUnavailable:
            return False
        return self.ready

    def query(self, sql: str, params: Any = None, max_rows: int | None = None) -> tuple[list[str], list[list[Any]]]:
        columns, rows = self.request("query", sql, params, max_rows)
        return columns, rows

    def query_bounded(self, sql: str, params: Any, max_rows: int, timeout: float) -> dict[str, Any]:
        """A query cancelled in the sink past ``timeout`` s (:class:`QueryTimeout`) and cut at
        ``max_rows`` rows: {columns, rows, truncated, max_rows}. This side waits a little longer than
        the sink's own limit, so a sink too busy to answer at all becomes :class:`SinkUnavailable`
        instead of a thread blocked for good."""
        return self.request("bounded", sql, params, max_rows, timeout,  # type: ignore[no-any-return]
                            timeout=timeout + BOUNDED_GRACE_S)

    def progress(self) -> dict[str, Any] | None:
        try:
            return self.request("progress", timeout=2.0)  # type: ignore[no-any-return]
        except SinkUnavailable:
            return None

    def stop(self, timeout: float = 30.0) -> int | None:
        """Ask the child to stop after its current write; kill it if it does not within ``timeout``."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                self.request("stop", timeout=2.0)
            except (SinkUnavailable, OSError):  # not listening yet (opening the database): its SIGTERM handler
                with contextlib.suppress(ProcessLookupError):  # sets the same stop, from its first moment
                    proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("sink process did not stop within %.0fs; killing it", timeout)
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        return proc.poll()


# -- the child's side ----------------------------------------------------------------------------
def _die_with_parent(parent_pid: int, stop: threading.Event, on_orphan: Any) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        on_orphan()
        return

    def watch() -> None:
        while not stop.wait(0.5):
            if os.getppid() != parent_pid:
                log.error("sink: the worker process is gone; stopping")
                on_orphan()
                return

    threading.Thread(target=watch, name="outloop-sink-parent-watch", daemon=True).start()


def _bound_native_heaps() -> None:
    """Keep freed memory from piling up in native heaps: glibc makes an arena per thread that
    allocates (the writer, the request threads) and keeps what each one freed; Arrow's allocator
    keeps freed pages for reuse. Two arenas and the system allocator for Arrow keep the sink's
    RSS close to what it holds; the trim (:class:`streams.heaps.Trimmer`, started by :func:`_run`,
    poked after every batch written and every few seconds anyway) hands back what a batch or a
    pattern refresh freed before the next batch allocates."""
    limit_arenas(2)
    with contextlib.suppress(Exception):
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())


def _projections(name: str) -> list[Any]:
    """The projections named ``module:function`` (resolved here, in the child: the layer that names
    them is above storage, and the worker process must not load what they import)."""
    if not name:
        return []
    module, _, function = name.partition(":")
    return list(getattr(importlib.import_module(module), function)())


def _open_sink(spec: SinkSpec) -> Any:
    """Open the database, waiting while a previous owner (a worker being restarted) still holds it."""
    import duckdb

    from outloop.sinks.writer import DuckSink

    deadline = time.monotonic() + OPEN_TIMEOUT_S
    delay = 0.1
    while True:
        try:
            return DuckSink(spec.db, memory_limit=spec.memory_limit, projections=_projections(spec.projections))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            log.info("sink: %s is still held by another process; waiting", spec.db)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _serve(listener: Listener, sink: Any, consumer: Any, request_stop: Any) -> None:
    """Accept connections until the listener closes; one thread per connection."""
    def handle(conn: Connection) -> None:
        with conn:
            try:
                op, args = conn.recv()
            except (EOFError, OSError):
                return
            try:
                if op == "ping":
                    reply: tuple[str, Any] = ("ok", True)
                elif op == "query":
                    reply = ("ok", sink.query(*args))
                elif op == "bounded":
                    reply = ("ok", vars(sink.query_bounded(*args)))  # a dict: the worker never imports DuckDB
                elif op == "progress":
                    reply = ("ok", consumer.progress())
                elif op == "budget":
                    reply = ("ok", sink.check_budget(*args))
                elif op == "budget_release":
                    reply = ("ok", sink.release_budget(*args))
                elif op == "discover":
                    reply = ("ok", sink.discover(*args))
                elif op == "rec_feedback":
                    reply = ("ok", sink.recommendation_feedback(*args))
                elif op == "stop":
                    request_stop()
                    reply = ("ok", True)
                else:
                    reply = ("error", f"unknown request {op!r}")
            except QueryRejected as exc:
                reply = ("rejected", str(exc))
            except QueryTimeout as exc:
                reply = ("timeout", str(exc))
            except Exception as exc:  # a bad query is the caller's problem, not the sink's
                reply = ("error", f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(OSError, EOFError):
                conn.send(reply)

    while True:
        try:
            conn = listener.accept()
        except (OSError, EOFError):
            return  # closed: the sink is stopping
        except Exception as exc:  # a client with the wrong key: refuse it, keep serving
            log.warning("sink: refused a connection: %r", exc)
            continue
        threading.Thread(target=handle, args=(conn,), name="outloop-sink-request", daemon=True).start()


def _child() -> None:
    """The child's entry point: the spec comes pickled on stdin (see :meth:`SinkProcess.start`)."""
    spec = pickle.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    main(spec)


def main(spec: SinkSpec) -> None:
    """Run the sink until stopped (the child's work; also usable in-process by tests)."""
    logging.basicConfig(level=spec.log_level.upper(), stream=sys.stderr,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    quiet_repeats()  # aiokafka's "Updating subscribed topics" at every assignment: only changes are logged
    code = asyncio.run(_run(spec))
    sys.exit(code)


async def _run(spec: SinkSpec) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from outloop.schemas.topics import TopicCatalogue
    from outloop.sinks.consumer import SinkConsumer

    _bound_native_heaps()
    trimmer = Trimmer()
    trimmer.start()
    loop = asyncio.get_running_loop()
    # one writer thread: writes are serial anyway (one transaction at a time), and one thread means
    # one native heap arena for the batches' allocations
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1, thread_name_prefix="outloop-sink-writer"))
    stop = asyncio.Event()
    stopped = threading.Event()

    def request_stop() -> None:
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _die_with_parent(spec.parent_pid, stopped, request_stop)
    try:
        sink = await loop.run_in_executor(None, _open_sink, spec)
    except Exception as exc:
        log.error("sink: cannot open %s: %s", spec.db, exc)
        return 2
    consumer = SinkConsumer(spec.bootstrap, sink, TopicCatalogue(prefix=spec.topic_prefix),
                            max_batch=spec.max_batch, after_write=trimmer.poke)
    listener = Listener(spec.address, family="AF_UNIX", authkey=spec.authkey)
    threading.Thread(target=_serve, args=(listener, sink, consumer, request_stop),
                     name="outloop-sink-listener", daemon=True).start()
    log.info("sink: %s open (pid %d)", spec.db, os.getpid())
    code = 0
    try:
        await consumer.run(stop)
    except Exception as exc:
        log.error("sink: stopped by %r", exc, exc_info=True)
        code = 1
    finally:
        stopped.set()
        trimmer.stop()
        listener.close()
        sink.close()
    return code
