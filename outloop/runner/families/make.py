"""The make family (make, gmake, cmake configure and ``cmake --build``, ninja): keeps the failing targets
(``make: *** [Makefile:3: app.o] Error 1`` with the makefile's location, ninja's ``FAILED:`` lines), the
compiler errors and warnings in between (as the cc family reads them), CMake's errors with their message
block (``CMake Error at CMakeLists.txt:3 (add_executable):`` and the lines under it), every other line that
looks like a failure (a recipe's ``/bin/sh: 1: foo: not found``), and the last summary line (``[100%] Built
target app``, ``make: Nothing to be done``, ``-- Configuring incomplete, errors occurred!``), and the
output's last ``Limits.tail_lines`` lines (a recipe such as ``make run`` prints a program's own output).
It leaves out the rest: the commands make echoes, progress lines, ``Entering directory`` lines, notes and
code frames. Stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report, subcommand, take_cc_line

NAME = "make"
KIND = STRUCTURED

MAKE_PROGRAMS = {"make", "gmake", "bmake", "ninja"}
# make: *** [Makefile:3: app.o] Error 1   |   make[2]: *** No rule to make target 'x'.  Stop.
MAKE_ERROR = re.compile(r"^(?:g|b)?make(?:\[\d+\])?: \*\*\* (?P<what>.*)$")
FAILED_TARGET = re.compile(r"^\[(?P<file>[^\]:]+):(?P<line>\d+): (?P<target>[^\]]+)\] (?P<why>.*)$")
OLD_FAILED_TARGET = re.compile(r"^\[(?P<target>[^\]]+)\] (?P<why>Error \d+.*)$")
MAKEFILE_ERROR = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+): \*\*\* (?P<what>.*)$")
MAKE_SUMMARY = re.compile(r"^(?:g|b)?make(?:\[\d+\])?: (Nothing to be done for .*|'.*' is up to date\.)$")
MAKE_NOISE = re.compile(r"^(?:g|b)?make(?:\[\d+\])?: (Entering|Leaving) directory")
CMAKE_BLOCK = re.compile(r"^CMake (?P<sev>Error|Warning|Deprecation Warning)(?: \(dev\))?(?: at (?P<file>[^:]+):"
                         r"(?P<line>\d+)(?: \([^)]*\))?)?:?(?P<rest>.*)$")
CMAKE_SUMMARY = re.compile(r"^(-- (Configuring incomplete.*|Build files have been written to.*)|"
                           r"CMake Generate step failed.*|"
                           r"\[\s*\d+%\] Built target .*|ninja: no work to do\.|ninja: build stopped: .*)$")
NINJA_FAILED = re.compile(r"^FAILED: (?P<target>.*)$")


def detect(argv: list[str]) -> bool:
    """make, gmake, ninja, and cmake (configure or ``--build``; not ``ctest``, not ``cmake -E``)."""
    if not argv:
        return False
    if argv[0] in MAKE_PROGRAMS:
        return True
    return argv[0] == "cmake" and "-E" not in argv and "-P" not in argv and subcommand(argv) != "-E"


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The failing targets, the compiler and CMake errors, and the summary (see the module doc)."""
    report = Report(NAME, limits)
    report.keep_tail(limits.tail_lines)  # a recipe (make run, make test) prints a program's own output
    counted = Counted(lines)
    block: list[str] = []  # an open CMake message: its header, location and first lines
    block_loc: str | None = None
    for line in counted:
        report.see(line)
        if block:
            if line.startswith((" ", "\t")) or not line.strip():
                if line.strip() and len(block) <= limits.detail_lines:
                    block.append(line.rstrip())
                continue
            _close_cmake(report, block, block_loc)
            block = []
        m = CMAKE_BLOCK.match(line)
        if m:
            block = [line.rstrip()]
            block_loc = f"{m.group('file')}:{m.group('line')}" if m.group("file") else None
            continue
        _take(report, line)
    if block:
        _close_cmake(report, block, block_loc)
    report.lines = counted.n
    return report.compact(exit_code)


def _close_cmake(report: Report, block: list[str], location: str | None) -> None:
    """A CMake message: an error with its first lines, or a warning (its header only)."""
    if block[0].startswith("CMake Error"):
        report.error("\n".join(block), location, used=len(block))
    else:
        report.warning(block[0])


def _take(report: Report, line: str) -> None:
    """One line outside a CMake message block."""
    m = MAKE_ERROR.match(line)
    if m:
        _make_error(report, line, m.group("what"))
        return
    m = MAKEFILE_ERROR.match(line)
    if m:
        report.error(line.rstrip(), f"{m.group('file')}:{m.group('line')}")
        return
    m = NINJA_FAILED.match(line)
    if m:
        report.error(line.rstrip(), f"target {m.group('target').strip()}")
        return
    if MAKE_SUMMARY.match(line) or CMAKE_SUMMARY.match(line.strip()):
        report.set_summary(line)
        return
    if MAKE_NOISE.match(line) or take_cc_line(report, line) or line.startswith((" ", "\t")):
        return
    if line.startswith("-- ") and "error" not in line.lower():
        return
    report.unclassified(line)


def _make_error(report: Report, line: str, what: str) -> None:
    """``make: *** ...``: a failing target (with the makefile's location) or make's own error."""
    if what.startswith("Waiting for unfinished"):
        return
    t = FAILED_TARGET.match(what)
    if t:
        report.error(line.rstrip(), f"{t.group('file')}:{t.group('line')}")
        return
    t = OLD_FAILED_TARGET.match(what)
    report.error(line.rstrip(), f"target {t.group('target')}" if t else None)
