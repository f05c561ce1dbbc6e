"""The tsc family (``tsc``, ``tsc --noEmit``, ``tsc -b``, ``vue-tsc``, ``tsgo``): keeps every error with
its location, code and message as one line (``a.ts:1:7: error TS2322: Type 'string' is not assignable to
type 'number'.``, from either the plain ``a.ts(1,7): error ...`` or the ``--pretty`` ``a.ts:1:7 - error
...`` form) with the indented lines that continue its message, tsc's errors without a location (``error
TS18003: No inputs were found``), and the summary (``Found 5 errors in 2 files.``). It leaves out
``--pretty`` code frames, related-information blocks (``'age' is declared here.``) and the per-file
error table. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report

NAME = "tsc"
KIND = STRUCTURED

PROGRAMS = {"tsc", "vue-tsc", "tsgo", "tspc"}
PLAIN = re.compile(r"^(?P<file>[^\s(][^(]*)\((?P<line>\d+),(?P<col>\d+)\): (?P<sev>error|warning|message) "
                   r"(?P<rest>TS\d+: .*)$")
PRETTY = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+) - (?P<sev>error|warning|message) "
                    r"(?P<rest>TS\d+: .*)$")
UNLOCATED = re.compile(r"^(?P<sev>error|warning) TS\d+: .*$")
SUMMARY = re.compile(r"^(\[[^\]]+\] )?(Found \d+ errors?\b.*)$")


def detect(argv: list[str]) -> bool:
    """tsc and its wrappers (``npx tsc`` arrives here as ``tsc``)."""
    return bool(argv) and argv[0] in PROGRAMS


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """Every error with its location and message, and tsc's summary (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    current: list[str] = []  # an error and the indented lines that continue its message
    location: str | None = None
    for line in counted:
        if current and line.startswith("  ") and line.strip():
            if len(current) <= limits.detail_lines:
                current.append(line.rstrip())
            continue
        if current:
            _flush(report, current, location)
            current = []
        m = PLAIN.match(line) or PRETTY.match(line)
        if m:
            location = f"{m.group('file')}:{m.group('line')}"
            current = [f"{location}:{m.group('col')}: {m.group('sev')} {m.group('rest')}"]
        elif UNLOCATED.match(line):
            current, location = [line.rstrip()], None
        elif SUMMARY.match(line):
            report.set_summary(line)
        elif line.strip() and not line[0].isspace() and not line[0].isdigit() and not line.startswith("Errors "):
            report.unclassified(line)
    if current:
        _flush(report, current, location)
    report.lines = counted.n
    return report.compact(exit_code)


def _flush(report: Report, block: list[str], location: str | None) -> None:
    if " warning TS" in block[0] or block[0].startswith("warning") or " message TS" in block[0]:
        report.warning("\n".join(block), used=len(block))
    else:
        report.error("\n".join(block), location, used=len(block))
