"""The ruff family (``ruff check``, ``ruff format --check``, ``ruff`` before subcommands): keeps every
violation as one line ``a.py:1:8: F401 [*] `os` imported but unused`` (the concise format as is; the full
format's header joined to the ``--> a.py:1:8`` line under it), files ``ruff format`` would change, the
``--statistics`` rows, and the summary (``Found 3 errors.``, ``All checks passed!``, ``1 file would be
reformatted``) with the fixable count. It leaves out code frames, ``help:`` lines and suggested fixes.
Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report, subcommand

NAME = "ruff"
KIND = STRUCTURED

CONCISE = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+): (?P<rest>(?:[A-Z]+\d+|[a-z][a-z-]*)\b.*)$")
HEADER = re.compile(r"^(?P<code>[A-Z]+\d+|[a-z][a-z-]*[a-z])(?: \[[* ]\])?:? \S.*$")
ARROW = re.compile(r"^\s*--> (?P<file>.+?):(?P<line>\d+):(?P<col>\d+)\s*$")
WOULD_REFORMAT = re.compile(r"^Would reformat: (?P<file>.+)$")
SUMMARY = re.compile(r"^(Found \d+ errors?.*|All checks passed!|\d+ files? (would be )?(re)?formatted.*|"
                     r"\d+ files? left unchanged.*|\d+ files? already formatted.*)$")
FIXABLE = re.compile(r"^(\[\*\] \d+ fixable.*|No fixes available.*|\d+ hidden fix.*)$")
STATISTIC = re.compile(r"^\s*\d+\t\S+\t")
# words a full-format header never starts with but a help or note line does
NOT_A_CODE = {"help", "note", "info", "warning", "error"}
NOT_A_CODE_PREFIXES = tuple(f"{w}:" for w in NOT_A_CODE)


def detect(argv: list[str]) -> bool:
    """``ruff check`` and ``ruff format`` (or ``ruff`` with paths only, as before subcommands)."""
    if not argv or argv[0] != "ruff":
        return False
    sub = subcommand(argv, frozenset({"--config", "--output-format", "--select", "--ignore", "--target-version"}))
    return sub is None or sub in ("check", "format") or sub == "." or "/" in sub or sub.endswith(".py")


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """Every violation with its location, and ruff's summary (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    pending: str | None = None  # a full-format header waiting for its "-->" line
    for line in counted:
        if pending is not None:
            m = ARROW.match(line)
            if m:
                loc = f"{m.group('file')}:{m.group('line')}"
                report.error(f"{loc}:{m.group('col')}: {pending}", loc, used=2)
                pending = None
                continue
            report.other_line(pending)  # a header with no location after it: kept as it is
            pending = None
        h = HEADER.match(line)
        if not _take(report, line) and h and h.group("code") not in NOT_A_CODE:
            pending = line.rstrip()
    if pending is not None:
        report.other_line(pending)
    report.lines = counted.n
    return report.compact(exit_code)


def _take(report: Report, line: str) -> bool:
    """A concise violation, a file to reformat, a summary or statistics line: kept; code frames and help
    lines: left out; other lines: kept when they look like a problem. False for a possible header."""
    m = CONCISE.match(line)
    if m:
        report.error(line.rstrip(), f"{m.group('file')}:{m.group('line')}")
        return True
    m = WOULD_REFORMAT.match(line)
    if m:
        report.error(line.rstrip(), m.group("file").strip())
    elif SUMMARY.match(line):
        report.set_summary(line)
    elif FIXABLE.match(line) or STATISTIC.match(line):
        report.fact(line.rstrip())
    elif HEADER.match(line) and not line.startswith(NOT_A_CODE_PREFIXES):
        return False
    elif line.strip() and not line[0].isspace() and not line[0].isdigit() and not line.startswith(("help:", "|")):
        report.unclassified(line)
    return True
