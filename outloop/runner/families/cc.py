"""The C/C++ compiler family (gcc, g++, cc, c++, clang, clang++ and cross or versioned names): keeps every
error with its ``file:line:col`` and message, linker errors (undefined references, ``ld returned 1``),
the warnings (one line each, capped), clang's ``N errors generated.`` line; leaves out notes, code frames,
``In function`` context and caret lines. ``compilation terminated due to -fmax-errors=N.`` is kept as the
summary (it says errors past N were not printed). Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report, take_cc_line

NAME = "cc"
KIND = STRUCTURED

PROGRAM = re.compile(r"^([\w.]+-)*(gcc|g\+\+|cc|c\+\+|clang|clang\+\+|tcc|icx|icpx)(-\d+(\.\d+)*)?$")
# gcc prints these around its diagnostics; they carry no failure of their own
CONTEXT = re.compile(r"^(In file included from |\s+from |[^:]+: (In|At) (function|member function|"
                     r"top level|global scope|instantiation|constructor|destructor|static)|compilation terminated)")


def detect(argv: list[str]) -> bool:
    """gcc/clang and friends, by program name."""
    return bool(argv) and bool(PROGRAM.match(argv[0]))


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The compiler's errors and warnings (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    for line in counted:
        if line.startswith("compilation terminated due to"):  # -fmax-errors / -Wfatal-errors: more were cut
            report.set_summary(line)
        elif not (take_cc_line(report, line) or CONTEXT.match(line) or line.startswith(" ")):
            report.unclassified(line)
    report.lines = counted.n
    return report.compact(exit_code)
