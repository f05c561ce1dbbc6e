"""JavaScript test runners through npm/yarn/pnpm/bun or directly: jest, vitest and mocha (spec reporter).
Every failing test with its message lines and file:line, suites that failed to run, and the runner's
own summary lines (jest ``Tests:``, vitest ``Tests``, mocha ``N passing`` / ``N failing``). Returns None
for output in none of these formats (``npm test`` may run anything). Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import Capped, Compact, Limits, clip, tail
from outloop.runner.families.testkit import Failures, result

NAME = "js-test"
KIND = "structured"

RUNNERS = ("jest", "vitest", "mocha", "_mocha", "ava", "tap")
MANAGERS = ("npm", "yarn", "pnpm", "bun")
# jest
JEST_SUITE = re.compile(r"^\s*FAIL\s+(\S+)")
JEST_BLOCK = re.compile(r"^\s+● (.+)$")
JEST_SUMMARY = re.compile(r"^(Tests|Test Suites):\s+.*\btotal$")
# vitest
VITEST_FAIL = re.compile(r"^ FAIL\s+(\S+ (?:>|\[) .+)$")  # "FAIL  a.test.js > suite > test" (jest: a path)
VITEST_SUMMARY = re.compile(r"^\s+(Test Files|Tests)\s+(.*\(\d+\)|no tests)$")
VITEST_AT = re.compile(r"^\s*❯ (\S+:\d+:\d+)$")
# mocha
MOCHA_COUNT = re.compile(r"^\s+\d+ (passing|failing|pending)( \(.*\))?$")
MOCHA_BLOCK = re.compile(r"^  (\d+)\) (.+)$")
# common
AT = re.compile(r"^\s+at .*?\(?((?:\.{0,2}/)?[\w./@-]+\.[cm]?[jt]sx?:\d+:\d+)\)?$")
ERRORISH = re.compile(r"^\s*(\w*Error\b.*|Error: .*|Exception during run: .*|No tests found.*|"
                      r"Cannot find module .*|SyntaxError: .*)$")
CODE_FRAME = re.compile(r"^\s*>?\s*\d+\s*\|")


def detect(argv: list[str]) -> bool:
    """jest, vitest, mocha run directly, or ``npm test`` / ``npm run test...`` / ``yarn test`` /
    ``pnpm test`` / ``bun run test`` (the script's output decides whether it is one of them)."""
    if not argv:
        return False
    if argv[0] in RUNNERS:
        return True
    if argv[0] not in MANAGERS:
        return False
    words = [w for w in argv[1:] if not w.startswith("-")]
    if words[:1] in (["test"], ["t"], ["tst"]):
        return True
    return len(words) >= 2 and words[0] in ("run", "run-script") and words[1].startswith("test")


class _State:
    def __init__(self, limits: Limits) -> None:
        self.book = Failures(limits)
        self.summary: Capped = Capped(8)
        self.extra: Capped = Capped(limits.max_detail_lines)
        self.block: str | None = None
        self.mocha_title: str | None = None  # "1) suite" waiting for its test name line
        self.in_frame = False
        self.seen = False
        self.crash_at = False


def _read(line: str, st: _State, limits: Limits) -> None:
    if JEST_SUMMARY.match(line) or VITEST_SUMMARY.match(line) or MOCHA_COUNT.match(line):
        st.summary.add(line.strip())
        st.block, st.seen = None, True
        return
    m = JEST_BLOCK.match(line)
    if m:
        st.block, st.seen = st.book.add(m.group(1)), True
        return
    m = VITEST_FAIL.match(line)
    if m:
        st.block, st.seen = st.book.add(m.group(1)), True
        return
    m = MOCHA_BLOCK.match(line)
    if m and st.summary.items:  # mocha's numbered failure blocks come after its counts
        st.block = None
        st.mocha_title = m.group(2)
        return
    if st.mocha_title is not None:
        name = line.strip().rstrip(":")
        st.block = st.book.add(f"{st.mocha_title} {name}")
        st.mocha_title = None
        return
    if st.block is not None:
        _block_line(line, st, limits)
        return
    m = JEST_SUITE.match(line)
    if m:
        st.seen = True
        return
    m = AT.match(line)
    if m and st.extra.items and not st.crash_at and "node_modules" not in m.group(1):
        st.crash_at = True  # the first frame in the project under a crash message outside any test
        st.extra.add(f"at {m.group(1)}")
        return
    if ERRORISH.match(line):
        st.extra.add(clip(line.strip(), limits))
        st.seen = st.seen or line.lstrip().startswith(("Exception during run", "No tests found"))


def _block_line(line: str, st: _State, limits: Limits) -> None:
    """Inside a failure: message lines until the code frame, then the first ``at``/``❯`` location."""
    fid = st.block
    assert fid is not None
    m = AT.match(line) or VITEST_AT.match(line)
    if m:
        if not any(d.startswith("at ") for d in st.book.details.get(fid, [])):
            st.book.detail(fid, f"at {m.group(1)}")
        return
    if CODE_FRAME.match(line) or line.strip().startswith(("at ", "⎯")):
        st.in_frame = True
        return
    if not line.strip():
        return
    if ERRORISH.match(line):
        st.book.detail(fid, line, force=True)
    elif not st.in_frame:
        st.book.detail(fid, line)


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The compact result of a jest, vitest or mocha run, or None when the output is none of them."""
    st = _State(limits)
    last = tail(limits.tail_lines)
    n = 0
    for n, line in enumerate(lines, 1):  # noqa: B007 - n is the count after the loop
        last.append(line)
        if st.block is not None and (JEST_BLOCK.match(line) or VITEST_FAIL.match(line)):
            st.in_frame = False
        prev = st.block
        _read(line, st, limits)
        if st.block != prev:
            st.in_frame = False
    if not st.seen and not len(st.book):
        return None
    summary = list(st.summary)
    shown = sum(len(v) + 1 for v in st.book.details.values()) + len(st.extra.items) + len(summary)
    header = f"[outloop] js tests, exit {exit_code}: {n} lines; failing tests, errors and the summary kept"
    tests_line = next((s for s in summary if s.startswith("Tests")), summary[-1] if summary else None)
    return result(NAME, header, st.book, summary, extra=st.extra.items, tail=[] if summary else list(last),
                  omitted=max(n - shown, 0), summary_line=tests_line)
