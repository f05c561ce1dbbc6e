"""Walks files and folders, detects each file's format and feeds it to its importer.

Formats (by name, then by content):
- ``transcript``: a ``.jsonl`` file whose first parseable lines are transcript records.
- ``transcript-array``: a ``.json`` array of transcript records (a hook-log capture's ``chat.json``).
- ``hook-log``: a ``.json`` array of hook payloads (objects with ``hook_event_name``).
- ``trajectory``: a ``.json`` object with ``trajectory_format`` ``mini-swe-agent-*`` (``*.traj.json``).
Label files (``results_summary.json``) and anything else are skipped with a reason in the stats.

Order is deterministic: files are sorted by path, with sub-agent transcripts (``agent-*.jsonl``)
after every main session file, so a session's call keys count its main transcript first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from outloop.schemas.events import Envelope, EventType
from outloop.streams.importers import ImportStats
from outloop.streams.importers.hooklogs import EVENT_FILES, iter_hook_log, looks_like_hook_log
from outloop.streams.importers.trajectories import is_trajectory, iter_trajectory
from outloop.streams.importers.transcripts import TranscriptState, iter_transcript_array, iter_transcript_file

LABEL_FILES = {"results_summary.json": "label file (mini-swe-agent resolved/unresolved labels)"}
TRANSCRIPT_TYPES = {"user", "assistant", "system", "summary", "file-history-snapshot", "progress",
                    "queue-operation"}
SNIFF_LINES = 20
SKIP = "skip"


def default_claude_projects() -> Path:
    """Where Claude Code keeps its transcripts: ``$CLAUDE_CONFIG_DIR/projects``, else
    ``~/.claude/projects``. Importing this folder imports every local session."""
    base = os.environ.get("CLAUDE_CONFIG_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".claude") / "projects"


def is_transcript_record(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in TRANSCRIPT_TYPES and (
        "uuid" in value or "sessionId" in value or "leafUuid" in value or "messageId" in value)


def _sort_key(path: Path) -> tuple[bool, tuple[str, ...]]:
    return (path.name.startswith("agent-") and path.name.endswith(".jsonl"), path.parts)


def collect_files(paths: Iterable[Path], stats: ImportStats) -> list[Path]:
    """Every file under ``paths`` (recursively), once, in import order. Missing paths are skipped."""
    found: dict[Path, Path] = {}
    for path in paths:
        path = Path(path)
        if path.is_dir():
            candidates: Iterable[Path] = (p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            candidates = [path]
        else:
            stats.skip(path, "missing")
            continue
        for file in candidates:
            found.setdefault(file.resolve(), file)
    return sorted(found.values(), key=_sort_key)


def _sniff_jsonl(path: Path) -> bool:
    with path.open("rb") as fh:
        for line in islice((raw for raw in fh if raw.strip()), SNIFF_LINES):
            try:
                if is_transcript_record(orjson.loads(line)):
                    return True
            except orjson.JSONDecodeError:
                continue
    return False


def detect(path: Path) -> tuple[str, Any]:
    """``(format, parsed document or None)``, or ``("skip", reason)``."""
    name = path.name
    if name in LABEL_FILES:
        return SKIP, LABEL_FILES[name]
    try:
        if name.endswith(".jsonl"):
            if _sniff_jsonl(path):
                return "transcript", None
            return SKIP, "unknown format: no transcript records in the first lines"
        if not name.endswith(".json"):
            return SKIP, "unknown format: not .json or .jsonl"
        raw = path.read_bytes()
    except OSError as exc:
        return SKIP, f"unreadable: {exc.__class__.__name__}"
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return SKIP, "unknown format: not JSON"
    if is_trajectory(doc):
        return "trajectory", doc
    if isinstance(doc, list):
        if looks_like_hook_log(doc) or (not doc and path.stem in EVENT_FILES):
            return "hook-log", doc
        first = next((item for item in doc if isinstance(item, dict)), None)
        if is_transcript_record(first):
            return "transcript-array", doc
        return SKIP, "unknown format: JSON array of neither hook payloads nor transcript records"
    return SKIP, "unknown format: JSON of an unknown shape"


def first_usable(paths: list[Path], stats: ImportStats) -> Path | None:
    """The first file under ``paths`` an importer can read, or None when there is none; the files
    passed over on the way are recorded in ``stats.skipped_files`` with the reason. Lets a caller
    refuse input with nothing importable before it starts anything."""
    for path in collect_files(paths, stats):
        fmt, reason = detect(path)
        if fmt != SKIP:
            return path
        stats.skip(path, reason)
    return None


def _envelopes(path: Path, fmt: str, doc: Any, stats: ImportStats,
               state: TranscriptState) -> Iterator[Envelope]:
    if fmt == "transcript":
        return iter_transcript_file(path, stats, state)
    if fmt == "transcript-array":
        return iter_transcript_array(path, doc, stats, state)
    if fmt == "hook-log":
        return iter_hook_log(path, stats, doc)
    return iter_trajectory(path, stats, doc)


def iter_paths(paths: list[Path], stats: ImportStats, messages: bool = False) -> Iterator[Envelope]:
    """Envelopes of every importable file under ``paths``, in a deterministic order. Files that are
    not importable are recorded in ``stats.skipped_files`` with the reason.

    An id is yielded once per call: the same capture or trajectory found in two folders (hook logs
    of successive commits repeat earlier payloads) counts once. Usage ids are the exception: a usage
    record is re-yielded, with the same id, only when a later file holds larger totals for it, and
    so is an API message (``messages``: transcripts also yield ``transcript.message`` envelopes) when a
    later file holds more of it."""
    state = TranscriptState(messages=messages)
    emitted: set[str] = set()
    for path in collect_files(paths, stats):
        fmt, doc = detect(path)
        if fmt == SKIP:
            stats.skip(path, doc)
            continue
        stats.files_by_format[fmt] += 1
        try:
            for envelope in _envelopes(path, fmt, doc, stats, state):
                if envelope.id in emitted and envelope.type not in (EventType.USAGE, EventType.MESSAGE):
                    stats.retract(envelope, "duplicate_envelope")
                    continue
                emitted.add(envelope.id)
                yield envelope
        except OSError as exc:  # vanished or unreadable halfway: keep what was read, go on
            stats.skip(path, f"unreadable: {exc.__class__.__name__}")
