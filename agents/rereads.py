"""The unchanged re-read rule, pure: a ``Read`` of lines this session already read, from a file that has
not changed since (same size and modification time) and with no compaction since, may be answered with
a deny whose reason says where it was read and that its content is still in the agent's context.

:class:`ReadMemory` is one session's memory of its completed reads. A read is remembered from its
PostToolUse payload: the lines Claude Code actually returned (``tool_response.file``: ``startLine``,
``numLines``, ``totalLines``; a read that reached the last line covers everything after it too) and
the file's stamp (size, mtime) - only when the stamp taken at its PreToolUse equals the one at its
PostToolUse, so a file that changed while it was read is never vouched for. An edit or write of the
path through the agent's tools forgets the path; a compaction (``PreCompact``, or ``SessionStart``
with source ``compact``/``clear``) forgets everything. :func:`unchanged_reread` answers whether a new
Read request is covered: never for a line range not read before, never without a stamp, never when
the file's stamp now differs. Bounded: ``MAX_PATHS`` paths a session, ``MAX_RANGES`` ranges a path.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EDIT_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit"})
MAX_PATHS = 256
MAX_RANGES = 16
INF = float("inf")


@dataclass(frozen=True)
class Stamp:
    size: int
    mtime_ns: int


def stamp_of(path: str) -> Stamp | None:
    """The file's size and modification time, None when it cannot be read (the rule then never applies)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return Stamp(st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class SeenRead:
    first: int  # first line read (1-based)
    end: float  # one past the last line read; inf when the read reached the end of the file
    stamp: Stamp
    tool_use_id: str | None
    at: float


def requested(tool_input: Mapping[str, Any]) -> tuple[int, float]:
    """The lines a Read asks for: ``offset`` (1-based, default 1) and ``limit`` (default: to the end)."""
    offset, limit = tool_input.get("offset"), tool_input.get("limit")
    first = offset if isinstance(offset, int) and not isinstance(offset, bool) and offset > 0 else 1
    ok = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
    return first, (first + limit if ok else INF)  # type: ignore[operator]


def returned(tool_input: Mapping[str, Any], tool_response: Any) -> tuple[int, float] | None:
    """The lines a completed Read returned, from its response (``file.startLine/numLines/totalLines``);
    None when the response does not say (then nothing is remembered)."""
    file = tool_response.get("file") if isinstance(tool_response, Mapping) else None
    if not isinstance(file, Mapping):
        return None
    start, num, total = file.get("startLine"), file.get("numLines"), file.get("totalLines")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, num, total)):
        return None
    assert isinstance(start, int) and isinstance(num, int) and isinstance(total, int)
    if start < 1 or num < 0:
        return None
    return start, (INF if start + num > total else start + num)


def _path(tool_input: Mapping[str, Any], cwd: str | None) -> str | None:
    path = tool_input.get("file_path")
    if not isinstance(path, str) or not path:
        return None
    return os.path.normpath(os.path.join(cwd or "/", path))


@dataclass
class ReadMemory:
    """One session's completed reads, by normalised path (least recently read first)."""

    reads: OrderedDict[str, list[SeenRead]] = field(default_factory=OrderedDict)
    pending: dict[str, Stamp | None] = field(default_factory=dict)  # tool_use_id -> stamp at PreToolUse

    def pre_read(self, tool_use_id: str | None, tool_input: Mapping[str, Any], cwd: str | None,
                 stamp: Stamp | None) -> None:
        if tool_use_id and _path(tool_input, cwd) and len(self.pending) < 4 * MAX_PATHS:
            self.pending[tool_use_id] = stamp

    def post(self, tool_name: str, tool_use_id: str | None, tool_input: Mapping[str, Any], tool_response: Any,
             cwd: str | None, stamp: Stamp | None, now: float) -> None:
        """A completed tool call: a Read is remembered, an edit or write forgets its path."""
        path = _path(tool_input, cwd)
        if path is None:
            return
        if tool_name in EDIT_TOOLS:
            self.reads.pop(path, None)
            return
        before = self.pending.pop(tool_use_id, None) if tool_use_id else None
        lines = returned(tool_input, tool_response)
        if tool_name != "Read" or lines is None or stamp is None or before != stamp:
            return
        seen = self.reads.pop(path, [])
        seen = [s for s in seen if s.stamp == stamp][-(MAX_RANGES - 1):]
        seen.append(SeenRead(lines[0], lines[1], stamp, tool_use_id, now))
        self.reads[path] = seen
        while len(self.reads) > MAX_PATHS:
            self.reads.popitem(last=False)

    def compacted(self) -> None:
        self.reads.clear()
        self.pending.clear()


def unchanged_reread(memory: ReadMemory | None, tool_input: Mapping[str, Any], cwd: str | None,
                     stamp: Stamp | None) -> SeenRead | None:
    """The earlier read that already returned every line this Read asks for, from the file as it is now
    (same stamp), with no compaction since; None otherwise."""
    if memory is None or stamp is None:
        return None
    path = _path(tool_input, cwd)
    if path is None:
        return None
    first, end = requested(tool_input)
    for seen in reversed(memory.reads.get(path, ())):
        if seen.stamp == stamp and seen.first <= first and end <= seen.end:
            return seen
    return None


def reason(path: str, seen: SeenRead, now: float) -> str:
    """The deny reason: where the content was read and that it is still in context."""
    lines = f"lines {seen.first}-{'end' if seen.end == INF else int(seen.end) - 1}"
    ago = max(0, round(now - seen.at))
    where = f"tool call {seen.tool_use_id}" if seen.tool_use_id else "an earlier Read"
    return (f"outloop: {path} ({lines}) was already read in this session by {where}, {ago} s ago, and has not "
            f"changed since (same size and modification time; no compaction since): its content is still in "
            f"your context above. Use it from there; a Read of lines not read before, or after the file "
            f"changes, goes through.")
