"""pytest: every failing and erroring test id (from the short test summary, else from the failure blocks),
under each its failing source line, its ``E`` lines and its file:line; collection errors; an interrupted
or crashed run's messages; and pytest's own summary line. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import Capped, Compact, Limits, clip, tail
from outloop.runner.families.testkit import Failures, result

NAME = "pytest"
KIND = "structured"

SECTION = re.compile(r"^={3,} (.+?) ={3,}$")
BLOCK = re.compile(r"^_{3,} (.+?) _{3,}$")
SHORT = re.compile(r"^(FAILED|ERROR|XPASS|XPASS\(strict\)) (\S+(?:\[[^\]]*\])?)(?: - (.*))?$")
_COUNT = r"\d+ (?:failed|passed|errors?|skipped|deselected|xfailed|xpassed|warnings?|rerun|subtests? \w+)"
SUMMARY = re.compile(rf"^(?:=+ )?((?:{_COUNT}(?:, )?)+ in [\d.]+s.*?|no tests ran in [\d.]+s.*?)(?: =+)?$")
LOCATION = re.compile(r"^(\S+?):(\d+): (?:in \S+|\w[\w.]*)$")
# a -v progress line of a failed test: the only place its id appears when no summary is printed (-rN, --tb=no)
VERBOSE = re.compile(r"^(\S+::\S+) (FAILED|ERROR)(?: +\[ *\d+%\])?$")
BANG = re.compile(r"^!{3,} (.+?) !{3,}$")
CRASH = re.compile(r"^(Fatal Python error|Segmentation fault|Current thread|Thread 0x|\+{3,} Timeout|"
                   r"Timeout \(|INTERNALERROR|ImportError while loading conftest|Traceback \(most recent)")
FRAME = re.compile(r'^\s+File "[^"]+", line \d+')
_PREFIXES = ("ERROR at setup of ", "ERROR at teardown of ", "ERROR at call of ", "ERROR collecting ")


def detect(argv: list[str]) -> bool:
    """``pytest``/``py.test`` (also through ``python -m``, ``uv run``...)."""
    return bool(argv) and argv[0] in ("pytest", "py.test", "pytest-3")


def block_key(title_or_id: str) -> str:
    """The key a failure block and a short-summary id share: ``test_a.py::TestX::test_y[1]`` and the
    block title ``TestX.test_y[1]`` both give ``TestX.test_y[1]``; a collection error is its path."""
    for p in _PREFIXES:
        if title_or_id.startswith(p):
            title_or_id = title_or_id[len(p):]
    if "::" in title_or_id:
        return title_or_id.split("::", 1)[1].replace("::", ".")
    return title_or_id


class _State:
    """What the summariser keeps while it reads (all of it bounded by ``limits``)."""

    def __init__(self, limits: Limits) -> None:
        self.blocks = Failures(limits)  # keyed by block title
        self.short: Capped = Capped(limits.max_failures)  # "FAILED id - message" lines, verbatim
        self.short_ids: list[str] = []
        self.progress: Capped = Capped(limits.max_failures)  # "id FAILED" -v lines, as "FAILED id"
        self.extra: Capped = Capped(limits.max_detail_lines)
        self.summary: str | None = None
        self.seen_pytest = False
        self.section = ""
        self.block: str | None = None
        self.block_loc: str | None = None
        self.crash_lines = 0


def _end_block(st: _State) -> None:
    if st.block is not None and st.block_loc:
        st.blocks.detail(st.block, st.block_loc)
    st.block, st.block_loc = None, None


def _read(line: str, st: _State, limits: Limits) -> None:
    m = VERBOSE.match(line)
    if m:
        st.seen_pytest = True
        st.progress.add(f"{m.group(2)} {m.group(1)}")
        return
    m = SECTION.match(line)
    if m and not SUMMARY.match(line):
        _end_block(st)
        st.section = m.group(1)
        st.seen_pytest = True
        return
    m = SUMMARY.match(line)
    if m:
        _end_block(st)
        st.summary = m.group(1)
        st.seen_pytest = True
        return
    if st.section in ("FAILURES", "ERRORS"):
        m = BLOCK.match(line)
        if m:
            _end_block(st)
            st.block = st.blocks.add(block_key(m.group(1)))
            return
        if st.block is None:
            return
        if line.startswith(("E ", ">")):
            st.blocks.detail(st.block, line)
        elif LOCATION.match(line):
            st.block_loc = line
        return
    if st.section == "short test summary info":
        m = SHORT.match(line)
        if m:
            st.short.add(clip(line, limits))
            if len(st.short_ids) < limits.max_failures:
                st.short_ids.append(m.group(2))
            return
    m = BANG.match(line)
    if m:
        st.extra.add(m.group(1))
        return
    if CRASH.match(line) or (st.crash_lines and FRAME.match(line)):
        st.crash_lines += 1
        st.extra.add(clip(line, limits))


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The compact result of a pytest run, or None when the output is not pytest's."""
    st = _State(limits)
    last = tail(limits.tail_lines)
    n = 0
    for n, line in enumerate(lines, 1):  # noqa: B007 - n is the count after the loop
        last.append(line)
        _read(line, st, limits)
    _end_block(st)
    if not (st.seen_pytest or st.short.items or len(st.blocks)):
        return None
    book = _by_short_summary(st, limits) if st.short_ids else st.blocks
    if not st.short_ids:  # no short summary: the -v lines name failures that may have no block
        for entry in st.progress.items:
            if block_key(entry.split(" ", 1)[1]) not in book:
                book.add(entry)
    shown = sum(len(v) + 1 for v in book.details.values()) + len(st.extra.items) + 2
    header = f"[outloop] pytest, exit {exit_code}: {n} lines; failing tests, errors and the summary line kept"
    compact = result(NAME, header, book, [st.summary] if st.summary else [], extra=st.extra.items,
                     tail=[] if st.summary else list(last), omitted=max(n - shown, 0), summary_line=st.summary)
    if st.short_ids:
        compact.failures = list(st.short_ids)
    return compact


def _by_short_summary(st: _State, limits: Limits) -> Failures:
    """The failures as the short test summary lists them (``FAILED id - message``), each with the
    detail of its failure block."""
    book = Failures(limits)
    for entry, fid in zip(st.short.items, st.short_ids, strict=False):
        key = book.add(entry)
        for d in st.blocks.details.get(block_key(fid), []):
            book.detail(key, d)
    book.dropped += st.short.dropped
    return book
