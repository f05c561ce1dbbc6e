"""The pure part of following transcript files as they are written: what to do with a file given its
checkpoint and what the file system says now, how new bytes split into complete lines, and the
checkpoint file itself (written like a spool record: a temp file renamed into place).

A *mark* is how far a file was read and published: the byte offset just after the last complete line
whose envelopes the broker acknowledged, and the file's inode at that time. Everything here takes
its inputs as values (no clock, no reads but those of :class:`Checkpoint`), so the decisions are
tested without files or time.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import orjson

CHECKPOINT_VERSION = 1


TAIL_BYTES = 64  # bytes before a mark kept with it: a file rewritten in place no longer ends with them


@dataclass(frozen=True)
class Mark:
    """A file read and published up to ``offset`` (bytes) while it had inode ``inode``; ``tail`` is the
    last bytes before ``offset`` (up to :data:`TAIL_BYTES`), to notice a file rewritten in place."""

    offset: int
    inode: int
    tail: bytes = b""

    def after(self, data: bytes, end: int) -> Mark:
        """The mark once ``data`` (the bytes read from this mark) was consumed up to offset ``end``."""
        return Mark(end, self.inode, (self.tail + data[: end - self.offset])[-TAIL_BYTES:])


@dataclass(frozen=True)
class Seen:
    """What the file system says of a file now (None for a file that is gone)."""

    inode: int
    size: int


class Step(Enum):
    IDLE = "idle"  # nothing new
    READ = "read"  # new bytes after the mark
    RESTART = "restart"  # truncated or replaced: read it again from its start, with a fresh state
    DROP = "drop"  # deleted: forget it


def decide(mark: Mark | None, seen: Seen | None) -> Step:
    """What to do with one followed file. A file replaced under the same path (a new inode) or made
    shorter than the mark (truncated) is read again from its start: its envelope ids are deterministic,
    so whatever it repeats upserts the rows it made. A new file (no mark) is read from its start."""
    if seen is None:
        return Step.DROP
    if mark is None:
        return Step.READ if seen.size > 0 else Step.IDLE
    if seen.inode != mark.inode or seen.size < mark.offset:
        return Step.RESTART
    return Step.READ if seen.size > mark.offset else Step.IDLE


def rewritten(mark: Mark, before: bytes) -> bool:
    """True when the bytes now before the mark (``before``, read from ``offset - len(tail)``) are not
    those the mark saw: the file was truncated and written again past the mark between two looks
    (same inode, not shorter), so it must be read again from its start."""
    return before != mark.tail


def complete_lines(data: bytes, base: int) -> tuple[list[bytes], int]:
    """The complete lines of ``data`` (bytes read at file offset ``base``) and the offset just after the
    last one. A last line without its newline is being written: it is left for a later read."""
    end = data.rfind(b"\n")
    if end < 0:
        return [], base
    return data[: end + 1].splitlines(), base + end + 1


def rewind_after_broker_loss(marks: dict[str, Mark], mtimes: dict[str, float | None], now: float,
                             window: float) -> dict[str, Mark]:
    """Marks after a broker that kept its log in memory was lost: every file written within ``window``
    seconds of ``now`` is read again from its start (what the lost log held but the sink had not
    stored yet comes back; ids make the rest upsert the same rows). The window is the sent journal's
    age bound, the forwarder's own bound on what it sends again."""
    out = {}
    for path, mark in marks.items():
        mtime = mtimes.get(path)
        out[path] = Mark(0, mark.inode) if mtime is None or mtime >= now - window else mark
    return out


class Checkpoint:
    """The marks of every followed file, in one JSON file replaced atomically (temp file + rename, so a
    crash leaves the old or the new version, never a mix)."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync

    def load(self) -> dict[str, Mark]:
        """The saved marks; none when the file is missing or unreadable (every file is read again from
        its start: nothing is lost, ids make the repeats upsert)."""
        try:
            doc = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        if not isinstance(doc, dict) or doc.get("v") != CHECKPOINT_VERSION or not isinstance(doc.get("files"), dict):
            return {}
        marks = {}
        for name, entry in doc["files"].items():
            if isinstance(entry, dict) and isinstance(entry.get("offset"), int) and isinstance(entry.get("inode"), int):
                try:
                    tail = bytes.fromhex(entry.get("tail") or "")
                except (TypeError, ValueError):
                    continue  # read again from its start
                marks[name] = Mark(entry["offset"], entry["inode"], tail)
        return marks

    def save(self, marks: dict[str, Mark]) -> None:
        doc = {"v": CHECKPOINT_VERSION,
               "files": {name: {"offset": m.offset, "inode": m.inode, "tail": m.tail.hex()}
                         for name, m in sorted(marks.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(doc))
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def seen_of(path: str) -> Seen | None:
    """The file's inode and size, None when it is gone or not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return Seen(st.st_ino, st.st_size) if stat.S_ISREG(st.st_mode) else None


def read_from(path: str, offset: int, inode: int, limit: int | None = None) -> bytes | None:
    """The file's bytes from ``offset`` (at most ``limit`` of them; None: to its end), None when the
    open file is no longer ``inode`` (replaced between the stat and the open: the next pass decides
    again). A read that ends inside a line (``limit`` reached) gets the rest of that line too, so a
    line longer than ``limit`` is never stuck."""
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_ino != inode:
                return None
            fh.seek(offset)
            if limit is None:
                return fh.read()
            data = fh.read(limit)
            if len(data) == limit and b"\n" not in data:
                data += fh.readline()  # one line longer than the limit: to its newline (or the end)
            return data
    except OSError:
        return None
