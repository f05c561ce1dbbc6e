"""The go-build family (``go build``, ``go vet``, ``go install``): keeps every error and
vet finding with its ``./main.go:10:14`` location and message (and the indented ``have``/``want`` lines under
it), the ``# package`` headers they belong to, the go command's own errors (``go: cannot find main module``)
``too many errors`` and any other line it prints (a pattern that matches no package). It leaves out
``go: downloading`` progress. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report, subcommand

NAME = "go-build"
KIND = STRUCTURED

SUBCOMMANDS = {"build", "vet", "install"}  # not "run" nor "generate": their programs' own output matters
DIAG = re.compile(r"^(?:vet: )?(?P<file>[^\s:]+\.go):(?P<line>\d+)(?::(?P<col>\d+))?: (?P<msg>.*)$")
PACKAGE = re.compile(r"^# \S+")
NOISE = re.compile(r"^go: (downloading|finding|extracting|added|upgraded) ")


def detect(argv: list[str]) -> bool:
    """``go build|vet|install`` (``go test`` is the go-test family's)."""
    return len(argv) > 1 and argv[0] == "go" and subcommand(argv, frozenset({"-C"})) in SUBCOMMANDS


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The errors with their locations and packages (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    current: list[str] = []  # the error being read: its line and the indented lines under it
    location: str | None = None
    for line in counted:
        if current and line.startswith(("\t", " ")) and line.strip():
            if len(current) <= limits.detail_lines:
                current.append(line.rstrip())
            continue
        if current:
            report.error("\n".join(current), location, used=len(current))
            current = []
        m = DIAG.match(line)
        if m and m.group("msg") == "too many errors":
            report.set_summary(line)
        elif m:
            current, location = [line.rstrip()], f"{m.group('file')}:{m.group('line')}"
        elif PACKAGE.match(line):
            report.fact(line.rstrip())
        elif line.startswith("go: ") and not NOISE.match(line):
            report.error(line.rstrip())
        elif line.strip():  # the go command says little else: an unknown line is kept
            report.other_line(line)
    if current:
        report.error("\n".join(current), location, used=len(current))
    report.lines = counted.n
    return report.compact(exit_code)
