"""What the build, compiler, linter, installer and git families share: a bounded report of diagnostics
(errors with their ``file:line`` and message, warnings, the tool's summary line, a few kept facts) and
its rendering into the compact text, plus the reading of compiler-style lines
(``path:line:col: error: message``, as gcc, clang, swift and many tools print them). Stdlib only.

A family reads each line once, classifies it, and tells the report what to keep; everything else is
counted as left out. Memory is bounded by ``Limits.max_failures`` errors and ``MAX_WARNINGS`` warnings
whatever the output's size. A family whose tool failed (exit code not 0) but whose report holds no error
returns ``None`` (:meth:`Report.compact`), so the runner falls back to the generic summariser instead of
printing a summary that would hide why the command failed.
"""

from __future__ import annotations

import re
from collections import deque

from outloop.runner.families.base import STRUCTURED, Capped, Compact, Limits, clip, join, more_failures_note

MAX_WARNINGS = 50  # warnings listed one line each; past this they are counted (the log has them all)
MAX_FACTS = 40  # other kept lines (branch, installed packages, failing targets...)

# path:line[:col]: severity: message (gcc, clang, swift, ld with -g, many linters)
CC_DIAG = re.compile(
    r"^(?P<file>[^\s:][^:]*?):(?P<line>\d+)(?::(?P<col>\d+))?:\s*"
    r"(?P<sev>fatal error|error|warning|note|remark)(?P<rest>(?:\[[^\]]*\])?:.*)$"
)
LOCATION_PREFIX = re.compile(r"^([^\s:][^:]*?):(\d+):")
# error lines without a severity word or a location: "gcc: error: x.c: No such file",
# "collect2: error: ld returned 1 exit status", "/usr/bin/ld: main.c:(.text+0x9): undefined reference to `f'",
# "clang: error: linker command failed"
CC_UNLOCATED = re.compile(
    r"(^|\s)(fatal error|error):|undefined reference to|multiple definition of|cannot find -l|"
    r"ld returned \d+ exit status|linker command failed|Undefined symbols for architecture|symbol\(s\) not found",
)
# Lines a family did not classify that still look like a failure: kept so that no failure is dropped.
OTHER_PROBLEM = re.compile(
    r"\b(error|errors|fatal|failed|failure|panic(ked)?|exception|traceback|segmentation fault|core dumped|"
    r"killed|cannot|can't|could not|unable to|not found|no such file|permission denied|aborted)\b",
    re.IGNORECASE,
)
NONE_FOUND = re.compile(r"\b(0|no|zero|without) (errors?|warnings?|failures?|failed|problems?)\b", re.IGNORECASE)


def _maybe_unlocated(line: str) -> bool:
    """A cheap test before CC_UNLOCATED's search (an unanchored alternation is the costliest test of a line):
    every line it matches holds one of these words."""
    return "error" in line or "undefined" in line or "definition" in line or "cannot find" in line or "ymbol" in line


def cc_line(line: str) -> tuple[str, str | None] | None:
    """A compiler-style line as (severity, ``file:line``), severity being ``error`` (``fatal error`` too),
    ``warning`` or ``note`` (``remark`` too), or None when the line is not a diagnostic."""
    m = CC_DIAG.match(line)
    if m:
        sev = m.group("sev")
        kind = "error" if "error" in sev else "warning" if sev == "warning" else "note"
        return kind, f"{m.group('file')}:{m.group('line')}"
    if _maybe_unlocated(line) and CC_UNLOCATED.search(line):
        at = LOCATION_PREFIX.match(line)
        return "error", (f"{at.group(1)}:{at.group(2)}" if at else None)
    return None


def looks_like_problem(line: str) -> bool:
    """Whether an unclassified line looks like an error worth keeping ("0 errors" does not)."""
    return bool(OTHER_PROBLEM.search(line)) and not NONE_FOUND.search(line)


class Report:
    """The diagnostics kept from one output, bounded whatever its size."""

    def __init__(self, family: str, limits: Limits) -> None:
        self.family = family
        self.limits = limits
        self.errors = Capped(limits.max_failures)
        self.failures: list[str] = []  # file:line (or the message, when it has no location) per kept error
        self.warnings = Capped(MAX_WARNINGS)
        self.other = Capped(limits.max_failures)
        self.facts = Capped(MAX_FACTS)
        self.summary: str | None = None
        self.tail: deque[tuple[str, bool]] | None = None  # last lines (and whether kept apart), if shown
        self._kept_before = 0  # self.kept when the last line was seen
        self.lines = 0  # lines read (the family sets it at the end)
        self.kept = 0  # lines of the output the text stands for
        self._seen: dict[str, int] = {}  # group and error text -> repeats (bounded by the cap on errors)
        self.repeats = 0  # errors read again with the same text (listed once, with their count)
        self._error_groups: list[str | None] = []  # the group of each kept error
        self._warning_groups: list[str | None] = []

    def error(self, text: str, location: str | None = None, used: int = 1, group: str | None = None) -> None:
        """An error (``text`` may hold a few detail lines); repeats of the same text are counted once.
        ``group`` (a file name) is printed once above the entries that share it."""
        self.kept += used
        block = self._clip_block(text)
        key = f"{group}\0{block.strip()}"
        if key in self._seen:
            self._seen[key] += 1
            self.repeats += 1
            return
        if len(self.errors.items) < self.errors.cap:
            self._seen[key] = 1
            self.failures.append(location or block.strip().splitlines()[0])
            self._error_groups.append(group)
        self.errors.add(block)

    def warning(self, text: str, used: int = 1, group: str | None = None) -> None:
        self.kept += used
        if len(self.warnings.items) < self.warnings.cap:
            self._warning_groups.append(group)
        self.warnings.add(clip(text, self.limits))

    def fact(self, text: str, used: int = 1) -> None:
        """A line worth keeping that is neither an error nor a warning (a state, a count, a target)."""
        self.kept += used
        self.facts.add(clip(text, self.limits))

    def keep_tail(self, n: int) -> None:
        """Show the output's last ``n`` lines too (for commands whose output is partly a program's own)."""
        self.tail = deque(maxlen=max(n, 0))

    def see(self, line: str) -> None:
        """A line read, for the tail (when shown); notes whether the line before it was kept elsewhere, so
        that the count of lines left out stays exact."""
        if self.tail is None:
            return
        if self.tail:
            last, _ = self.tail[-1]
            self.tail[-1] = (last, self.kept != self._kept_before)
        self._kept_before = self.kept
        self.tail.append((line, False))

    def _omitted(self) -> int:
        """Lines of the output the text does not show."""
        shown_in_tail = 0
        if self.tail:
            last, _ = self.tail[-1]
            self.tail[-1] = (last, self.kept != self._kept_before)
            shown_in_tail = sum(1 for _, kept in self.tail if not kept)
        return max(self.lines - self.kept - shown_in_tail, 0)

    def set_summary(self, line: str) -> None:
        """The tool's own summary line (the last one seen wins)."""
        if self.summary is None:
            self.kept += 1
        self.summary = clip(line.strip(), self.limits)

    def unclassified(self, line: str) -> None:
        """A line the family does not know: kept if it looks like a problem, else left out."""
        if looks_like_problem(line):
            self.kept += 1
            self.other.add(clip(line, self.limits))

    def other_line(self, line: str) -> None:
        """A line the family does not know, kept whatever it says (for tools whose every unknown line on
        a failure is the reason)."""
        self.kept += 1
        self.other.add(clip(line, self.limits))

    def _clip_block(self, text: str) -> str:
        return "\n".join(clip(part, self.limits) for part in text.split("\n"))

    def has_problem(self) -> bool:
        return bool(len(self.errors) or len(self.other))

    def compact(self, exit_code: int, headline: str | None = None) -> Compact | None:
        """The compact result, or None when the command failed and no error was found (a summary line
        alone does not say why; the generic summariser then keeps every error-looking line and the
        output's tail)."""
        if exit_code != 0 and not self.has_problem():
            return None
        return Compact(family=self.family, kind=STRUCTURED, text=self.render(exit_code, headline),
                       failures=list(self.failures), summary_line=self.summary,
                       omitted_lines=self._omitted())

    def render(self, exit_code: int, headline: str | None = None) -> str:
        """The compact text: a header with the counts, the errors, the warnings, other problem lines, the
        kept facts and the tool's summary line."""
        n_err, n_warn = len(self.errors) + self.repeats, len(self.warnings)
        distinct = f" ({len(self.errors)} distinct)" if self.repeats else ""
        omitted = self._omitted()
        head = (f"[outloop] {self.family}: exit {exit_code}; {n_err} error{'s' * (n_err != 1)}{distinct}, "
                f"{n_warn} warning{'s' * (n_warn != 1)}; {self.lines} lines of output, {omitted} left out")
        # .items, not the Capped itself: list() would size itself by len(), which counts the dropped ones
        errors = _grouped([self._repeat(e, g) for e, g in zip(self.errors.items, self._error_groups, strict=True)],
                          self._error_groups)
        warnings = _grouped(list(self.warnings.items), self._warning_groups)
        return join(
            [head], [headline] if headline else None,
            _section(f"errors ({len(self.errors)}{' distinct' * bool(self.repeats)}):", errors, self.errors.dropped,
                     "grep the log for 'error'"),
            _section(f"warnings ({n_warn}):", warnings, self.warnings.dropped,
                     "grep the log for 'warning'"),
            _section(f"other problem lines ({len(self.other)}):", list(self.other.items), self.other.dropped,
                     "see the log"),
            _section("", list(self.facts.items), self.facts.dropped, "see the log"),
            [f"summary: {self.summary}"] if self.summary else None,
            self._missing_note(n_err),
            [f"--- last {len(self.tail)} lines ---", *(clip(t, self.limits) for t, _ in self.tail)] if self.tail
            else None,
        )

    def _missing_note(self, n_err: int) -> list[str] | None:
        """A line saying so when the tool's summary counts more errors than were read here (an error in a
        form this family does not know is then only in the log)."""
        stated = stated_errors(self.summary) if self.summary else None
        if stated is None or stated <= n_err:
            return None
        return [f"note: the summary counts {stated} errors and {n_err} were read here: the log has every line"]

    def _repeat(self, text: str, group: str | None) -> str:
        n = self._seen.get(f"{group}\0{text.strip()}", 1)
        return f"{text} (x{n})" if n > 1 else text


STATED = [re.compile(p) for p in (r"due to (\d+) previous errors?", r"(\d+) remaining",
                                   r"\((\d+) errors?, \d+ warnings?\)", r"^Found (\d+) errors?\b")]


def stated_errors(summary: str) -> int | None:
    """The number of errors a tool's summary line states (``Found 3 errors``, ``due to 2 previous errors``,
    ``(5 errors, 2 warnings)``, ``1 remaining``), or None."""
    for pattern in STATED:
        m = pattern.search(summary)
        if m:
            return int(m.group(1))
    return None


def _grouped(items: list[str], groups: list[str | None]) -> list[str]:
    """Items under a line naming their group each time the group changes (grouped items are indented)."""
    out: list[str] = []
    last: str | None = None
    for item, group in zip(items, groups, strict=True):
        if group is not None and group != last:
            out.append(group)
        last = group
        out.append(f"  {item}" if group is not None else item)
    return out


def _section(title: str, items: list[str], dropped: int, hint: str) -> list[str] | None:
    """A titled block of kept lines, with the note for those past the cap."""
    if not items and not dropped:
        return None
    block = [title] if title else []
    block += items
    if dropped:
        block.append(more_failures_note(dropped, hint))
    return block


def subcommand(argv: list[str], valued: frozenset[str] = frozenset()) -> str | None:
    """The first word after the program that is not an option (or a ``+toolchain``), or None:
    ``["cargo", "+nightly", "build"]`` -> ``"build"``; ``["git", "-C", "x", "status"]`` -> ``"status"``."""
    i = 1
    while i < len(argv):
        word = argv[i]
        if word in valued:
            i += 2
            continue
        if word.startswith(("-", "+")):
            i += 1
            continue
        return word
    return None


CLANG_SUMMARY = re.compile(r"^\d+ (warnings?|errors?)( and \d+ (warnings?|errors?))? generated\.$")


def take_cc_line(report: Report, line: str) -> bool:
    """Keeps a compiler-style line in ``report`` (errors with their location, warnings; notes are left
    out) and says whether the line was one."""
    seen = cc_line(line)
    if seen is None:
        if CLANG_SUMMARY.match(line.strip()):
            report.set_summary(line)
            return True
        return False
    kind, location = seen
    if kind == "error":
        report.error(line.rstrip(), location)
    elif kind == "warning":
        report.warning(line.rstrip())
    return True


GIT_VALUED = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path", "--config-env"})


def git_subcommand(argv: list[str]) -> str | None:
    """The git subcommand of ``git [-C dir] [-c k=v] [--no-pager] SUBCOMMAND ...``, or None."""
    if not argv or argv[0] != "git":
        return None
    return subcommand(argv, GIT_VALUED)
