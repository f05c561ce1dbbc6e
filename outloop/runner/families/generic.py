"""The generic summariser, for any command no structured family claims: the first and last lines, every
line that looks like an error or a warning (with its line number in the log, repeats counted once), and
counts of what was left out. Stdlib only; bounded memory whatever the output's size.

Two ways in, one result: ``summarise`` reads lines (the families' contract), ``summarise_log`` reads the
log file itself in large blocks and looks at a line only where a problem word occurs, which keeps a
gigabyte of output to seconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from outloop.runner.families.base import GENERIC, Capped, Compact, Limits, clip, join, more_failures_note, tail

NAME = "generic"
KIND = GENERIC

# A line that reports a problem: error/warning words, a traceback, a panic, a crash, a failed assertion.
PROBLEM = re.compile(
    r"\b(error|errors|fatal|failed|failure|failures|fail|exception|traceback|panic(ked)?|warning|warn|"
    r"segmentation fault|core dumped|abort(ed)?|assert(ion)?(error)?|denied|cannot|can't|could not|"
    r"unable to|not found|no such file|undefined|unresolved|killed|timed? ?out)\b",
    re.IGNORECASE,
)
# The same words in lower-cased raw bytes (escape sequences may sit right before a word): a first pass
# with bytes.find, which scans a gigabyte many times faster than an alternation regex does.
STEMS = (b"error", b"fatal", b"fail", b"exception", b"traceback", b"panic", b"warn", b"segmentation",
         b"core dumped", b"abort", b"assert", b"denied", b"cannot", b"can't", b"could not", b"unable to",
         b"not found", b"no such file", b"undefined", b"unresolved", b"killed", b"time out", b"timeout",
         b"timed out")
WARNING = re.compile(r"\bwarn(ing)?s?\b", re.IGNORECASE)
# file:line (and optional column) where a message points, e.g. "src/a.c:12:5: error: ..."
LOCATION = re.compile(r"(?:^|[\s(\"'])((?:[\w.~+-]+/)*[\w.+-]+\.[A-Za-z0-9]{1,8}):(\d+)(?::\d+)?")
# Lines that mention a problem word only to say there is none ("0 errors", "no warnings").
NONE_FOUND = re.compile(r"\b(0|no|zero|without) (errors?|warnings?|failures?|failed)\b", re.IGNORECASE)
BLOCK = 1 << 20
MAX_LINE_BYTES = 64 * 1024


def detect(argv: list[str]) -> bool:
    """The generic summariser accepts every command."""
    return True


def is_problem(line: str) -> bool:
    """Whether ``line`` looks like an error or a warning worth keeping."""
    return bool(PROBLEM.search(line)) and not NONE_FOUND.search(line)


def location(line: str) -> str | None:
    """The first ``file:line`` a line points at, or None."""
    m = LOCATION.search(line)
    return f"{m.group(1)}:{m.group(2)}" if m else None


class Problems:
    """The problem lines between the first and the last lines: distinct ones kept (capped), repeats and
    the rest counted."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.kept = Capped(limits.max_failures)
        self.numbers: list[int] = []
        self.seen: dict[str, int] = {}
        self.repeats: dict[int, int] = {}
        self.locations = Capped(limits.max_failures)
        self.errors = self.warnings = 0
        self.stopped_at: int | None = None  # the line from which on the search ran out of time

    def add(self, number: int, line: str) -> None:
        if WARNING.search(line):
            self.warnings += 1
        else:
            self.errors += 1
        key = line.strip()
        if key in self.seen:
            i = self.seen[key]
            self.repeats[i] = self.repeats.get(i, 0) + 1
            return
        if len(self.kept.items) < self.kept.cap:
            self.seen[key] = len(self.kept.items)
            self.numbers.append(number)
        self.kept.add(f"{number}: {clip(line, self.limits)}")
        loc = location(line)
        if loc:
            self.locations.add(loc)


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact:
    """First ``head_lines`` and last ``tail_lines`` lines, and the problem lines between them."""
    head: list[str] = []
    last = tail(limits.tail_lines)
    problems = Problems(limits)
    n = 0
    for n, line in enumerate(lines, 1):  # noqa: B007 - n is the count after the loop
        if len(head) < limits.head_lines:
            head.append(line)
            continue
        last.append(line)
        if is_problem(line):
            problems.add(n, line)
    return render(n, head, list(last), problems, exit_code)


def summarise_log(path: str, exit_code: int, limits: Limits, budget: float | None = None) -> Compact:
    """The same result as ``summarise`` on the log's lines, reading the file in 1 MiB blocks and
    decoding only the first lines, the lines where a problem word occurs, and the last lines. With a
    ``budget`` (seconds), the search for problem lines stops when it is spent and the text says from
    which line on the log was not searched (the line count and the last lines stay exact)."""
    import time

    from outloop.runner.compact import clean

    head: list[str] = []
    problems = Problems(limits)
    n = 0  # complete lines before the current block
    deadline = None if budget is None else time.monotonic() + budget
    with open(path, "rb") as f:
        carry = b""
        while True:
            if deadline is not None and problems.stopped_at is None and time.monotonic() > deadline:
                problems.stopped_at = n + 1
            data = f.read(BLOCK)
            block = carry + data
            if not block:
                break
            cut = block.rfind(b"\n") + 1 if data else len(block)
            if cut == 0:  # no line end yet: wait for one, unless the line is already too long
                if len(block) < MAX_LINE_BYTES:
                    carry = block
                    continue
                cut = len(block)
            body, carry = block[:cut], block[cut:]
            need = limits.head_lines - len(head)
            if need > 0:
                in_body = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
                head += [clean(x[:MAX_LINE_BYTES].decode("utf-8", "replace"))
                         for x in body.split(b"\n", need)[:min(need, in_body)]]
            if problems.stopped_at is None:
                _scan(body, n, limits.head_lines, problems, clean)
            n += body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
            if not data:
                break
    last = _last_lines(path, min(limits.tail_lines, max(n - len(head), 0)))
    return render(n, head, last, problems, exit_code)


def _scan(body: bytes, base: int, skip: int, problems: Problems, clean: object) -> None:
    """Add the problem lines of one block (lines numbered from ``base + 1``; the first ``skip`` lines
    of the log are the head and not counted as problems)."""
    counted_to, line_no, last_start = 0, base, -1
    for pos in _candidates(body):
        start = body.rfind(b"\n", 0, pos) + 1
        if start == last_start:
            continue
        last_start = start
        line_no += body.count(b"\n", counted_to, start)
        counted_to = start
        if line_no + 1 <= skip:
            continue
        end = body.find(b"\n", pos)
        raw = body[start:end if end >= 0 else len(body)][:MAX_LINE_BYTES]
        line = clean(raw.decode("utf-8", "replace"))  # type: ignore[operator]
        if is_problem(line):
            problems.add(line_no + 1, line)


def _candidates(body: bytes) -> list[int]:
    """Where a problem word starts in ``body`` (sorted), from one ``find`` pass per stem; a line with
    many hits is looked at once, and hits past the first few thousand on a line are not collected."""
    low = body.lower()
    hits: list[int] = []
    for stem in STEMS:
        i = low.find(stem)
        while i >= 0:
            hits.append(i)
            nl = low.find(b"\n", i)
            if nl < 0:
                break
            i = low.find(stem, nl)
    hits.sort()
    return hits


def _last_lines(path: str, count: int) -> list[str]:
    """The log's last ``count`` lines, read from its end."""
    from outloop.runner.compact import clean

    if count <= 0:
        return []
    size = os.path.getsize(path)
    want = min(size, count * 4096 + 4096)
    with open(path, "rb") as f:
        f.seek(size - want)
        data = f.read(want)
    parts = data.split(b"\n")
    if data.endswith(b"\n"):
        parts.pop()
    if want < size:
        parts = parts[1:]  # the first piece may be the end of a longer line
    return [clean(p[:MAX_LINE_BYTES].decode("utf-8", "replace")) for p in parts[-count:]]


def render(n: int, head: list[str], last: list[str], problems: Problems, exit_code: int) -> Compact:
    """The compact text of a generic summary (problems in the last lines are shown there, not twice)."""
    tail_start = n - len(last) + 1  # line number of the first tail line
    shown = [f"{p} (x{problems.repeats[i] + 1})" if i in problems.repeats else p
             for i, (p, num) in enumerate(zip(problems.kept.items, problems.numbers, strict=False))
             if num < tail_start]
    middle = max(tail_start - len(head) - 1, 0)
    omitted = max(middle - len(shown), 0)
    header = (f"[outloop] {n} lines, exit {exit_code}: the first {len(head)}, the last {len(last)}, and "
              f"{len(shown)} error/warning lines of the {middle} between (numbered as in the log)")
    block = None
    if shown:
        block = [f"--- {problems.errors} error and {problems.warnings} warning lines between "
                 f"({len(problems.kept)} distinct) ---", *shown]
    if problems.kept.dropped:
        block = [*(block or []), more_failures_note(problems.kept.dropped, "grep the log")]
    if problems.stopped_at is not None:
        block = [*(block or []), f"... lines from {problems.stopped_at} on were not searched for errors (out of "
                 "time; OUTLOOP_RUN_SCAN_SECONDS): grep -n -i -E 'error|fail|warn' the log"]
    cut = [clip(x, problems.limits) for x in head], [clip(x, problems.limits) for x in last]
    text = join([header], cut[0], block, [f"--- {omitted} lines left out; the last {len(last)} ---"] if last else None,
                cut[1])
    return Compact(family=NAME, kind=KIND, text=text, failures=list(problems.locations.items), summary_line=None,
                   omitted_lines=omitted)
