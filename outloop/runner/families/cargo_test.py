"""cargo test (and cargo nextest's plain output where it matches): every FAILED test with its panic
location and message, compile errors with their ``-->`` location, a test binary that crashed (signal,
abort), and every ``test result:`` line. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import Capped, Compact, Limits, clip, tail
from outloop.runner.families.testkit import Failures, result

NAME = "cargo-test"
KIND = "structured"

TEST = re.compile(r"^test (\S+) \.\.\. (FAILED|ok|ignored.*|bench.*)$")
BLOCK = re.compile(r"^---- (\S+) stdout ----$")
PANIC = re.compile(r"^thread '[^']*'(?: \(\d+\))? panicked at (\S+?):?$")
OLD_PANIC = re.compile(r"^thread '[^']*' panicked at '(.*)', (\S+)$")  # rustc before 1.73
RESULT = re.compile(r"^test result: (ok|FAILED)\..*$")
RUNNING = re.compile(r"^\s+(Running|Doc-tests) (.+)$")
ERROR = re.compile(r"^error(\[E\d+\])?: (.+)$")
ARROW = re.compile(r"^\s*--> (\S+:\d+(?::\d+)?)$")
CAUSED = re.compile(r"^\s+(process didn't exit successfully: .*)$")
WARNING = re.compile(r"^warning(\[\w+\])?: ")


def detect(argv: list[str]) -> bool:
    """``cargo test`` / ``cargo nextest run`` (options may come before the subcommand: ``cargo +nightly
    test``)."""
    if not argv or argv[0] != "cargo":
        return False
    words = [w for w in argv[1:] if not w.startswith(("+", "-"))]
    return bool(words) and (words[0] in ("test", "t") or words[:2] == ["nextest", "run"])


class _State:
    def __init__(self, limits: Limits) -> None:
        self.book = Failures(limits)
        self.results: Capped = Capped(limits.max_failures)
        self.extra: Capped = Capped(limits.max_detail_lines)
        self.block: str | None = None
        self.block_msg = 0  # message lines taken after the panic line
        self.error: str | None = None  # a compile error waiting for its --> line
        self.binary = ""
        self.warnings = 0
        self.seen = False
        self.list_ids = False


def _read(line: str, st: _State, limits: Limits) -> None:
    m = TEST.match(line)
    if m:
        st.seen = True
        if m.group(2) == "FAILED":
            st.book.add(m.group(1))
        return
    m = BLOCK.match(line)
    if m:
        st.block, st.block_msg, st.list_ids = st.book.add(m.group(1)), 0, False
        return
    if RESULT.match(line):
        st.seen, st.block, st.list_ids = True, None, False
        st.results.add(f"{line}  [{st.binary}]" if st.binary else line)
        return
    m = RUNNING.match(line)
    if m:
        st.binary = m.group(2).split(" (", 1)[0]  # "unittests src/lib.rs (target/debug/deps/x-hash)"
        return
    if line == "failures:":
        st.block, st.list_ids = None, True
        return
    if st.list_ids and line.startswith("    ") and line.strip():
        st.book.add(line.strip())
        return
    if st.block is not None:
        _block_line(line, st)
        return
    _other_line(line, st, limits)


def _block_line(line: str, st: _State) -> None:
    """A line of a failing test's captured output: the panic location, then its message."""
    m = PANIC.match(line)
    if m:
        st.book.detail(st.block, f"panicked at {m.group(1)}")  # type: ignore[arg-type]
        st.block_msg = 1
        return
    m = OLD_PANIC.match(line)
    if m:
        st.book.detail(st.block, f"panicked at {m.group(2)}: {m.group(1)}")  # type: ignore[arg-type]
        return
    if st.block_msg:
        if not line.strip() or line.startswith(("stack backtrace:", "note: ")):
            st.block_msg = 0
        else:
            st.book.detail(st.block, line)  # type: ignore[arg-type]


def _other_line(line: str, st: _State, limits: Limits) -> None:
    """Compile errors (with the ``-->`` line that follows), crashes, cargo's own errors."""
    m = ARROW.match(line)
    if m and st.error:
        st.extra.add(f"{st.error} at {m.group(1)}")
        st.error = None
        return
    m = ERROR.match(line)
    if m:
        if st.error:
            st.extra.add(st.error)
        st.error = clip(line, limits)
        st.seen = True
        return
    m = CAUSED.match(line)
    if m:
        st.extra.add(clip(m.group(1), limits))
    elif WARNING.match(line):
        st.warnings += 1


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The compact result of a cargo test run, or None when the output is not cargo's."""
    st = _State(limits)
    last = tail(limits.tail_lines)
    n = 0
    for n, line in enumerate(lines, 1):  # noqa: B007 - n is the count after the loop
        last.append(line)
        _read(line, st, limits)
    if st.error:
        st.extra.add(st.error)
    if not st.seen:
        return None
    results = list(st.results.items)  # not list(Capped): it would size itself by every result seen
    failed = [r for r in results if r.startswith("test result: FAILED")]
    summary = failed[-1] if failed else (results[-1] if results else None)
    summary = summary.split("  [", 1)[0] if summary else None  # cargo's line, without the binary's name
    if st.warnings:
        st.extra.add(f"({st.warnings} compiler warnings: grep -n '^warning' the log)")
    shown = sum(len(v) + 1 for v in st.book.details.values()) + len(st.extra.items) + len(results)
    header = f"[outloop] cargo test, exit {exit_code}: {n} lines; failing tests, errors and results kept"
    finished = bool(results) or bool(st.extra.items)
    return result(NAME, header, st.book, results, extra=st.extra.items, tail=[] if finished else list(last),
                  omitted=max(n - shown, 0), summary_line=summary)
