"""The eslint family (``eslint``, ``npx eslint``): keeps every problem as one line with its line, column,
severity, message and rule under its file's name (``  3:23 'y' is not defined [no-undef]``, from the
stylish format's file header and indented rows, or the compact format's lines), the summary (``✖ 7 problems (5
errors, 2 warnings)``) and the fixable count, and what eslint says when it crashes (``Oops! Something went
wrong!`` and the lines after it) or stops on ``--max-warnings``. Warnings are listed, capped; errors are
failures. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report

NAME = "eslint"
KIND = STRUCTURED

ROW = re.compile(r"^\s+(?P<line>\d+):(?P<col>\d+)\s+(?P<sev>error|warning)\s+(?P<msg>.*?)(?:\s{2,}(?P<rule>\S+))?\s*$")
COMPACT = re.compile(r"^(?P<file>.+?): line (?P<line>\d+), col (?P<col>\d+), (?P<sev>Error|Warning) - (?P<msg>.*)$")
SUMMARY = re.compile(r"^[✖×] \d+ problems? .*$")
FIXABLE = re.compile(r"^\s+\d+ errors? and \d+ warnings? potentially fixable.*$")
TOO_MANY = re.compile(r"^ESLint found too many warnings.*$")
CRASH = "Oops! Something went wrong!"


def detect(argv: list[str]) -> bool:
    return bool(argv) and argv[0] in ("eslint", "eslint_d")


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """Every problem with its location and rule, and eslint's summary (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    file: str | None = None
    crashed = False
    for line in counted:
        if crashed:
            if line.strip():
                report.other_line(line)
            continue
        m = ROW.match(line)
        if m and file is not None:
            _problem(report, file, m.group("line"), m.group("col"), m.group("sev"),
                     f"{m.group('msg')} [{m.group('rule')}]" if m.group("rule") else m.group("msg"))
            continue
        m = COMPACT.match(line)
        if m:
            _problem(report, m.group("file"), m.group("line"), m.group("col"), m.group("sev").lower(),
                     m.group("msg"))
        elif SUMMARY.match(line):
            report.set_summary(line)
        elif FIXABLE.match(line):
            report.fact(line.strip())
        elif TOO_MANY.match(line):
            report.error(line.strip())
        elif line.startswith(CRASH):
            crashed = True
            report.other_line(line)
        elif line.strip() and not line[0].isspace():
            file = line.strip()  # the stylish format's file header
    report.lines = counted.n
    return report.compact(exit_code)


def _problem(report: Report, file: str, line: str, col: str, sev: str, msg: str) -> None:
    """One problem, listed under its file as eslint groups them (``  3:23 'y' is not defined [no-undef]``,
    in the errors or the warnings section); the failure entry is ``file:line``."""
    text = f"{line}:{col} {msg}"
    if sev == "error":
        report.error(text, f"{file}:{line}", group=file)
    else:
        report.warning(text, group=file)
