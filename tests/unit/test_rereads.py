"""The unchanged re-read rule (agents.rereads) on real Claude Code Read payloads pointed at real files."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from outloop.agents.rereads import MAX_PATHS, ReadMemory, reason, stamp_of, unchanged_reread
from tests.conftest import traces_dir


def _payloads(name: str) -> list[dict[str, Any]]:
    root = traces_dir() / "claude-code-hooks" / "templar@a46211b7"
    return [p for p in json.loads((root / name).read_text()) if p.get("tool_name") == "Read"]


@pytest.fixture(scope="module")
def real() -> tuple[dict[str, Any], dict[str, Any]]:
    """A real PreToolUse Read payload and a real PostToolUse Read payload (whole file)."""
    pre = next(p for p in _payloads("pre_tool_use.json") if set(p["tool_input"]) == {"file_path"})
    post = next(p for p in _payloads("post_tool_use.json") if set(p["tool_input"]) == {"file_path"})
    return pre, post


def read(real: tuple[dict[str, Any], dict[str, Any]], path: Path, tid: str, **rng: int
         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The real payloads, made to read ``path`` (lines as Claude Code reports them)."""
    pre, post = copy.deepcopy(real[0]), copy.deepcopy(real[1])
    lines = path.read_text().splitlines()
    first = rng.get("offset", 1)
    count = min(rng.get("limit", len(lines)), len(lines) - first + 1)
    for p in (pre, post):
        p["tool_input"] = {"file_path": str(path), **rng}
        p["tool_use_id"] = tid
    post["tool_response"]["file"].update(filePath=str(path), content="\n".join(lines[first - 1:first - 1 + count]),
                                         startLine=first, numLines=count, totalLines=len(lines))
    return pre, post


def run(memory: ReadMemory, pre: dict[str, Any], post: dict[str, Any], now: float = 100.0) -> None:
    path = pre["tool_input"]["file_path"]
    memory.pre_read(pre["tool_use_id"], pre["tool_input"], pre["cwd"], stamp_of(path))
    memory.post(post["tool_name"], post["tool_use_id"], post["tool_input"], post["tool_response"], post["cwd"],
                stamp_of(path), now)


def ask(memory: ReadMemory, pre: dict[str, Any]) -> Any:
    return unchanged_reread(memory, pre["tool_input"], pre["cwd"], stamp_of(pre["tool_input"]["file_path"]))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    f = tmp_path / "app.py"
    f.write_text("".join(f"line {i}\n" for i in range(1, 101)))
    return f


def test_a_second_read_of_an_unchanged_file_is_covered(real: Any, src: Path) -> None:
    m = ReadMemory()
    pre, post = read(real, src, "toolu_1")
    assert ask(m, pre) is None  # first read: nothing to cover it
    run(m, pre, post)
    again, _ = read(real, src, "toolu_2")
    seen = ask(m, again)
    assert seen is not None and seen.tool_use_id == "toolu_1"
    text = reason(str(src), seen, 160.0)
    assert str(src) in text and "toolu_1" in text and "60 s ago" in text and "lines 1-end" in text
    narrower, _ = read(real, src, "toolu_3", offset=10, limit=5)
    assert ask(m, narrower) is not None


def test_never_for_lines_not_read_before(real: Any, src: Path) -> None:
    m = ReadMemory()
    run(m, *read(real, src, "toolu_1", offset=1, limit=30))
    assert ask(m, read(real, src, "toolu_2", offset=1, limit=30)[0]) is not None
    assert ask(m, read(real, src, "toolu_3", offset=20, limit=20)[0]) is None  # lines 31-39 never read
    assert ask(m, read(real, src, "toolu_4")[0]) is None  # the whole file was not read


def test_never_after_the_file_changed_an_edit_or_a_compaction(real: Any, src: Path) -> None:
    m = ReadMemory()
    run(m, *read(real, src, "toolu_1"))
    src.write_text(src.read_text() + "one more line\n")
    assert ask(m, read(real, src, "toolu_2")[0]) is None  # size changed
    run(m, *read(real, src, "toolu_3"))
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same size, touched
    assert ask(m, read(real, src, "toolu_4")[0]) is None
    run(m, *read(real, src, "toolu_5"))
    m.post("Edit", "toolu_6", {"file_path": str(src)}, {}, None, stamp_of(str(src)), 1.0)
    assert ask(m, read(real, src, "toolu_7")[0]) is None  # edited through the agent's tools
    run(m, *read(real, src, "toolu_8"))
    m.compacted()
    assert ask(m, read(real, src, "toolu_9")[0]) is None


def test_a_file_that_changed_while_it_was_read_is_not_remembered(real: Any, src: Path) -> None:
    m = ReadMemory()
    pre, post = read(real, src, "toolu_1")
    m.pre_read("toolu_1", pre["tool_input"], pre["cwd"], stamp_of(str(src)))
    src.write_text("changed\n")
    m.post("Read", "toolu_1", post["tool_input"], post["tool_response"], post["cwd"], stamp_of(str(src)), 1.0)
    assert ask(m, read(real, src, "toolu_2")[0]) is None
    missing = read(real, src, "toolu_3")[0]
    missing["tool_input"]["file_path"] = str(src) + ".gone"
    assert ask(m, missing) is None  # no stamp: never


def test_memory_is_bounded(real: Any, tmp_path: Path) -> None:
    m = ReadMemory()
    files = []
    for i in range(MAX_PATHS + 10):
        f = tmp_path / f"f{i}.txt"
        f.write_text("x\n")
        files.append(f)
        run(m, *read(real, f, f"toolu_{i}"))
    assert len(m.reads) == MAX_PATHS and not m.pending
    assert ask(m, read(real, files[0], "again")[0]) is None  # forgotten: the read goes through
    assert ask(m, read(real, files[-1], "again")[0]) is not None
