"""One growing transcript followed by the live measurer: each measurement reads only the bytes written
since the last one, and keeps no more than the measurements still need.

Measuring a runner step needs the whole session after it (the carry grows with every later API call,
and the estimator is calibrated on every interval of the context), so re-reading the file each time
made a long session's measurements quadratic. Here the file is read once, incrementally, into a
:class:`~outloop.agents.timeline.TimelineBuilder`, and what no measurement can use any more is
dropped as it goes:

- the recorded output of every tool step that is not a runner's, or is a run printed unchanged (its
  length was already counted; a run printed unchanged is found by the run named after its tool call,
  looked up once, when its result is read);
- once a runner step's *later texts* (its next five tool inputs and the messages up to the last of
  them) can no longer change, its fidelity is kept and its run's raw text is not (only its length
  counts afterwards); the assistant texts and tool inputs older than every step still open (a runner
  step whose later texts may change, a tool call of the last API calls waiting for its result) are
  dropped.

What stays per file is the calls' numbers (usage, model, time), the steps' ids and links, the runner's
printed results, and the record ids seen (duplicates are skipped by ``uuid``): a few hundred bytes per
record, about a quarter of the file's size on real transcripts (``bench/bench_tailer_growth.py``).
Reading settles and drops as it goes (every :data:`DIGEST_BYTES`), so the first read of a long file
after a restart never holds its whole timeline either.

The results are those of reading the whole file again (:func:`outloop.router.measure.measure_file`),
checked in the tests on real transcripts (only complete lines are read: a last line still being
written waits for its newline, as the tailer's own reading does). When something would make them
differ, the state is rebuilt from the file (which is how it starts, after a restart too): a file
truncated, replaced or rewritten in place; a record of an API call that was no longer the last one
(a later record could change what an earlier call said; Claude Code does not write these); a runner's
result for a tool call so old that what its fidelity needs was dropped; a run's log that changed after
its step's fidelity was kept.
Used by one thread (the tailer's).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from outloop.agents.calibration import calibrate
from outloop.agents.enforced import Locate, Measured, RunLog, log_path, measured, step_fidelity
from outloop.agents.fidelity import WINDOW, Fidelity
from outloop.agents.pricing import PriceTable
from outloop.agents.shadow import later_steps, later_texts
from outloop.agents.timeline import Timeline, TimelineBuilder, ToolStep
from outloop.streams.importers import ImportStats
from outloop.streams.importers.transcripts import parse_lines
from outloop.streams.tailing import TAIL_BYTES, Mark, Step, decide, read_from, rewritten, seen_of

log = logging.getLogger("outloop.router.measure")

DIGEST_BYTES = 4 * 2**20  # read this much of a file, then settle and drop what can be (a long first read)
IN_FLIGHT = 2  # a tool call of one of the last API calls may still get its result: what it would need is kept
Signature = tuple[int, int, int, int, int, int] | None  # a run's two files: inode, size, mtime each


def run_signature(path: str) -> Signature:
    """What the file system says of a run's log and metadata (None when either is gone)."""
    try:
        a, b = os.stat(path), os.stat(path[:-4] + ".json")
    except (OSError, ValueError):
        return None
    return a.st_ino, a.st_size, a.st_mtime_ns, b.st_ino, b.st_size, b.st_mtime_ns


@dataclass
class RunnerStep:
    """A runner step of the timeline and what its measurement keeps between two measurements."""

    index: int  # its place in timeline.steps
    step: ToolStep
    log: str
    signature: Signature = None
    run: RunLog | None = None  # without its raw text once the fidelity is settled
    raw_chars: int = 0
    fidelity: Fidelity | None = None
    settled: bool = False  # its later texts can no longer change: ``fidelity`` is final for this run
    unchanged: bool = False  # printed unchanged (no footer; found by the run named after its tool call)
    pending: bool = False  # its result is not in the transcript yet (a named run: measured already)
    at: int = -1  # lines of the file read when ``fidelity`` was computed


@dataclass
class FollowedTranscript:
    """The incremental state of one transcript (see the module docstring)."""

    path: str
    locate: Locate | None = None  # tool_use_id -> the log of a run named after it (printed unchanged)
    mark: Mark | None = None
    builder: TimelineBuilder = field(init=False)
    runner: list[RunnerStep] = field(default_factory=list)
    classified: int = 0  # steps[:classified] with a result were looked at (runner or dropped output)
    unresolved: list[int] = field(default_factory=list)  # steps before ``classified`` still without a result
    pruned_calls: int = 0  # calls[:pruned_calls] had their text dropped
    pruned_steps: int = 0  # steps[:pruned_steps] had their input dropped
    stale: bool = False  # something dropped is needed again: rebuild from the file
    late_seen: int = 0  # the builder's late records when the state was last digested
    rebuilds: int = 0
    bytes_read: int = 0  # over the state's life: the file's size when every byte was read once
    lines: int = 0  # complete lines read over the state's life

    def __post_init__(self) -> None:
        self.builder = TimelineBuilder(self.path)

    @property
    def timeline(self) -> Timeline:
        return self.builder.t

    def reset(self) -> None:
        """Forget everything: the next read starts from the file's first byte."""
        self.mark, self.builder, self.runner = None, TimelineBuilder(self.path), []
        self.classified, self.unresolved, self.pruned_calls, self.pruned_steps = 0, [], 0, 0
        self.stale, self.late_seen = False, 0
        self.rebuilds, self.bytes_read, self.lines = self.rebuilds + 1, 0, 0

    # -- reading ---------------------------------------------------------------------------------
    def read(self, load: Callable[[str], RunLog | None], eager: bool = True) -> bool:
        """Take the file's new complete lines; False when the file is gone (nothing to measure).
        ``eager``: settle and drop what it can every :data:`DIGEST_BYTES` (a long file read at once
        never holds its whole timeline); a rebuild reads without it (see :meth:`measure`)."""
        seen = seen_of(self.path)
        step = decide(self.mark, seen)
        if step is Step.DROP:
            return False
        assert seen is not None
        if self.mark is not None and step is not Step.RESTART and self.mark.tail:
            before = read_from(self.path, self.mark.offset - len(self.mark.tail), seen.inode, len(self.mark.tail))
            if before is None or rewritten(self.mark, before[: len(self.mark.tail)]):
                step = Step.RESTART
        if step is Step.RESTART or self.mark is None:
            if self.mark is not None:
                log.info("savings: %s was truncated, replaced or rewritten; measured again from its start", self.path)
                self.reset()
            self.mark = Mark(0, seen.inode)
        if step is not Step.IDLE:
            self._feed(seen.inode, load, eager)
        return True

    def _feed(self, inode: int, load: Callable[[str], RunLog | None], eager: bool) -> None:
        """Feed the complete lines after the mark to the builder, line by line (memory stays flat)."""
        assert self.mark is not None
        offset, tail, since = self.mark.offset, self.mark.tail, 0
        stats, p = ImportStats(), Path(self.path)
        try:
            with open(self.path, "rb") as fh:
                if os.fstat(fh.fileno()).st_ino != inode:
                    return
                fh.seek(offset)
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # being written: taken once complete
                    offset += len(line)
                    self.lines += 1
                    tail = (tail + line[-TAIL_BYTES:])[-TAIL_BYTES:]
                    for rec in parse_lines((line,), stats, p):
                        self.builder.add(rec)
                    since += len(line)
                    if eager and since >= DIGEST_BYTES:
                        self._digest(load)
                        since = 0
        except OSError:
            pass
        self.bytes_read += offset - self.mark.offset
        self.mark = Mark(offset, self.mark.inode, tail)
        self._digest(load)

    def _digest(self, load: Callable[[str], RunLog | None]) -> None:
        """Classify the new steps, settle the runner steps whose later texts are complete, drop what no
        open step needs. A late record once a fidelity was settled makes the state stale."""
        if self.builder.late > self.late_seen and any(r.settled for r in self.runner):
            self.stale = True
        self.late_seen = self.builder.late
        self._classify()
        for r in self.runner:
            if not r.settled:
                self._refresh(r, run_signature(r.log), load)
        self._prune()

    # -- what the measurements keep ----------------------------------------------------------------
    def _classify(self) -> None:
        """Look at the steps whose result came since the last time: a runner's is kept; another's
        output is dropped (its length already counted). A Bash call still without its result whose
        named run exists is measured already (as the whole re-read does), until its result comes."""
        steps = self.timeline.steps
        waiting = []
        pending = {r.index: r for r in self.runner if r.pending}
        for i in [*self.unresolved, *range(self.classified, len(steps))]:
            step = steps[i]
            if step.output is None:
                waiting.append(i)
                if i not in pending and (path := self._named(step)) is not None:
                    self.runner.append(RunnerStep(i, step, path, unchanged=True, pending=True))
                continue
            if i in pending:
                self.runner.remove(pending[i])
            path = log_path(step.output) if step.tool_name == "Bash" else None
            unchanged = path is None and (path := self._named(step)) is not None
            if path is not None:
                if i < self.pruned_steps or step.issued_by < self.pruned_calls:
                    self.stale = True  # a late result: what its later texts need was dropped
                self.runner.append(RunnerStep(i, step, path, unchanged=unchanged))
            if path is None or unchanged:
                step.output = ""  # its length is counted; a run printed unchanged printed its raw text
        self.runner.sort(key=lambda r: r.index)
        self.classified, self.unresolved = len(steps), waiting

    def _named(self, step: ToolStep) -> str | None:
        """The log of the run named after a Bash call (one printed unchanged), when there is one."""
        if step.tool_name != "Bash" or self.locate is None or not step.tool_use_id:
            return None
        return self.locate(step.tool_use_id)

    def _prune(self) -> None:
        """Drop the texts and inputs older than every step that is still open: a runner step whose later
        texts may change, or a tool call of the last :data:`IN_FLIGHT` API calls still waiting for its
        result (Claude Code records a call's results before the next call; an older one without its
        result was abandoned, and should its result come after all, the state is rebuilt)."""
        t = self.timeline
        recent = len(t.calls) - IN_FLIGHT
        open_steps = [r.index for r in self.runner if not r.settled]
        open_steps += [i for i in self.unresolved if t.steps[i].issued_by >= recent]
        first = min(open_steps, default=self.classified)
        keep_calls = min((t.steps[i].issued_by for i in open_steps), default=len(t.calls) - 1)
        for call in t.calls[self.pruned_calls:keep_calls]:
            call.text = ""
        self.pruned_calls = max(self.pruned_calls, keep_calls)
        for i in range(self.pruned_steps, first):
            t.steps[i].tool_input = {}
        self.pruned_steps = max(self.pruned_steps, first)

    # -- measuring ---------------------------------------------------------------------------------
    def measure(self, load: Callable[[str], RunLog | None], prices: PriceTable) -> list[Measured]:
        """Read what was written since the last call and measure every runner step (as
        :func:`outloop.agents.enforced.measure` on the whole file would)."""
        if not self.read(load):
            return []
        sigs = [run_signature(r.log) for r in self.runner]
        if self.stale or any(r.settled and sig is not None and sig != r.signature
                             for r, sig in zip(self.runner, sigs, strict=True)):
            log.info("savings: a late record, a late result or a changed log in %s; measured again from its start",
                     self.path)
            self.reset()
            if not self.read(load, eager=False):  # nothing dropped before the end: the same cannot recur
                return []
            sigs = [run_signature(r.log) for r in self.runner]
        t = self.timeline
        if not t.session_id:
            return []
        estimator = calibrate([t])
        out = []
        for r, sig in zip(self.runner, sigs, strict=True):
            if not self._refresh(r, sig, load):
                continue
            assert r.run is not None and r.fidelity is not None
            out.append(measured(t, r.step, r.run, r.raw_chars, r.fidelity, estimator, prices, r.unchanged))
        return out

    def _refresh(self, r: RunnerStep, sig: Signature, load: Callable[[str], RunLog | None]) -> bool:
        """Bring one runner step's run and fidelity up to date; False when its log is gone or unreadable
        (settled so: nothing to measure and nothing kept for it; files that come back are rebuilt)."""
        if sig == r.signature and (r.settled or r.at == self.lines):
            return r.run is not None  # final, or already brought up to date since the last read
        run = load(r.log) if sig is not None else None
        if run is None:
            r.signature, r.settled, r.run, r.fidelity = sig, True, None, None
            return False
        t = self.timeline
        nxt = later_steps(t, r.index)
        settled = len(nxt) == WINDOW and nxt[-1].issued_by < len(t.calls) - 1
        r.fidelity = step_fidelity(r.step, run.raw, later_texts(t, r.step, index=r.index), r.unchanged)
        r.signature, r.raw_chars, r.settled, r.at = sig, len(run.raw), settled, self.lines
        r.run = RunLog(run.run_id, "", run.rule, run.family, run.kind) if settled else run
        return True
