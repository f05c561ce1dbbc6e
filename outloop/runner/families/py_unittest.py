"""Python's unittest (``python -m unittest``, Django's ``manage.py test``): every FAIL and ERROR block's
test id, its exception lines and the file:line of its last frame, a crashed run's messages, and the
``Ran N tests`` / ``OK`` / ``FAILED (...)`` summary. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import Capped, Compact, Limits, clip, tail
from outloop.runner.families.testkit import Failures, result

NAME = "unittest"
KIND = "structured"

HEAVY = re.compile(r"^={40,}$")
LIGHT = re.compile(r"^-{40,}$")
HEAD = re.compile(r"^(FAIL|ERROR|UNEXPECTED SUCCESS): (.+)$")
FRAME = re.compile(r'^\s+File "([^"]+)", line (\d+)(?:, in (.+))?$')
RAN = re.compile(r"^Ran \d+ tests? in [\d.]+s$")
VERDICT = re.compile(r"^(OK|FAILED|NO TESTS RAN)\b.*$")
CRASH = re.compile(r"^(Fatal Python error|Segmentation fault|Current thread|Thread 0x|Traceback \(most recent)")


def detect(argv: list[str]) -> bool:
    """``python -m unittest``, ``manage.py test`` (Django's runner prints unittest's format)."""
    if not argv:
        return False
    if argv[0] == "unittest":
        return True
    words = argv[1:] if argv[0].startswith("python") else argv
    return bool(words) and words[0].endswith("manage.py") and "test" in words[1:2]


class _State:
    def __init__(self, limits: Limits) -> None:
        self.book = Failures(limits)
        self.extra = Capped(limits.max_detail_lines)
        self.summary: list[str] = []
        self.block: str | None = None
        self.frame: str | None = None
        self.expect_head = False
        self.in_trace = False
        self.seen = False


def _close(st: _State) -> None:
    if st.block is not None and st.frame:
        st.book.detail(st.block, st.frame)
    st.block, st.frame, st.in_trace = None, None, False


def _read(line: str, st: _State, limits: Limits) -> None:
    if HEAVY.match(line):
        _close(st)
        st.expect_head = st.seen = True
        return
    if st.expect_head:
        st.expect_head = False
        m = HEAD.match(line)
        if m:
            st.block = st.book.add(f"{m.group(1)}: {m.group(2)}")
            return
    if RAN.match(line):
        _close(st)
        st.summary = [line]
        st.seen = True
        return
    if st.summary and len(st.summary) == 1 and VERDICT.match(line):
        st.summary.append(line)
        return
    if st.block is not None:
        _block_line(line, st)
        return
    if CRASH.match(line):
        st.extra.add(clip(line, limits))


def _block_line(line: str, st: _State) -> None:
    """A line inside a FAIL/ERROR block: frames give the location, unindented lines the exception."""
    if LIGHT.match(line) or line.startswith("Traceback (most recent"):
        st.in_trace = True
        return
    m = FRAME.match(line)
    if m:
        st.frame = f"{m.group(1)}:{m.group(2)}" + (f" in {m.group(3)}" if m.group(3) else "")
        return
    if line and not line[0].isspace():
        st.book.detail(st.block, line)  # type: ignore[arg-type]


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The compact result of a unittest run, or None when the output is not unittest's."""
    st = _State(limits)
    last = tail(limits.tail_lines)
    n = 0
    for n, line in enumerate(lines, 1):  # noqa: B007 - n is the count after the loop
        last.append(line)
        _read(line, st, limits)
    _close(st)
    if not (st.seen or len(st.book)):
        return None
    shown = sum(len(v) + 1 for v in st.book.details.values()) + len(st.extra.items) + len(st.summary)
    header = f"[outloop] unittest, exit {exit_code}: {n} lines; failing tests, errors and the summary kept"
    finished = bool(st.summary)
    return result(NAME, header, st.book, st.summary, extra=st.extra.items, tail=[] if finished else list(last),
                  omitted=max(n - shown, 0), summary_line="; ".join(st.summary) or None)
