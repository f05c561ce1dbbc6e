"""The mypy family (``mypy``, ``dmypy run|check``, ``python -m mypy``): keeps every error with its
``a.py:6`` (or ``a.py:6:12``) location, message and error code (a ``--pretty`` message wrapped over two
lines is joined back), mypy's own errors (a file it cannot read, an argument it does not know, an
internal error), and the summary (``Found 3 errors in 1 file (checked 1 source file)``, ``Success: no
issues found in 4 source files``), and ``reveal_type`` results (listed with the warnings). It leaves out
other notes (``note: See https://...``), ``--pretty`` code frames and the frames of an internal error's
traceback. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report, subcommand

NAME = "mypy"
KIND = STRUCTURED

DIAG = re.compile(r"^(?P<file>[^\s:]*[./][^\s:]*?):(?:(?P<line>\d+):(?:\d+:)?)? "
                  r"(?P<sev>error|warning|note): (?P<msg>.*)$")
SUMMARY = re.compile(r"^(Found \d+ errors? in \d+ files?.*|Success: no issues found.*)$")
REVEALED = re.compile(r"note: Revealed (type|local types) ")


def detect(argv: list[str]) -> bool:
    """``mypy`` and ``dmypy run|check|recheck``."""
    if not argv:
        return False
    if argv[0] == "dmypy":
        return subcommand(argv, frozenset({"--status-file"})) in ("run", "check", "recheck")
    return argv[0] == "mypy"


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """Every error with its location, and mypy's summary (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    current: list[str] = []  # an error and its --pretty continuation lines
    location: str | None = None
    for line in counted:
        if current and line.strip() and not line[0].isspace() and not _is_known(line):
            if len(current) <= limits.detail_lines:  # a wrapped message (--pretty)
                current.append(line.rstrip())
            continue
        if current:
            report.error(" ".join(current), location, used=len(current))
            current = []
        m = DIAG.match(line)
        if m and m.group("sev") == "error":
            current = [line.rstrip()]
            location = f"{m.group('file')}:{m.group('line')}" if m.group("line") else m.group("file")
        elif m and (m.group("sev") == "warning" or REVEALED.search(line)):
            report.warning(line.rstrip())
        elif SUMMARY.match(line):
            report.set_summary(line)
        elif not m and line.strip() and not line[0].isspace():
            report.unclassified(line)
    if current:
        report.error(" ".join(current), location, used=len(current))
    report.lines = counted.n
    return report.compact(exit_code)


def _is_known(line: str) -> bool:
    """A line that starts something of its own (a diagnostic, the summary, a traceback)."""
    return bool(DIAG.match(line) or SUMMARY.match(line)) or line.startswith(("Traceback", "usage:", "mypy:"))
