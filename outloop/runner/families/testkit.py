"""What the test-runner families share: a bounded book of failures (each failing test's id with a few
lines of detail: its assertion message and file:line) and the layout of a test runner's compact result.
Stdlib only."""

from __future__ import annotations

from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Limits, clip, join, more_failures_note


class Failures:
    """Failing test ids in the order they were first seen, each with up to ``limits.detail_lines`` lines
    of detail, and at most ``limits.max_detail_lines`` detail lines in all (past that: ids only). Ids past
    ``limits.max_failures`` are counted, not kept."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.ids: list[str] = []
        self.details: dict[str, list[str]] = {}
        self.dropped = 0
        self.detail_total = 0

    def add(self, fid: str) -> str:
        """Record a failing test (once); returns its id."""
        fid = clip(fid.strip(), self.limits)
        if fid in self.details:
            return fid
        if len(self.ids) >= self.limits.max_failures:
            self.dropped += 1
            return fid
        self.ids.append(fid)
        self.details[fid] = []
        return fid

    def detail(self, fid: str, line: str, force: bool = False) -> None:
        """Add one line of detail under a failing test (within the per-test and total budgets; ``force``
        for the line that matters most, e.g. the exception, which only the total budget limits)."""
        kept = self.details.get(fid)
        if kept is None or not line.strip():
            return
        line = clip(line.rstrip(), self.limits)
        if line in kept or (len(kept) >= self.limits.detail_lines and not force):
            return
        if self.detail_total >= self.limits.max_detail_lines:
            return
        kept.append(line)
        self.detail_total += 1

    def __len__(self) -> int:
        return len(self.ids) + self.dropped

    def __contains__(self, fid: str) -> bool:
        return fid in self.details

    def lines(self, hint: str = "grep the log for the rest") -> list[str]:
        """The failures as text: ``- id`` then its indented detail lines."""
        out: list[str] = []
        for fid in self.ids:
            out.append(f"- {fid}")
            out.extend(f"    {d.strip()}" for d in self.details[fid])
        if self.dropped:
            out.append(more_failures_note(self.dropped, hint))
        return out


def result(name: str, header: str, failures: Failures, summary: Iterable[str], extra: Iterable[str] = (),
           tail: Iterable[str] = (), omitted: int = 0, summary_line: str | None = None) -> Compact:
    """A test runner's compact result: a header line, the failures with their details, other kept lines
    (errors outside tests, crash messages), the last lines when the run did not finish, and the tool's
    summary lines verbatim."""
    fails = failures.lines()
    extra = list(extra)
    tail = list(tail)
    text = join([header],
                [f"--- {len(failures)} failing ---", *fails] if fails else None,
                ["--- errors ---", *extra] if extra else None,
                ["--- last lines (the run did not print its summary) ---", *tail] if tail else None,
                list(summary))
    return Compact(family=name, kind=STRUCTURED, text=text, failures=list(failures.ids),
                   summary_line=summary_line, omitted_lines=omitted)
