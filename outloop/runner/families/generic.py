"""The generic summariser, for any command no structured family claims: the first and last lines, every
line that looks like an error or a warning (with its line number in the log), and counts of what was
left out. Stdlib only; bounded memory whatever the output's size."""

from __future__ import annotations

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
WARNING = re.compile(r"\bwarn(ing)?s?\b", re.IGNORECASE)
# file:line (and optional column) where a message points, e.g. "src/a.c:12:5: error: ..."
LOCATION = re.compile(r"(?:^|[\s(\"'])((?:[\w.~+-]+/)*[\w.+-]+\.[A-Za-z0-9]{1,8}):(\d+)(?::\d+)?")
# Lines that mention a problem word only to say there is none ("0 errors", "no warnings").
NONE_FOUND = re.compile(r"\b(0|no|zero|without) (errors?|warnings?|failures?|failed)\b", re.IGNORECASE)


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


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact:
    """First ``head_lines`` and last ``tail_lines`` lines, and the problem lines between them (repeats of
    the same line counted once), with how many lines each part leaves out."""
    head: list[str] = []
    last = tail(limits.tail_lines)
    problems = Capped(limits.max_failures)
    seen: dict[str, int] = {}  # problem line -> index in problems.items (repeats counted, not kept)
    repeats: dict[int, int] = {}
    locations = Capped(limits.max_failures)
    n = errors = warnings = 0
    for n, line in enumerate(lines, 1):  # noqa: B007 - n is the count after the loop
        if len(head) < limits.head_lines:
            head.append(line)
            continue
        last.append(line)
        if not is_problem(line):
            continue
        if WARNING.search(line):
            warnings += 1
        else:
            errors += 1
        key = line.strip()
        if key in seen:
            repeats[seen[key]] = repeats.get(seen[key], 0) + 1
            continue
        if len(problems.items) < problems.cap:
            seen[key] = len(problems.items)
        problems.add(f"{n}: {clip(line, limits)}")
        loc = location(line)
        if loc:
            locations.add(loc)
    return _render(n, head, list(last), problems, repeats, errors, warnings, locations, exit_code)


def _render(n: int, head: list[str], last: list[str], problems: Capped, repeats: dict[int, int],
            errors: int, warnings: int, locations: Capped, exit_code: int) -> Compact:
    """The compact text of a generic summary (problems in the tail are shown there, not twice)."""
    tail_start = n - len(last) + 1  # line number of the first tail line
    shown = [f"{p} (x{repeats[i] + 1})" if i in repeats else p
             for i, p in enumerate(problems.items) if int(p.split(":", 1)[0]) < tail_start]
    middle = max(tail_start - len(head) - 1, 0)
    omitted = max(middle - len(shown) - sum(repeats.values()), 0)
    header = (f"[outloop] {n} lines, exit {exit_code}: first {len(head)}, {len(shown)} error/warning lines "
              f"of the {middle} between (line numbers of the log), last {len(last)}; {omitted} lines left out")
    problem_block = [f"--- {errors} error and {warnings} warning lines between first and last "
                     f"({len(problems)} distinct) ---", *shown] if shown else None
    if problems.dropped:
        problem_block = [*(problem_block or []), more_failures_note(problems.dropped, "grep the log")]
    text = join([header], head, problem_block, [f"--- last {len(last)} lines ---"] if last else None, last)
    return Compact(family=NAME, kind=KIND, text=text, failures=list(locations), summary_line=None,
                   omitted_lines=omitted)
