"""go test (plain or ``-json``): every ``--- FAIL`` test (subtests too) with its ``file_test.go:N:``
messages, panics with the first frame in the project, build errors with file:line:col, and every
package result line that is not ``ok`` (the ``ok`` ones counted). Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import Capped, Compact, Limits, clip, tail
from outloop.runner.families.testkit import Failures, result

NAME = "go-test"
KIND = "structured"

FAIL = re.compile(r"^(\s*)--- FAIL: (\S+) \([\d.]+s\)$")
OTHER = re.compile(r"^\s*(--- (PASS|SKIP): |=== (PAUSE|CONT|NAME) )")
RUN = re.compile(r"^=== RUN\s+(\S+)$")  # -v and -json: a test's messages come before its --- FAIL line
PACKAGE = re.compile(r"^(FAIL|ok|\?)\s+(\S+)\s+(.*)$")
MESSAGE = re.compile(r"^\s+(\S+\.go:\d+: .*)$")
COMPILE = re.compile(r"^(\S+\.go:\d+(?::\d+)?): (.+)$")
PANIC = re.compile(r"^(panic: .*|fatal error: .*)$")
FRAME = re.compile(r"^\t(\S+\.go:\d+)(?: \+0x[0-9a-f]+)?$")
RUNTIME = ("/src/runtime/", "/src/testing/", "/usr/lib/go", "/usr/local/go", "/src/reflect/")


def detect(argv: list[str]) -> bool:
    """``go test ...`` (and gotestsum's ``-- ``-wrapped runs are its own format: not claimed)."""
    return len(argv) >= 2 and argv[0] == "go" and argv[1] == "test"


class _State:
    def __init__(self, limits: Limits) -> None:
        self.book = Failures(limits)
        self.packages: Capped = Capped(limits.max_failures)
        self.extra: Capped = Capped(limits.max_detail_lines)
        self.block: str | None = None
        self.panic: str | None = None  # a panic waiting for its first project frame
        self.ok = self.no_tests = 0
        self.last_package: str | None = None
        self.running: str | None = None  # the test the latest "=== RUN" started
        self.pending: dict[str, list[str]] = {}  # its messages, until its --- FAIL/PASS line


def _read(line: str, st: _State, limits: Limits) -> None:
    m = FAIL.match(line)
    if m:
        st.block = st.book.add(m.group(2))
        for p in st.pending.pop(m.group(2), []):
            st.book.detail(st.block, p)
        return
    m = RUN.match(line)
    if m:
        st.block, st.running = None, m.group(1)
        if len(st.pending) >= 256:  # bounded: drop the oldest test still waiting
            st.pending.pop(next(iter(st.pending)))
        st.pending[st.running] = []
        return
    m = OTHER.match(line)
    if m:
        st.block = None
        if m.group(2):
            st.pending.pop(line.split(": ", 1)[1].split(" ", 1)[0], None)
        return
    m = PACKAGE.match(line)
    if m:
        st.block = None
        st.last_package = line
        if m.group(1) == "ok":
            st.ok += 1
        elif m.group(1) == "?":
            st.no_tests += 1
        else:
            st.packages.add(clip(line, limits))
        return
    m = PANIC.match(line)
    if m:
        st.panic = clip(m.group(1), limits)
        if st.block is not None:
            st.book.detail(st.block, st.panic, force=True)
        else:
            st.extra.add(st.panic)
        return
    m = FRAME.match(line)
    if m and st.panic is not None:
        if not any(r in m.group(1) for r in RUNTIME):
            where = f"panicked at {m.group(1)}"
            if st.block is not None:
                st.book.detail(st.block, where, force=True)
            else:
                st.extra.add(where)
            st.panic = None
        return
    m = MESSAGE.match(line)
    if m and st.block is not None:
        st.book.detail(st.block, m.group(1))
        return
    if m and st.running is not None and st.running in st.pending:
        kept = st.pending[st.running]
        if len(kept) < limits.detail_lines:
            kept.append(m.group(1))
        return
    m = COMPILE.match(line)
    if m and st.block is None:
        st.extra.add(clip(line, limits))


def _unwrap(line: str) -> str | None:
    """A ``go test -json`` event's output text (None for events without output)."""
    if not line.startswith('{"'):
        return line
    import json

    try:
        event = json.loads(line)
    except ValueError:
        return line
    out = event.get("Output") if isinstance(event, dict) else None
    return out.rstrip("\n") if isinstance(out, str) else None


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The compact result of a go test run, or None when the output is not go test's."""
    st = _State(limits)
    last = tail(limits.tail_lines)
    n = 0
    for n, raw in enumerate(lines, 1):  # noqa: B007 - n is the count after the loop
        last.append(raw)
        line = _unwrap(raw)
        if line is not None:
            _read(line, st, limits)
    if st.last_package is None and not len(st.book):
        return None
    own = st.packages.items[-1] if st.packages.items else st.last_package
    summary = [*st.packages, *([own] if own and own not in st.packages.items else []),
               f"(go test: {st.ok} packages ok, {st.no_tests} without test files)"]
    shown = sum(len(v) + 1 for v in st.book.details.values()) + len(st.extra.items) + len(summary)
    header = f"[outloop] go test, exit {exit_code}: {n} lines; failing tests, errors and package results kept"
    finished = st.last_package is not None
    return result(NAME, header, st.book, summary, extra=st.extra.items, tail=[] if finished else list(last),
                  omitted=max(n - shown, 0), summary_line=own)
