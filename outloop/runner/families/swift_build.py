"""The swift-build family (``swift build``): keeps every compiler error and warning with its
``/path/Sources/App/main.swift:2:7`` location and message (the clang-style lines the cc family reads), the
build's own errors (``error: fatalError``, ``error: emit-module command failed``, linker errors), and the
summary (``Build complete! (0.52s)``). It leaves out ``[3/7] Compiling`` progress, ``Building for ...``,
notes and the code frames Swift 6 draws under each diagnostic. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report, subcommand, take_cc_line

NAME = "swift-build"
KIND = STRUCTURED

SUMMARY = re.compile(r"^(Build complete!.*|Compiling plugin .* failed.*|error: fatalError)$")
NOISE = re.compile(r"^(\[\d+/\d+\] |Building for |Fetching |Fetched |Computing version |Computed |Resolving |"
                   r"Creating working copy |Working copy |Write |Planning build)")


def detect(argv: list[str]) -> bool:
    """``swift build`` (``swift test`` is the swift-test family's)."""
    return len(argv) > 1 and argv[0] == "swift" and subcommand(argv, frozenset({"--package-path"})) == "build"


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The compiler's errors and warnings and the build's summary (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    for line in counted:
        if SUMMARY.match(line):
            if line.startswith("error:"):
                report.error(line.rstrip())
            report.set_summary(line)
        elif NOISE.match(line) or line.startswith((" ", "\t")) or not line.strip():
            continue
        elif not take_cc_line(report, line):
            report.unclassified(line)
    report.lines = counted.n
    return report.compact(exit_code)
