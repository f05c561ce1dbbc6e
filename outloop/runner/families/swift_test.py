"""swift test: XCTest failures (Linux ``Suite.test`` and macOS ``-[Module.Suite test]`` names) with their
``file:line: error:`` messages, Swift Testing issues, fatal errors and crashes of the test process,
compile errors, and the ``Executed N tests`` / ``Test run with N tests`` summaries. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import Capped, Compact, Limits, clip, tail
from outloop.runner.families.testkit import Failures, result

NAME = "swift-test"
KIND = "structured"

CASE = re.compile(r"^Test Case '(.+?)' (started|passed|failed|skipped)")
XC_ERROR = re.compile(r"^(\S+:\d+): error: (.+?) : (.+)$")
ST_ISSUE = re.compile(r"^\S+ Test (.+?) recorded an issue at (\S+:\d+(?::\d+)?): (.+)$")
ST_FAILED = re.compile(r"^\S+ Test (?!run with)(.+?) failed after ")
ST_RUN = re.compile(r"^\S+ Test run with \d+ tests? (passed|failed) after .*$")
EXECUTED = re.compile(r"^\s+Executed \d+ tests?, with \d+ failures? .*$")
ALL_TESTS = re.compile(r"^Test Suite 'All tests' (passed|failed)")
COMPILE = re.compile(r"^(\S+\.swift:\d+:\d+): error: (.+)$")
FATAL = re.compile(r"^(\S+:\d+: Fatal error: .*|Fatal error: .*|error: .+|\*\*\* Signal \d+: .*)$")


def detect(argv: list[str]) -> bool:
    """``swift test`` (``swift build`` is the build families')."""
    return len(argv) >= 2 and argv[0] == "swift" and argv[1] == "test"


def test_id(name: str) -> str:
    """``-[Module.Suite testX]`` (macOS) as ``Module.Suite.testX``; Linux names are kept."""
    if name.startswith("-[") and name.endswith("]") and " " in name:
        cls, meth = name[2:-1].split(" ", 1)
        return f"{cls}.{meth}"
    return name


class _State:
    def __init__(self, limits: Limits) -> None:
        self.book = Failures(limits)
        self.extra: Capped = Capped(limits.max_detail_lines)
        self.summary: list[str | None] = [None, None, None]
        self.current: str | None = None  # the XCTest case that is running
        self.seen = False


def _read(line: str, st: _State, limits: Limits) -> None:
    m = CASE.match(line)
    if m:
        st.seen = True
        st.current = test_id(m.group(1)) if m.group(2) == "started" else None
        if m.group(2) == "failed":
            st.book.add(test_id(m.group(1)))
        return
    m = XC_ERROR.match(line)
    if m:
        fid = st.book.add(test_id(m.group(2)))
        st.book.detail(fid, f"{m.group(1)}: {m.group(3)}", force=True)
        return
    m = ST_ISSUE.match(line)
    if m:
        st.seen = True
        fid = st.book.add(m.group(1))
        st.book.detail(fid, f"{m.group(2)}: {m.group(3)}", force=True)
        return
    m = ST_FAILED.match(line)
    if m:
        if not m.group(1).startswith("Suite "):
            st.book.add(m.group(1))
        return
    for i, pattern in enumerate((ALL_TESTS, EXECUTED, ST_RUN)):
        if pattern.match(line):  # the last of each: the "All tests" suite, its counts, the Swift Testing run
            st.seen = True
            st.summary[i] = line.strip()
            return
    m = COMPILE.match(line)
    if m:
        st.seen = True
        st.extra.add(clip(line, limits))
        return
    m = FATAL.match(line)
    if m:
        st.seen = True
        if st.current is not None:  # a crash inside a running case fails it
            fid = st.book.add(st.current)
            st.book.detail(fid, line, force=True)
        else:
            st.extra.add(clip(line, limits))


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The compact result of a swift test run, or None when the output is not swift test's."""
    st = _State(limits)
    last = tail(limits.tail_lines)
    n = 0
    for n, line in enumerate(lines, 1):  # noqa: B007 - n is the count after the loop
        last.append(line)
        _read(line, st, limits)
    if not st.seen:
        return None
    summary = [s for s in st.summary if s]
    shown = sum(len(v) + 1 for v in st.book.details.values()) + len(st.extra.items) + len(summary)
    header = f"[outloop] swift test, exit {exit_code}: {n} lines; failing tests, errors and the summary kept"
    own = st.summary[2] or st.summary[1]
    return result(NAME, header, st.book, summary, extra=st.extra.items,
                  tail=[] if summary else list(last), omitted=max(n - shown, 0), summary_line=own)
