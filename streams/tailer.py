"""The transcript tailer: follows Claude Code transcripts as they are written and publishes their tool
uses, tool results, usage records and API messages (:mod:`streams.importers.transcripts`, the same
records ``outloop replay`` makes, through the same :class:`~streams.publisher.Publisher`, so secrets
are redacted before anything leaves the process). A component of ``outloop up``.

Which files: every ``*.jsonl`` under the Claude Code projects folder (``OUTLOOP_PROJECTS``, looked
through every :attr:`Tailer.discover_every` s) and every transcript a hook payload names
(``transcript_path``, ``agent_transcript_path``: the forwarder hands them to :meth:`Tailer.watch`).
Each pass (every ``OUTLOOP_TAIL_POLL`` s) looks at the files that grew within the last
:attr:`Tailer.hot_for` s and those a hook just named; every file is looked at on each walk, so a
folder of thousands of old transcripts costs one stat each per walk, not per pass.

At least once, nothing doubled: a file's mark (:class:`streams.tailing.Mark`) moves past its new
complete lines only once the broker acknowledged every envelope they made, and the marks are saved
atomically after each pass (``$OUTLOOP_HOME/tailer/offsets.json``). A partial last line waits for
its newline; a truncated, replaced or rewritten file (shorter than its mark, a new inode, or other
bytes before its mark) is read again from its start; a deleted one is dropped.
Envelope ids are deterministic, so whatever is published twice upserts the rows it made.

Usage flows as it is written: each pass hands a file's new lines to
:func:`~streams.importers.transcripts.iter_records` with the file's own state, which emits a usage
record (or an API message) again only when it grew - the sink keeps the largest.

Live savings: a transcript whose new lines hold a runner's result (a command the router rewrote to
``outloop run``) is handed to the ``measurer`` (``outloop.router.measure``), whose ``routing.saving``
events are published after the lines' own envelopes.

Per-file state (records seen, call-key ordinals, what was emitted) lives in memory. After a restart,
or when a publication failed, it is rebuilt by reading the file up to its mark without publishing,
so call keys and "emit when larger" go on as if nothing happened. Call-key ordinals are counted per
file: for a main session file they are those of a replay; a sub-agent file (``agent-*.jsonl``)
counts its own (a replay counts them after the main file's).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from outloop.schemas.events import Envelope, EventType
from outloop.schemas.topics import TopicCatalogue
from outloop.streams.forwarder import DEFAULT_MAX_RECORD_BYTES, shrink_envelope
from outloop.streams.importers import ImportStats
from outloop.streams.importers.transcripts import TranscriptState, iter_records, parse_lines, session_of_file
from outloop.streams.publisher import Delivery, Publisher, PublishError, redact_envelope
from outloop.streams.settings import Settings
from outloop.streams.tailing import (
    Checkpoint,
    Mark,
    Step,
    complete_lines,
    decide,
    read_from,
    rewind_after_broker_loss,
    rewritten,
    seen_of,
)

log = logging.getLogger(__name__)


class Measurer(Protocol):
    """What the tailer asks of a measurer of the transcripts it reads (``outloop.router.measure``)."""

    def note(self, path: str, envelopes: list[Envelope], now: float) -> None: ...

    def due(self, now: float) -> list[Envelope]: ...

    def acked(self, envelopes: list[Envelope]) -> None: ...

    def failed(self) -> None: ...
_CONTENT = (EventType.TOOL_USE, EventType.TOOL_RESULT)


class Tailer:
    """Transcript files -> Kafka. ``run_once`` publishes what was written since the last pass;
    ``run_forever`` polls every ``settings.tail_poll`` s. Pause, resume and the broker-restart call
    mirror the forwarder's, for the supervisor."""

    discover_every = 5.0  # seconds between two walks of the projects folder
    chunk_bytes = 4 * 2**20  # read from one file per pass at most (plus the rest of a longer line)
    pass_bytes = 16 * 2**20  # read per pass at most: a backfill goes in passes, each flushed and marked
    state_idle = 600.0  # seconds a file may stay unchanged before its in-memory state is dropped
    hot_for = 60.0  # seconds after its last growth a file is looked at every pass; colder ones at each walk

    def __init__(self, settings: Settings, *, publisher_factory: Callable[[], Publisher] | None = None,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, measurer: Measurer | None = None) -> None:
        self.settings = settings
        self.projects = settings.projects
        self.checkpoint = Checkpoint(settings.home / "tailer" / "offsets.json")
        self.marks: dict[str, Mark] = self.checkpoint.load()
        self.files: set[str] = set(self.marks)  # followed: marked, or found and not read yet
        self.states: dict[str, TranscriptState] = {}
        self.stats = ImportStats()
        self.published = 0  # envelopes acknowledged over the tailer's life
        self.more = False  # the last pass left bytes unread (its budget was spent): no wait before the next
        self._active: dict[str, float] = {}  # path -> when it last had new lines (monotonic)
        self.max_record_bytes = max_record_bytes
        self._factory = publisher_factory
        self._publisher: Publisher | None = None
        self._named: set[str] = set()  # paths hook payloads named, not yet followed
        self._lock = threading.Lock()
        self._read_bytes = 0
        self._next_discovery = 0.0
        self._paused = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.measurer = measurer  # measures the runner's results the transcripts hold (live savings)

    # -- which files ------------------------------------------------------------------------------
    def watch(self, path: str) -> None:
        """Follow ``path`` too (a transcript a hook payload named). Any thread; cheap when known."""
        if path and path.endswith(".jsonl"):
            with self._lock:
                self._named.add(path)  # known or not: looked at in the next pass (its session is active)

    def discover(self) -> set[str]:
        """Transcripts to follow: under the projects folder, and named by hooks since the last look."""
        found = self._take_named()
        if self.projects is not None and self.projects.is_dir():
            found.update(str(p) for p in self.projects.rglob("*.jsonl"))
        return found

    # -- control by a supervisor ----------------------------------------------------------------
    def pause(self, timeout: float = 30.0) -> bool:
        self._paused.set()
        return self._idle.wait(timeout)

    def resume(self) -> None:
        self._paused.clear()

    def idle(self) -> bool:
        return self._paused.is_set() and self._idle.is_set()

    def broker_restarted(self, lost: bool, now: float | None = None) -> int:
        """The broker restarted (call it paused). ``lost``: it lost what it held (an embedded broker
        that exited on its own), so files written within the sent journal's age bound are read again
        from their start; returns how many. Either way the next pass reconnects."""
        self._drop()
        if not lost:
            return 0
        now = time.time() if now is None else now
        mtimes: dict[str, float | None] = {}
        for path in self.marks:
            try:
                mtimes[path] = Path(path).stat().st_mtime
            except OSError:
                mtimes[path] = None
        before = self.marks
        self.marks = rewind_after_broker_loss(before, mtimes, now, self.settings.journal_max_age)
        rewound = [p for p in self.marks if self.marks[p] != before[p]]
        for path in rewound:
            self.states.pop(path, None)
        self.checkpoint.save(self.marks)
        return len(rewound)

    # -- one pass ---------------------------------------------------------------------------------
    def _state(self, path: str, mark: Mark) -> TranscriptState:
        """The file's state, rebuilt from its first ``mark.offset`` bytes when not in memory."""
        state = self.states.get(path)
        if state is None:
            state = self.states[path] = TranscriptState(messages=True)
            if mark.offset:
                data = read_from(path, 0, mark.inode) or b""
                lines, _ = complete_lines(data[: mark.offset], 0)
                p = Path(path)
                for _ in iter_records(parse_lines(lines, ImportStats(), p), p, ImportStats(), state,
                                      session_of_file(p)):
                    pass
        return state

    def _fit(self, env: Envelope) -> Envelope | None:
        """``env``, or a copy cut to the record size limit (None when cutting cannot make it fit)."""
        if env.type not in _CONTENT or len(env.model_dump_json()) <= self.max_record_bytes:
            return env
        return shrink_envelope(redact_envelope(env), self.max_record_bytes)

    def _read(self, path: str) -> tuple[Mark, list[Envelope]] | None:
        """The new mark of one file and the envelopes of its new complete lines; None: nothing to do."""
        mark = self.marks.get(path)
        seen = seen_of(path)
        step = decide(mark, seen)
        if step is Step.DROP:
            self.files.discard(path)
            self.marks.pop(path, None)
            self.states.pop(path, None)
            log.info("tailer: %s is gone; no longer followed", path)
            return None
        assert seen is not None
        if step is Step.IDLE:
            return None
        got = self._new_bytes(path, mark if step is Step.READ else None, seen.inode)
        if got is None:
            return None
        mark, data = got
        self._read_bytes += len(data)
        self.more = self.more or mark.offset + len(data) < seen.size
        lines, end = complete_lines(data, mark.offset)
        if not lines:
            return mark, []
        state = self._state(path, mark)
        p = Path(path)
        envs = []
        for env in iter_records(parse_lines(lines, self.stats, p), p, self.stats, state, session_of_file(p)):
            fitted = self._fit(env)
            if fitted is None:
                log.error("tailer: %s of %s is too large to send, even cut; skipped", env.id, path)
                continue
            envs.append(fitted)
        return mark.after(data, end), envs

    def _new_bytes(self, path: str, mark: Mark | None, inode: int) -> tuple[Mark, bytes] | None:
        """The mark to read from and the bytes after it (a chunk). ``mark`` None, or a file rewritten
        in place (the bytes before the mark changed): from the start, with a fresh state."""
        if mark is not None:
            before = read_from(path, mark.offset - len(mark.tail), inode, len(mark.tail)) if mark.tail else b""
            data = read_from(path, mark.offset, inode, self.chunk_bytes)
            if before is None or data is None:
                return None
            if not rewritten(mark, before[: len(mark.tail)]):
                return mark, data
            log.info("tailer: %s was rewritten in place; reading it again from its start", path)
        elif path in self.marks:
            log.info("tailer: %s was truncated or replaced; reading it again from its start", path)
        self.states.pop(path, None)
        mark = self.marks[path] = Mark(0, inode)
        data = read_from(path, 0, inode, self.chunk_bytes)
        return None if data is None else (mark, data)

    def run_once(self, now: float | None = None) -> int:
        """Publish what every followed file gained since the last pass; returns the envelopes
        acknowledged. Raises :class:`PublishError` when the broker fails: the files whose envelopes
        were not all acknowledged keep their marks (and lose their in-memory state, rebuilt from the
        file), so the next pass publishes those lines again."""
        mono = time.monotonic() if now is None else now
        if mono >= self._next_discovery:
            self._next_discovery = mono + self.discover_every
            self.files.update(self.discover())
            looked = sorted(self.files)
        else:
            named = self._take_named()
            self.files.update(named)
            looked = sorted(p for p in self.files if p in named or p not in self.marks
                            or mono - self._active.get(p, -self.hot_for) < self.hot_for)
        before = dict(self.marks)
        pending: dict[str, tuple[Mark, list[Delivery]]] = {}
        self.more, self._read_bytes = False, 0
        for path in looked:
            if self._read_bytes >= self.pass_bytes:
                self.more = True
                break
            got = self._read(path)
            if got is None:
                continue
            new_mark, envs = got
            self._active[path] = mono
            if self.measurer is not None and envs:
                self.measurer.note(path, envs, mono)
            if envs:
                pub = self._connect()
                pending[path] = (new_mark, [pub.envelope(env) for env in envs])
            else:
                self.marks[path] = new_mark
        done = self._settle(pending)
        if self.marks != before:
            self.checkpoint.save(self.marks)
        self._forget_idle(mono)
        return done + self._measure(mono)

    def _measure(self, mono: float) -> int:
        """Publish the measurements that are due (after the lines they come from were acknowledged)."""
        if self.measurer is None:
            return 0
        envs = self.measurer.due(mono)
        if not envs:
            return 0
        pub = self._connect()
        try:
            deliveries = [pub.envelope(env) for env in envs]
            pub.flush(15.0)
        except PublishError:
            self.measurer.failed()
            raise
        acked = [env for env, d in zip(envs, deliveries, strict=True) if d.acked]
        self.measurer.acked(acked)
        if len(acked) < len(envs):
            self.measurer.failed()
        return len(acked)

    def _forget_idle(self, mono: float) -> None:
        """Drop the in-memory state of files unchanged for ``state_idle`` s (rebuilt from the file
        if it grows again), so memory follows the active sessions, not every transcript ever seen."""
        for path, last in list(self._active.items()):
            if mono - last > self.state_idle or path not in self.files:
                del self._active[path]
                self.states.pop(path, None)
        for path in list(self.states):  # a state without activity (a failed pass): rebuilt when needed
            if path not in self._active:
                del self.states[path]

    def _take_named(self) -> set[str]:
        with self._lock:
            found, self._named = self._named, set()
        return found

    def _settle(self, pending: dict[str, tuple[Mark, list[Delivery]]]) -> int:
        if not pending:
            return 0
        pub = self._connect()
        error: PublishError | None = None
        try:
            pub.flush(15.0)
        except PublishError as exc:
            error = exc
        done = 0
        for path, (mark, deliveries) in pending.items():
            if all(d.acked for d in deliveries):
                self.marks[path] = mark
                done += len(deliveries)
            else:
                self.states.pop(path, None)  # rebuilt from the file up to its (old) mark
                error = error or next((d.error for d in deliveries if d.error), None) or PublishError(
                    f"{path}: not every envelope was acknowledged")
        self.published += done
        if error is not None:
            self.checkpoint.save(self.marks)
            self._drop()
            raise error
        return done

    # -- connection -------------------------------------------------------------------------------
    def _connect(self) -> Publisher:
        if self._publisher is None:
            s = self.settings
            if self._factory is not None:
                pub = self._factory()
            else:
                assert s.broker, "the tailer needs a broker address"
                pub = Publisher(s.broker, TopicCatalogue(prefix=s.topic_prefix), s.partitions,
                                client_id="outloop-tailer")
            try:
                pub.ensure_topics()
            except PublishError:
                pub.close(timeout=0)
                raise
            self._publisher = pub
        return self._publisher

    def _drop(self) -> None:
        pub, self._publisher = self._publisher, None
        if pub is not None:
            pub.close(timeout=0)

    def close(self) -> None:
        pub, self._publisher = self._publisher, None
        if pub is not None:
            pub.close(timeout=5.0)

    # -- the loop ---------------------------------------------------------------------------------
    def _pass(self) -> int:
        self._idle.clear()
        try:
            return 0 if self._paused.is_set() else self.run_once()
        finally:
            self._idle.set()

    def run_forever(self, stop: threading.Event, backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        """Poll until ``stop`` is set; while the broker fails, wait ``backoff`` s doubling up to
        ``max_backoff``. A bug in one pass is logged and the pass retried, never the end of the thread."""
        delay = backoff
        try:
            while not stop.is_set():
                try:
                    self._pass()
                except PublishError as exc:
                    log.warning("tailer: broker unavailable (%s); retrying in %.1fs", exc, delay)
                    stop.wait(delay)
                    delay = min(delay * 2, max_backoff)
                    continue
                except Exception:
                    log.exception("tailer pass failed; retrying in %.1fs", delay)
                    self._drop()
                    self.states.clear()
                    stop.wait(delay)
                    delay = min(delay * 2, max_backoff)
                    continue
                delay = backoff
                if not self.more:
                    stop.wait(self.settings.tail_poll)
        finally:
            self.close()
