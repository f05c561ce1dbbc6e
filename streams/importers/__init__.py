"""Importers: replayable sources (Claude Code transcripts, hook-log captures, mini-swe-agent
trajectories) turned into :class:`schemas.events.Envelope` objects.

Every importer is a pure generator over files. Damaged input (an unparseable line, a record of the
wrong shape) is counted in :class:`ImportStats` and skipped; it never stops an import. Envelope ids
are deterministic, so importing the same data twice, even from another path, yields the same ids and
the DuckDB sink upserts instead of adding rows.

Entry point: :func:`streams.importers.detect.iter_paths`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from outloop.schemas.events import Envelope, EventType


@dataclass
class ImportStats:
    """What an import read, produced and skipped. Keys of the per-file maps are path strings.

    ``records_read`` counts non-blank transcript lines, elements of JSON arrays (hook logs, chat.json)
    and trajectory messages. ``damaged_by_file`` counts unparseable lines and records of the wrong
    shape, which are skipped. ``notes`` counts what was dropped on purpose: duplicates across files,
    ``<synthetic>`` usage, trajectory messages that ran no command."""

    files_by_format: Counter[str] = field(default_factory=Counter)
    records_read: int = 0
    envelopes_by_type: Counter[str] = field(default_factory=Counter)
    damaged_by_file: Counter[str] = field(default_factory=Counter)
    skipped_files: dict[str, str] = field(default_factory=dict)
    notes: Counter[str] = field(default_factory=Counter)  # duplicates, synthetic usage, no action...

    @property
    def damaged_total(self) -> int:
        return sum(self.damaged_by_file.values())

    @property
    def envelopes_total(self) -> int:
        return sum(self.envelopes_by_type.values())

    def damaged(self, path: Path | str, n: int = 1) -> None:
        self.damaged_by_file[str(path)] += n

    def skip(self, path: Path | str, reason: str) -> None:
        self.skipped_files[str(path)] = reason

    def note(self, what: str, n: int = 1) -> None:
        self.notes[what] += n

    def produced(self, envelope: Envelope) -> Envelope:
        self.envelopes_by_type[str(envelope.type)] += 1
        return envelope

    def retract(self, envelope: Envelope, why: str) -> None:
        """Undo :meth:`produced` for an envelope the caller dropped after all (e.g. a duplicate)."""
        self.envelopes_by_type[str(envelope.type)] -= 1
        self.notes[why] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "files_by_format": dict(self.files_by_format),
            "records_read": self.records_read,
            "envelopes_by_type": dict(self.envelopes_by_type),
            "envelopes_total": self.envelopes_total,
            "damaged_total": self.damaged_total,
            "damaged_by_file": dict(self.damaged_by_file),
            "skipped_files": dict(self.skipped_files),
            "notes": dict(self.notes),
        }


UNREAD = object()


def read_json(path: Path, stats: ImportStats) -> Any:
    """The file's JSON document, or :data:`UNREAD` after recording why the file was skipped."""
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        stats.skip(path, f"unreadable: {exc.__class__.__name__}")
    except orjson.JSONDecodeError:
        stats.skip(path, "unknown format: not JSON")
    return UNREAD


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 string (``Z`` accepted) or epoch seconds as an aware UTC datetime, else None.
    A naive time is taken as UTC (transcripts write UTC)."""
    try:
        if isinstance(value, str) and value:
            dt = datetime.fromisoformat(value)
        elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return datetime.fromtimestamp(value, UTC)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def make_envelope(
    model: BaseModel | None,
    *,
    id: str,
    type: EventType,
    source: str,
    subject: str,
    time: datetime | None,
    data: dict[str, Any] | None = None,
) -> Envelope:
    """Envelope around a validated model (dumped as JSON-compatible data) or around ``data`` as is.
    Raises pydantic's ValidationError when the envelope is not valid."""
    payload = data if data is not None else model.model_dump(mode="json") if model is not None else {}
    return Envelope(id=id, type=type, source=source, subject=subject, time=time, data=payload)


__all__ = ["ImportStats", "ValidationError", "make_envelope", "parse_time"]
