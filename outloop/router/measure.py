"""Live savings: measure the enforced decisions of a transcript from the runner's logs, as
``routing.saving`` events (``cost_savings_log``, and the measured columns of ``routing_decisions``).

The runner stays stdlib-only and off this work: it only keeps its log and metadata
(``$OUTLOOP_HOME/runs/<run_id>.log`` and ``.json``) and prints the log's path. The transcript tailer
(a component of ``outloop up``) hands every transcript whose new lines hold a runner's result to a
:class:`Measurer`; at most every :attr:`Measurer.every` seconds per file, while it grows, the lines
written since are added to the file's timeline and each runner step measured (:mod:`outloop.agents.enforced`;
incremental, with results equal to reading the whole file again: :mod:`outloop.router.follow`). A
measurement is published when it differs from the one last acknowledged, so the carry and the evidence
grow with the session; the sink keeps the most complete version of each decision.

The decision id is the live router's (``rd:`` + digest of session and tool_use_id), so the saving
lands on the router's own decision row.
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from outloop.agents.calibration import calibrate
from outloop.agents.enforced import AGENT_LIMIT, Measured, RunLog, agent_view, measure
from outloop.agents.pricing import PriceTable, active_table
from outloop.agents.timeline import build_timeline
from outloop.router.follow import FollowedTranscript
from outloop.router.state import decision_id
from outloop.runner.rewrite import RUN_ID_PREFIX, run_id_for
from outloop.runner.runlog import runs_dir
from outloop.schemas.events import Envelope, EventType, RoutingSaving
from outloop.streams.importers import ImportStats, make_envelope
from outloop.streams.importers.transcripts import read_jsonl

log = logging.getLogger("outloop.router.measure")

SOURCE = "runner"
META_MAX = 1 << 20  # a run's metadata is small; a larger file is not one


def agent_limit(env: dict[str, str] | os._Environ[str] = os.environ) -> int:
    """Claude Code's Bash output limit in characters (``BASH_MAX_OUTPUT_LENGTH``, default 30,000)."""
    try:
        value = int(env.get("BASH_MAX_OUTPUT_LENGTH", ""))
    except ValueError:
        return AGENT_LIMIT
    return value if value > 0 else AGENT_LIMIT


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def load_run(path: str, limit: int = AGENT_LIMIT) -> RunLog | None:
    """The run whose log is ``path`` (its ``.json`` metadata beside it), reading at most about
    ``2 * limit`` bytes of the log whatever its size; None when either file is gone or unreadable."""
    if not path.endswith(".log"):
        return None
    try:
        with open(path[:-4] + ".json", "rb") as f:
            meta = orjson.loads(f.read(META_MAX))
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if size <= 4 * limit:
                whole = _text(f.read())
                head = tail = whole
                total = len(whole)
            else:  # a huge log: only its ends are read (the agent's own tool would have kept no more)
                head = _text(f.read(2 * limit))
                f.seek(size - 2 * limit)
                tail = _text(f.read())
                total = size
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("run_id"), str):
        return None

    def text(key: str) -> str | None:
        v = meta.get(key)
        return v if isinstance(v, str) else None

    kind = text("kind")
    return RunLog(meta["run_id"], agent_view(head, tail, total, limit), text("rule"), text("family"),
                  kind if kind in ("structured", "generic") else None)


def saving_record(m: Measured) -> Envelope:
    """The ``routing.saving`` event of one measurement; its id digests the content, so the same
    measurement published twice is one version."""
    sv, run = m.saving, m.run
    data: dict[str, Any] = {
        "decision_id": decision_id(m.session_id, m.tool_use_id, 0), "tool_use_id": m.tool_use_id,
        "session_id": m.session_id, "rule": run.rule, "kind": run.kind, "family": run.family,
        "mode": "enforce" if run.rule else None, "action": "rewrite" if run.rule else None, "basis": "measured",
        "model": sv.model, "raw_tokens": sv.raw_tokens, "compact_tokens": sv.compact_tokens,
        "carry_calls": sv.carry_calls, "saved_once_tokens": sv.saved_once_tokens,
        "saved_carry_tokens": sv.saved_carry_tokens, "charged_tokens": sv.charged_tokens,
        "net_tokens": sv.net_tokens, "net_usd": sv.net_usd, "context_tokens": sv.context_tokens,
        "fidelity": m.fidelity.value, "fidelity_used": m.fidelity.used, "run_id": run.run_id,
        "decided_at": m.decided_at}
    record = RoutingSaving.model_validate(data)
    digest = hashlib.blake2b(record.model_dump_json().encode(), digest_size=12).hexdigest()
    return make_envelope(record, id=f"saving:{digest}", type=EventType.ROUTING_SAVING, source=SOURCE,
                         subject=m.session_id, time=_time(m.decided_at))


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def named_run(tool_use_id: str, runs: str) -> str | None:
    """The log of the run the router named after the tool call ``tool_use_id`` (``rewrite.run_id_for``),
    when its metadata is in ``runs``: a run printed unchanged is found this way (no footer names it)."""
    run_id = run_id_for(tool_use_id)
    if run_id is None or not os.path.exists(os.path.join(runs, run_id + ".json")):
        return None
    return os.path.join(runs, run_id + ".log")


def measure_file(path: Path, prices: PriceTable | None = None, limit: int = AGENT_LIMIT,
                 runs: str | None = None) -> list[Envelope]:
    """The ``routing.saving`` events of every runner step of one transcript file (``runs``: the runner's
    folder, where runs named after their tool call are looked up; default ``$OUTLOOP_HOME/runs``)."""
    timeline = build_timeline(read_jsonl(path, ImportStats()), str(path))
    if not timeline.session_id:
        return []
    folder = runs or runs_dir(os.environ)
    found = measure(timeline, lambda p: load_run(p, limit), calibrate([timeline]), prices or active_table(),
                    lambda tool_use_id: named_run(tool_use_id, folder))
    return [saving_record(m) for m in found]


def _mentions_runner(path: Path, chunk: int = 1 << 20) -> bool:
    """Whether the file holds the runner's line prefix anywhere (read in pieces: memory stays flat)."""
    needle = b"[outloop] "
    tail = b""
    try:
        with path.open("rb") as f:
            while data := f.read(chunk):
                if needle in tail + data:
                    return True
                tail = data[-len(needle):]
    except OSError:
        return False
    return False


def measure_paths(paths: list[Path], prices: PriceTable | None = None) -> list[Envelope]:
    """The ``routing.saving`` events of the runner results in the Claude Code transcripts under
    ``paths`` (``outloop replay``: runs the tailer did not see live are measured from their logs). When
    the runs folder holds runs named after tool calls (printed unchanged, so no transcript names them),
    every transcript is read for them."""
    from outloop.streams.importers.detect import collect_files

    runs = runs_dir(os.environ)
    named = _has_named_runs(runs)
    out: list[Envelope] = []
    for path in collect_files(paths, ImportStats()):
        if path.suffix == ".jsonl" and (named or _mentions_runner(path)):
            out.extend(measure_file(path, prices, agent_limit(), runs))
    return out


def _has_named_runs(runs: str) -> bool:
    try:
        with os.scandir(runs) as it:
            return any(e.name.startswith(RUN_ID_PREFIX) and e.name.endswith(".json") for e in it)
    except OSError:
        return False


class Measurer:
    """Which transcripts hold runner results, and their measurements when due. Used by one thread
    (the tailer's): :meth:`note` after each read, :meth:`due` once per pass, :meth:`acked` for what
    the broker acknowledged."""

    every = 10.0  # seconds between two measurements of one growing file
    forget_after = 3600.0  # a file unchanged this long is no longer watched

    def __init__(self, prices: PriceTable | None = None, limit: int | None = None, runs: str | None = None) -> None:
        self.prices = prices
        self.limit = limit or agent_limit()
        self.runs = runs or runs_dir(os.environ)
        self.files: dict[str, tuple[float, float]] = {}  # path -> (grew at, measured at)
        self.sent: dict[str, str] = {}  # decision_id -> envelope id last acknowledged
        self._last: list[str] = []  # the files measured by the last call of due()
        self.followed: dict[str, FollowedTranscript] = {}  # path -> what was read of it (incremental)

    def note(self, path: str, envelopes: list[Envelope], now: float) -> None:
        """New lines of ``path`` were read: watch it when one of them is a runner's result (its footer, or
        a run named after its tool call: one printed unchanged)."""
        if path in self.files:
            self.files[path] = (now, self.files[path][1])
            return
        if any(e.type is EventType.TOOL_RESULT and ("[outloop] " in str(e.data.get("output_text") or "")
                                                    or named_run(str(e.data.get("tool_use_id")), self.runs))
               for e in envelopes):
            self.files[path] = (now, float("-inf"))

    def due(self, now: float) -> list[Envelope]:
        """The new measurements of the watched files that grew since they were last measured (at most
        one measurement per file every :attr:`every` s)."""
        out: list[Envelope] = []
        self._last = []
        for path, (grew, measured) in list(self.files.items()):
            if now - grew > self.forget_after:
                del self.files[path]
                self.followed.pop(path, None)
                continue
            if grew <= measured or now - measured < self.every:
                continue
            self.files[path] = (grew, now)
            self._last.append(path)
            followed = self.followed.get(path) or self.followed.setdefault(
                path, FollowedTranscript(path, lambda tool_use_id: named_run(tool_use_id, self.runs)))
            try:
                found = followed.measure(lambda p: load_run(p, self.limit), self.prices or active_table())
                envs = [saving_record(m) for m in found]
            except Exception:  # noqa: BLE001 - a bad file costs its measurement, never the tailer
                log.exception("savings: %s could not be measured", path)
                self.followed.pop(path, None)  # read again from its start next time
                continue
            out.extend(e for e in envs if self.sent.get(e.data["decision_id"]) != e.id)
        return out

    def acked(self, envelopes: list[Envelope]) -> None:
        for e in envelopes:
            self.sent[e.data["decision_id"]] = e.id

    def failed(self) -> None:
        """The last measurements were not all acknowledged: their files are measured again next pass."""
        for path in self._last:
            if path in self.files:
                self.files[path] = (self.files[path][0], float("-inf"))
