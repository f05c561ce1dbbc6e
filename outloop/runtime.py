"""Starting, stopping and supervising the pieces: broker (embedded when none is configured),
worker process, forwarder, transcript tailer. Used by ``outloop up``, ``replay`` and ``demo`` and by the integration
tests.

Supervision (``Stack(..., supervise=True)``, what ``outloop up`` runs). The embedded broker keeps
its log in memory, so its restart must take the worker with it: a worker that outlives it commits
its old-log positions to the new broker and skips or stalls. When the embedded broker exits on its
own, the supervisor SIGKILLs the worker first (it commits nothing to the new broker), restarts the
broker on the same port, re-creates the topics, tells the forwarder to send its sent journal again
and starts a fresh worker, which reads the new log from its start. The same restart, done on
purpose once the pipeline is drained, *recycles* a broker whose memory passed
``OUTLOOP_BROKER_MAX_RSS_MB`` (Tansu 0.6 ignores retention and drops DeleteRecords). A worker that
exits on its own while the broker lives (a batch it could not deliver, its sink process gone, the
kernel's OOM killer) is replaced by a fresh one, which resumes from its group's committed offsets.
Restarts of either count together: past ``max_restarts`` within the window, ``outloop up`` gives up
and says why. The decisions
are made by :class:`outloop.supervision.Supervision` (pure, time passed in); :class:`Stack` only observes processes and
carries the decisions out.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from outloop.client import WorkerClient
from outloop.components import StackError, WorkerProcess, forwarder_component, tailer_component
from outloop.streams.broker import BrokerError, EmbeddedBroker, free_port, wait_for_kafka
from outloop.streams.lifecycle import Component, ThreadComponent
from outloop.streams.logfiles import LogRotation
from outloop.streams.settings import Settings
from outloop.supervision import Action, Decision, JournalConfirmation, Observed, Supervision

log = logging.getLogger("outloop.supervisor")

__all__ = ["Stack", "StackError"]


def high_watermarks(bootstrap: str, positions: dict[tuple[str, int], int]) -> dict[tuple[str, int], int | None]:
    """The log end of each partition, from a fetch at the given position (Tansu 0.6 answers
    ListOffsets(latest) wrongly, so ends come from fetch responses). None when unknown."""
    from kafka import KafkaConsumer, TopicPartition

    if not positions:
        return {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="none", max_partition_fetch_bytes=1024, fetch_max_wait_ms=50,
                             request_timeout_ms=5000, client_id="outloop-supervisor")
    try:
        tps = {TopicPartition(t, p): pos for (t, p), pos in positions.items()}
        consumer.assign(list(tps))
        for tp, pos in tps.items():
            consumer.seek(tp, max(0, pos))
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            with contextlib.suppress(Exception):  # out of range: the log restarted, its end stays unknown
                consumer.poll(timeout_ms=200, max_records=1)
        return {(tp.topic, tp.partition): consumer.highwater(tp) for tp in tps}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets (0 where it committed none); joins no group."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             request_timeout_ms=5000, client_id="outloop-supervisor")
    try:
        return {(t, p): consumer.committed(TopicPartition(t, p), timeout_ms=5000) or 0 for t, p in partitions}
    finally:
        consumer.close()


def topic_partitions(bootstrap: str, topics: list[str]) -> list[tuple[str, int]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000, client_id="outloop-supervisor")
    try:
        return sorted((t, p) for t in topics for p in consumer.partitions_for_topic(t) or ())
    finally:
        consumer.close()


def bounded(fn: Callable[[], Any], timeout: float) -> Any:
    """``fn()`` in a daemon thread; its result, or TimeoutError after ``timeout`` s (the thread is
    abandoned). Keeps a Kafka client that waits on a dead broker from blocking the supervisor."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=run, name="outloop-supervisor-call", daemon=True)
    t.start()
    t.join(timeout)
    if error:
        raise error[0]
    if not result:
        raise TimeoutError(f"no answer within {timeout:.0f}s")
    return result[0]


def process_rss(pid: int | None) -> int | None:
    import psutil

    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


class Stack:
    """broker + worker (+ forwarder thread) (+ supervisor thread). ``settings.http_port == 0``
    picks a free port. With ``supervise``, a thread watches the processes (see the module doc);
    ``failure`` then says why the stack gave up, and ``on_event`` receives every line of what the
    supervisor did (they are logged to ``outloop.supervisor`` and kept in ``events`` too).

    ``die_with_parent`` (Linux; a stack without supervision, started from the main thread, such as a
    replay's): the embedded broker and the worker are SIGKILLed when the thread that started them
    dies, so even a SIGKILLed command leaves neither behind (the worker's sink child follows it)."""

    def __init__(self, settings: Settings, *, forwarder: bool = False, log_dir: Path | None = None,
                 supervise: bool = False, on_event: Callable[[str], None] | None = None,
                 tick: float = 0.5, die_with_parent: bool = False, router: bool = False,
                 tailer: bool = False) -> None:
        if die_with_parent and supervise:
            raise ValueError("a supervised stack restarts processes from its supervisor thread: no die_with_parent")
        self.die_with_parent = die_with_parent
        self.settings = settings
        self.want_forwarder = forwarder
        self.want_router = router
        self.router: Any = None  # outloop.router.component.RouterProcess while running
        self.want_tailer = tailer
        self.tailer: Any = None  # streams.tailer.Tailer while running
        self.log_dir = log_dir or settings.home / "logs"
        self.broker: EmbeddedBroker | None = None
        self._worker: WorkerProcess | None = None
        self.forwarder: Any = None  # streams.forwarder.Forwarder while running
        self.components: list[Component] = []  # in start order: broker, worker, forwarder, router, tailer
        self.want_supervise = supervise
        self.on_event = on_event
        self.tick = tick
        self.supervision = Supervision(int(settings.broker_max_rss_mb * 2**20),
                                       max_restarts=settings.broker_max_restarts,
                                       stall_after=settings.stall_restart)
        self._assigned: tuple[float, int | None] = (float("-inf"), None)  # when asked, what the worker said
        self.confirmation = JournalConfirmation(settings.journal_confirm)
        self.events: list[str] = []
        self.failure: str | None = None
        self.failed = threading.Event()
        self.restarts = 0  # broker restarts after it exited on its own, or for a worker without partitions
        self.restart_counts: dict[str, int] = {}  # fresh ones of a counted component after it exited on its own
        self.recycles = 0  # broker restarts on purpose (memory bound)
        self._sup_stop = threading.Event()
        self._sup_thread: threading.Thread | None = None
        self._drain: tuple[str, int, list[str]] | None = None  # marker, expected partitions, journal ids
        self._journal_expected = 0
        self._journal_generation = 0
        self._journal_lock = threading.Lock()  # journal requeues (restarts) vs proven drops
        self._generation = 0  # broker incarnations: a journal proof is valid only within one
        self._confirm_thread: threading.Thread | None = None
        self.log_rotation = LogRotation([self.worker_log, self.log_dir / "broker.log"],
                                        int(settings.log_max_mb * 2**20), settings.log_backups)

    @property
    def worker_log(self) -> Path:
        return self.log_dir / "worker.log"

    @property
    def worker_restarts(self) -> int:
        """Fresh workers after the last one exited on its own."""
        return self.restart_counts.get("worker", 0)

    @property
    def worker(self) -> subprocess.Popen[bytes] | None:
        """The worker's process while one was started (None after a stop or kill)."""
        return None if self._worker is None else self._worker.proc

    def _add(self, component: Component, timeout: float) -> None:
        self.components.append(component)
        component.start(timeout)

    def start(self, timeout: float | None = None) -> Stack:
        """Start every component, each ready within ``timeout`` s (None: ``OUTLOOP_START_TIMEOUT``)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        timeout = s.start_timeout if timeout is None else timeout
        if s.broker:
            wait_for_kafka(s.broker, timeout)
            bootstrap = s.broker
        else:
            self.broker = EmbeddedBroker(self.log_dir / "broker.log", die_with_parent=self.die_with_parent)
            self._add(self.broker, timeout)
            bootstrap = self.broker.bootstrap
        port = s.http_port or free_port(s.http_host)
        self.settings = s = replace(s, broker=bootstrap, http_port=port)
        self._ensure_topics()
        self.start_worker(timeout)
        if self.want_forwarder:
            self._start_forwarder()
        if self.want_router:
            from outloop.router.component import RouterProcess

            self.router = RouterProcess(s, self.log_dir)
            self._add(self.router, timeout)
        if self.want_tailer:
            self._start_tailer()
        if self.want_supervise:
            self._sup_thread = threading.Thread(target=self._supervise, name="outloop-supervisor", daemon=True)
            self._sup_thread.start()
        return self

    def _ensure_topics(self) -> None:
        from outloop.streams.publisher import Publisher

        s = self.settings
        assert s.broker
        with Publisher(s.broker, partitions=s.partitions, prefix=s.topic_prefix) as pub:
            pub.ensure_topics()

    def start_worker(self, timeout: float = 30.0) -> None:
        """Start the worker and wait until it answers ``/health`` as ready (see
        :class:`outloop.components.WorkerProcess`); a StackError when it exits first or is not ready
        in time (it then keeps starting)."""
        if self._worker is None:
            self._worker = WorkerProcess(self.settings, self.worker_log, die_with_parent=self.die_with_parent)
            self.components.insert(1 if self.broker is not None else 0, self._worker)
        self._worker.settings = self.settings
        self._worker.start(timeout)

    def _start_forwarder(self) -> None:
        from outloop.streams.forwarder import Forwarder

        self.forwarder = Forwarder.from_settings(self.settings)
        self._add(forwarder_component(self.forwarder), 0.0)

    def _start_tailer(self) -> None:
        """The transcript tailer in a thread; the forwarder tells it every transcript a hook names."""
        from outloop.router.measure import Measurer
        from outloop.streams.tailer import Tailer

        tailer = self.tailer = Tailer(self.settings, measurer=Measurer())  # live savings of enforced runs
        if self.forwarder is not None:
            self.forwarder.on_transcript = tailer.watch
        self._add(tailer_component(tailer), 0.0)

    @property
    def client(self) -> WorkerClient:
        return WorkerClient(self.settings.http_host, self.settings.http_port)

    def stop_worker(self, timeout: float = 30.0) -> None:
        if self._worker is not None:
            self._worker.stop(timeout)

    def kill_worker(self) -> None:
        """SIGKILL the worker and its process group (its sink child too: it would otherwise finish
        its write first and hold the DuckDB file while the next worker waits for it) - the group
        also when the worker itself has exited already."""
        if self._worker is not None:
            self._worker.kill()

    # -- supervision ------------------------------------------------------------------------------
    def _event(self, message: str, level: int = logging.WARNING) -> None:
        self.events.append(message)
        log.log(level, "%s", message)
        if self.on_event is not None:
            with contextlib.suppress(Exception):
                self.on_event(message)

    def _supervise(self) -> None:
        while not self._sup_stop.wait(self.tick):
            try:
                self.log_rotation.check(time.monotonic())
                if not self.supervise_once(time.monotonic()):
                    return
            except Exception as exc:  # a bug must not end supervision silently
                log.exception("supervisor: a step failed")
                self._event(f"supervisor: a step failed: {exc!r}")

    def broker_alive(self) -> bool:
        """An external broker (no component) is not ours to watch: alive."""
        return self.broker is None or self.broker.alive()

    def observe(self) -> list[Observed]:
        return [Observed(c.name, c.restart_policy, c.alive()) for c in self.components]

    def _restart_alone(self, d: Decision) -> None:
        """Start a fresh one of a component that restarts alone; what it serves fails open meanwhile
        (hooks get no answer from a router that is not there)."""
        component = self._component(d.component)
        log_path = getattr(component, "log_path", None)
        where = f" (log {log_path})" if log_path is not None else ""
        self._event(f"supervisor: the {d.component} exited; starting a fresh one{where}")
        try:
            component.restart()
        except RuntimeError as exc:  # it stays dead: the next observation tries again
            self._event(f"supervisor: the {d.component} did not start again: {exc}")

    def supervise_once(self, now: float) -> bool:
        """One observation of every component and what it decides; False once the stack gave up."""
        observed = self.observe()
        alive = {o.name: o.alive for o in observed}
        broker_alive, worker_alive = self.broker_alive(), alive.get("worker", False)
        rss = process_rss(self.broker.pid) if self.broker is not None and broker_alive else None
        assigned = self.assigned_partitions(now) if broker_alive and worker_alive else None
        *alone, d = self.supervision.observe_components(now, observed, rss=rss, assigned=assigned)
        for each in alone:
            self._restart_alone(each)
        if d.action is Action.FAIL:
            detail = f"; see {self.worker_log}" if "worker" in d.reason else ""
            self.failure = d.reason + detail
            self._event(f"supervisor: {self.failure}", logging.ERROR)
            self.failed.set()
            return False
        if d.action is Action.RESTART_WORKER:
            self._restart_counted(d)
        elif d.action in (Action.RESTART, Action.UNSTICK):
            if d.action is Action.UNSTICK:
                self._event(f"supervisor: {d.reason}; killing the embedded broker to start it again")
                assert self.broker is not None
                self.broker.kill()
            self._restart_broker(recycle=False)
            with self._journal_lock:
                self.confirmation.void(now)
        elif d.action is Action.START_DRAIN:
            self._start_drain(now, d.reason)
        elif d.action is Action.CHECK_DRAIN:
            try:
                drained = bool(bounded(self._drained, 30.0))
            except Exception as exc:  # the worker or the broker is busy: ask again next time
                log.debug("supervisor: drain check failed: %r", exc)
                drained = False
            d = self.supervision.drain_checked(now, drained)
            if d.action is Action.RECYCLE:
                self._recycle()
                with self._journal_lock:
                    self.confirmation.void(time.monotonic())
        elif d.action is Action.ABORT_DRAIN:
            self._drain = None
            self._event(f"supervisor: recycle postponed: {d.reason}; the forwarder resumes")
            if self.forwarder is not None:
                self.forwarder.resume()
            if self.tailer is not None:
                self.tailer.resume()
        if d.action is Action.NONE and not self.supervision.draining and (
                self._confirm_thread is None or not self._confirm_thread.is_alive()):
            # in a thread of its own: publishing and querying must never delay a restart
            self._confirm_thread = threading.Thread(target=self._confirm_journal_logged, args=(now,),
                                                    name="outloop-journal-proof", daemon=True)
            self._confirm_thread.start()
        return True

    ASSIGNED_EVERY = 5.0  # seconds between two questions to the worker about its partitions

    def assigned_partitions(self, now: float) -> int | None:
        """How many input partitions the worker's consumer holds (its /health), asked at most every
        ASSIGNED_EVERY s; None when it does not answer, or when the broker is not ours to restart."""
        if self.broker is None or not self.supervision.stall_after:
            return None
        asked, answer = self._assigned
        if now - asked < self.ASSIGNED_EVERY:
            return answer
        health = self.client.health(timeout=2.0)
        value = health.get("assigned") if health else None
        answer = value if isinstance(value, int) else None
        self._assigned = (now, answer)
        return answer

    def _component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def _restart_counted(self, d: Decision) -> None:
        """Start a fresh one of a component whose exits are counted (the worker) after the last one
        exited on its own (its log says why). For the worker: the broker kept the input offsets its
        consumer group committed, and the agents commit none whose outputs were not delivered, so the
        fresh worker reads again what the last one had not finished; the sink drops what it had."""
        component = self._component(d.component)
        code = getattr(component, "returncode", None)
        self._event(f"supervisor: the {d.component} exited with code {code}; starting a fresh one "
                    f"({d.component} log {getattr(component, 'log_path', '?')})")
        component.kill()  # what is left of its process group (a sink child still finishing)
        self.restart_counts[d.component] = self.restart_counts.get(d.component, 0) + 1
        try:
            component.start()
        except RuntimeError as exc:  # it stopped again: the next observation counts it
            self._event(f"supervisor: the fresh {d.component} did not start: {exc}")

    def _restart_broker(self, *, recycle: bool) -> None:
        """Kill the worker, restart the broker on the same port, re-create the topics, let the
        forwarder send its journal again, start a fresh worker."""
        broker, fwd = self.broker, self.forwarder
        assert broker is not None
        proc = broker.proc
        code = proc.poll() if proc is not None else None
        if recycle:
            self._event(f"supervisor: recycling the embedded broker (pid {broker.pid}, port {broker.port}): "
                        f"killing the worker, restarting the broker empty")
        else:
            self._event(f"supervisor: the embedded broker (port {broker.port}) exited with code {code}; "
                        f"killing the worker so it commits nothing to a new broker, restarting both "
                        f"(broker log {broker.log_path})")
        if fwd is not None and not recycle:
            fwd.abandon()  # a pass waiting for the dead broker's acknowledgements ends now, not after 15 s
        if fwd is not None and not fwd.pause(timeout=60.0):
            self._event("supervisor: the forwarder did not pause within 60s; restarting anyway")
        if self.tailer is not None and not self.tailer.pause(timeout=60.0):
            self._event("supervisor: the tailer did not pause within 60s; restarting anyway")
        self.kill_worker()
        if recycle:
            broker.stop()
        try:
            broker.start()
        except BrokerError as exc:
            self._event(f"supervisor: the embedded broker did not start again: {exc}", logging.ERROR)
            if fwd is not None:
                fwd.resume()
            if self.tailer is not None:
                self.tailer.resume()
            return  # the next observation sees it dead and decides again
        self._ensure_topics()
        resent = 0
        if fwd is not None:  # after a recycle the journal holds nothing undrained: this only reconnects
            with self._journal_lock:
                self._generation += 1
                resent = fwd.broker_restarted()
            fwd.resume()
        if self.tailer is not None:  # a lost log: recent transcripts are read again from their start
            self.tailer.broker_restarted(lost=not recycle)
            self.tailer.resume()
        try:
            self.start_worker(timeout=120.0)
        except StackError as exc:
            self._event(f"supervisor: {exc}", logging.ERROR)
            return  # the next observation sees the worker dead and gives up
        if recycle:
            self.recycles += 1
        else:
            self.restarts += 1
        journal = "" if recycle or fwd is None else f"; the forwarder sends its sent journal ({resent} events) again"
        self._event(f"supervisor: broker (pid {broker.pid}, port {broker.port}) and a fresh worker "
                    f"(pid {self.worker.pid if self.worker else None}) are up; the worker reads the new log from "
                    f"its start{journal}")

    def _markers(self, marker: str) -> int:
        from outloop.replay import publish_markers
        from outloop.schemas.topics import TopicCatalogue
        from outloop.streams.publisher import Publisher

        s = self.settings
        assert s.broker
        cat = TopicCatalogue(prefix=s.topic_prefix)
        with Publisher(s.broker, catalogue=cat, partitions=s.partitions, client_id="outloop-supervisor") as pub:
            return publish_markers(pub, cat, marker, s.partitions)

    def _marker_seen(self, marker: str) -> int:
        _, rows = self.client.query("SELECT count(*) FROM flush_markers WHERE marker = ? OR marker = ?",
                                    [marker, marker + ":wf"])
        return int(rows[0][0])

    def _start_drain(self, now: float, reason: str) -> None:
        fwd = self.forwarder
        if self.tailer is not None and not self.tailer.pause(timeout=30.0):
            self.tailer.resume()
            d = self.supervision.drain_failed(now, "the tailer did not pause within 30s")
            self._event(f"supervisor: recycle postponed: {d.reason}")
            return
        if fwd is not None and not fwd.pause(timeout=30.0):
            if self.tailer is not None:
                self.tailer.resume()
            fwd.resume()
            d = self.supervision.drain_failed(now, "the forwarder did not pause within 30s")
            self._event(f"supervisor: recycle postponed: {d.reason}")
            return
        ids = fwd.spool.sent_ids() if fwd is not None else []
        marker = f"drain-{uuid.uuid4().hex[:12]}"
        expected = self._markers(marker)
        self._drain = (marker, expected, ids)
        self._event(f"supervisor: {reason}: draining before a recycle (forwarder paused, marker {marker})")

    def _drained(self) -> bool:
        """Forwarder paused with nothing in flight, the drain marker in DuckDB on every output
        partition, the agents' committed input offsets at the input log ends, the sink's stored
        positions at the output log ends."""
        from outloop.schemas.topics import TopicCatalogue

        if self._drain is None:
            return False
        marker, expected, _ = self._drain
        if self.forwarder is not None and not self.forwarder.idle():
            return False
        if self.tailer is not None and not self.tailer.idle():
            return False
        if self._marker_seen(marker) < expected:
            return False
        s = self.settings
        assert s.broker
        cat = TopicCatalogue(prefix=s.topic_prefix)
        inputs = topic_partitions(s.broker, [cat.events.name, cat.workflows.name])
        committed = committed_offsets(s.broker, s.app_id, inputs)
        if high_watermarks(s.broker, committed) != {tp: off for tp, off in committed.items()}:
            return False
        _, rows = self.client.query('SELECT topic, "partition", next_offset FROM consumer_offsets')
        stored = {(t, int(p)): int(o) for t, p, o in rows}
        outputs = topic_partitions(s.broker, sorted(t.name for t in cat.outputs()))
        positions = {tp: stored.get(tp, 0) for tp in outputs}
        return high_watermarks(s.broker, positions) == positions

    def _recycle(self) -> None:
        assert self._drain is not None
        _, _, ids = self._drain
        self._drain = None
        fwd = self.forwarder
        if fwd is not None:
            n = fwd.spool.drop_sent(ids)
            self._event(f"supervisor: drained: every event up to the marker is in DuckDB; "
                        f"{n} sent-journal entries are no longer needed", logging.INFO)
        self._restart_broker(recycle=True)

    def _confirm_journal_logged(self, now: float) -> None:
        try:
            self._confirm_journal(now)
        except Exception as exc:  # the worker or the broker is busy or restarting: next time
            log.debug("supervisor: journal proof step failed: %r", exc)

    def _confirm_journal(self, now: float) -> None:
        """Prune the sent-journal entries a flush marker proves stored in DuckDB. Valid only within
        one broker incarnation: a restart in between voids the proof (its generation changed)."""
        fwd, conf = self.forwarder, self.confirmation
        if fwd is None or not conf.every:
            return
        if conf.pending is not None:
            if conf.expired(now):
                self._event("supervisor: a sent-journal proof took too long; trying again later", logging.INFO)
                return
            marker = conf.pending[0]
            seen = self._marker_seen(marker)
            with self._journal_lock:
                if conf.pending is None or conf.pending[0] != marker:
                    return
                if self._generation != self._journal_generation:
                    conf.void(now)
                    return
                if seen >= self._journal_expected:
                    n = fwd.spool.drop_sent(conf.confirmed(now))
                    log.info("supervisor: %d sent-journal entries are in DuckDB (marker %s); pruned", n, marker)
            return
        with self._journal_lock:
            ids = fwd.spool.sent_ids()
            generation = self._generation
        if not conf.due(now, len(ids)):
            return
        marker = f"journal-{uuid.uuid4().hex[:12]}"
        expected = self._markers(marker)
        with self._journal_lock:
            if self._generation != generation:  # the broker restarted meanwhile: the marker may be on the new one
                conf.void(now)
                return
            self._journal_expected, self._journal_generation = expected, generation
            conf.started(now, marker, ids)

    def stop(self) -> None:
        """Stop the supervisor, then every component in the reverse order of their start (the threads
        are all told first, so they end in parallel)."""
        self._sup_stop.set()
        if self._sup_thread is not None and self._sup_thread is not threading.current_thread():
            self._sup_thread.join(timeout=180)
        for c in self.components:
            if isinstance(c, ThreadComponent):
                c.signal_stop()
        for c in reversed(self.components):
            c.stop(30.0 if c is self._worker else 15.0 if isinstance(c, ThreadComponent) else 10.0)
        self.broker = None

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
