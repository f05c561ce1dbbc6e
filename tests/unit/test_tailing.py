"""The tailer's offset logic: decisions per file state, complete lines, rewinds, the checkpoint file;
and the tailer's per-pass reading of a real file (no broker: what it would publish, and its marks)."""

from __future__ import annotations

from pathlib import Path

import orjson

from outloop.streams.importers import ImportStats
from outloop.streams.importers.transcripts import parse_lines
from outloop.streams.tailing import (
    Checkpoint,
    Mark,
    Seen,
    Step,
    complete_lines,
    decide,
    read_from,
    rewind_after_broker_loss,
    rewritten,
    seen_of,
)


def test_decisions_for_every_file_state() -> None:
    assert decide(None, None) is Step.DROP
    assert decide(Mark(10, 1), None) is Step.DROP  # deleted
    assert decide(None, Seen(1, 0)) is Step.IDLE  # new and empty: nothing yet
    assert decide(None, Seen(1, 5)) is Step.READ  # new file: from its start
    assert decide(Mark(10, 1), Seen(1, 10)) is Step.IDLE
    assert decide(Mark(10, 1), Seen(1, 11)) is Step.READ
    assert decide(Mark(10, 1), Seen(1, 9)) is Step.RESTART  # truncated
    assert decide(Mark(10, 1), Seen(2, 10)) is Step.RESTART  # replaced (rotated), even at the same size
    assert decide(Mark(10, 1), Seen(2, 50)) is Step.RESTART


def test_a_partial_last_line_waits_for_its_newline() -> None:
    assert complete_lines(b"", 7) == ([], 7)
    assert complete_lines(b'{"a":1', 7) == ([], 7)
    assert complete_lines(b'{"a":1}\n{"b":', 7) == ([b'{"a":1}'], 15)
    assert complete_lines(b'{"a":1}\n\n{"b":2}\n', 0) == ([b'{"a":1}', b"", b'{"b":2}'], 17)


def test_lines_split_at_any_byte_give_the_records_of_the_whole_file(tmp_path: Path) -> None:
    """Whatever the sizes of the writes, the complete lines read pass by pass are the file's lines."""
    records = [{"n": i, "text": "é" * i} for i in range(20)]
    whole = b"".join(orjson.dumps(r) + b"\n" for r in records)
    for step in (1, 3, 17, 64, len(whole)):
        path = tmp_path / f"t{step}.jsonl"
        path.write_bytes(b"")
        offset, got = 0, []
        for cut in range(step, len(whole) + step, step):
            with path.open("ab") as fh:
                fh.write(whole[cut - step:cut])
            seen = seen_of(str(path))
            assert seen is not None
            data = read_from(str(path), offset, seen.inode)
            assert data is not None
            lines, offset = complete_lines(data, offset)
            got.extend(parse_lines(lines, ImportStats(), path))
        assert got == records and offset == len(whole)


def test_a_limited_read_never_sticks_on_a_long_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"ab\n" + b"x" * 50 + b"\ncd\n" + b"y" * 10)
    seen = seen_of(str(path))
    assert seen is not None
    assert read_from(str(path), 0, seen.inode, limit=4) == b"ab\nx"  # a newline in it: lines up to there
    assert read_from(str(path), 3, seen.inode, limit=4) == b"x" * 50 + b"\n"  # longer than the limit: whole
    assert read_from(str(path), 54, seen.inode, limit=100) == b"cd\n" + b"y" * 10
    assert read_from(str(path), 57, seen.inode, limit=4) == b"y" * 10  # to the end: no newline yet


def test_read_from_refuses_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"one\n")
    seen = seen_of(str(path))
    assert seen is not None
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(b"two\n")
    replacement.replace(path)
    assert read_from(str(path), 0, seen.inode) is None
    assert seen_of(str(tmp_path / "gone.jsonl")) is None
    assert seen_of(str(tmp_path)) is None  # not a regular file


def test_a_mark_keeps_the_bytes_before_it_to_notice_a_rewrite() -> None:
    m = Mark(0, 7).after(b'{"a":1}\n{"b":', 8)
    assert m == Mark(8, 7, b'{"a":1}\n')
    long = m.after(b"x" * 100 + b"\n", 109)
    assert long.offset == 109 and long.tail == (b"x" * 100 + b"\n")[-64:]
    assert not rewritten(long, b"x" * 63 + b"\n")
    assert rewritten(long, b"y" * 63 + b"\n")  # truncated and written again past the mark
    assert not rewritten(Mark(0, 7), b"")


def test_rewind_after_broker_loss_covers_the_journal_window() -> None:
    marks = {"old": Mark(100, 1), "recent": Mark(200, 2), "gone": Mark(300, 3)}
    mtimes = {"old": 1000.0, "recent": 9000.0, "gone": None}
    out = rewind_after_broker_loss(marks, mtimes, now=10_000.0, window=3600.0)
    assert out == {"old": Mark(100, 1), "recent": Mark(0, 2), "gone": Mark(0, 3)}


def test_checkpoint_round_trip_and_damage(tmp_path: Path) -> None:
    cp = Checkpoint(tmp_path / "tailer" / "offsets.json")
    assert cp.load() == {}
    marks = {"/a.jsonl": Mark(12, 34, b'{"x":1}\n'), "/b c.jsonl": Mark(0, 5)}
    cp.save(marks)
    assert cp.load() == marks
    assert [p.name for p in cp.path.parent.iterdir()] == ["offsets.json"]  # no temp file left
    cp.path.write_bytes(b'{"v": 1, "files": {"/a.jsonl": {"offset": 12')  # torn (not by save: it renames)
    assert cp.load() == {}  # read again from the start: ids make repeats upsert
    cp.path.write_bytes(orjson.dumps({"v": 99, "files": {}}))
    assert cp.load() == {}


def test_damaged_and_blank_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    stats = ImportStats()
    got = list(parse_lines([b'{"a":1}', b"", b"  ", b'{"a":', b"[1]"], stats, tmp_path / "t.jsonl"))
    assert got == [{"a": 1}]
    assert stats.records_read == 3 and stats.damaged_total == 2


def test_cold_files_wait_for_a_walk_or_a_hook(tmp_path: Path) -> None:
    """Lines that make no envelope (summaries) need no broker: the marks alone show what was read."""
    from outloop.streams.settings import Settings
    from outloop.streams.tailer import Tailer

    s = Settings.from_env({}, home=tmp_path / "home", projects=tmp_path / "projects")
    tailer = Tailer(s)
    tailer.discover_every = 1000.0
    path = tmp_path / "projects" / "p" / "s.jsonl"
    path.parent.mkdir(parents=True)
    line = b'{"type":"summary","summary":"x"}\n'

    def grow_and_pass(now: float) -> int:
        with path.open("ab") as fh:
            fh.write(line)
        tailer.run_once(now=now)
        return tailer.marks[str(path)].offset // len(line)

    assert grow_and_pass(0.0) == 1  # the first walk finds it
    assert grow_and_pass(1.0) == 2  # it grew a moment ago: looked at every pass
    assert grow_and_pass(200.0) == 2  # cold: left for the next walk
    tailer.watch(str(path))  # a hook of its session fired
    tailer.run_once(now=201.0)
    assert tailer.marks[str(path)].offset == 3 * len(line)
    other = path.with_name("t.jsonl")
    other.write_bytes(line)
    tailer.run_once(now=202.0)
    assert str(other) not in tailer.marks  # not walked yet
    tailer.run_once(now=1000.0)
    assert tailer.marks[str(other)].offset == len(line)
    assert Tailer(s).marks == tailer.marks  # saved
