"""The cargo-build family (``cargo build``, ``check``, ``clippy``, ``rustc``, ``doc``, ``install``): keeps every
error and warning as one line, its header joined to the ``--> src/main.rs:3:20`` location under it
(``src/main.rs:3:20: error[E0425]: cannot find value `y` in this scope``), cargo's own errors (a manifest
it cannot read, a dependency it cannot fetch), and the summary line (``error: could not compile `demo` ...
due to 2 previous errors``, ``warning: `demo` (bin "demo") generated 1 warning``, ``Finished ...``). It
leaves out code frames, ``help:``/``note:`` lines, ``Compiling``/``Downloaded`` progress and the
``rustc --explain`` hints. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report, subcommand

NAME = "cargo-build"
KIND = STRUCTURED

# not "run": the program's own output is what the agent wants to read, and this family would leave it out
SUBCOMMANDS = {"build", "b", "check", "c", "clippy", "rustc", "doc", "install"}
HEADER = re.compile(r"^(?P<sev>error|warning)(?P<code>\[[\w:-]+\])?: (?P<msg>.*)$")
LOCATION = re.compile(r"^\s*--> (?P<file>.+?):(?P<line>\d+):(?P<col>\d+)\s*$")
SUMMARY = re.compile(r"^(error: could not compile .*|error: aborting due to .*|warning: .* generated \d+ warnings?.*|"
                     r"\s*Finished .*|warning: build failed, waiting for other jobs to finish.*)$")
NOISE = re.compile(r"^\s*(Compiling|Checking|Downloaded|Downloading|Updating|Locking|Adding|Blocking|Fresh|"
                   r"Running|Documenting|Installing|Installed|Replacing|Packaging|Verifying|Unpacking|Fetch) |"
                   r"(help|note|= note|= help)\b|Some errors have detailed explanations|"
                   r"For more information about (this|an) error")


def detect(argv: list[str]) -> bool:
    """``cargo build|check|clippy|rustc|doc|install`` (``cargo test`` is the cargo-test family's; ``cargo
    run`` prints the program's own output, which the generic summariser keeps), and ``rustc`` itself."""
    if not argv:
        return False
    if argv[0] == "rustc":
        return True
    return argv[0] == "cargo" and subcommand(argv, frozenset({"--manifest-path", "-Z", "--config"})) in SUBCOMMANDS


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """Errors and warnings with their locations, and cargo's summary (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    pending: str | None = None  # a diagnostic header waiting for its "-->" line
    for line in counted:
        if pending is not None:
            m = LOCATION.match(line)
            if m:
                _diagnostic(report, pending, f"{m.group('file')}:{m.group('line')}", m.group("col"))
                pending = None
                continue
            if line.strip():  # a header without a location (cargo's own errors, lint summaries)
                _diagnostic(report, pending, None, None)
                pending = None
        if SUMMARY.match(line):
            report.set_summary(line)
        elif HEADER.match(line):
            pending = line.rstrip()
        elif not (NOISE.match(line) or line.startswith((" ", "|")) or not line.strip()):
            report.unclassified(line)
    if pending is not None:
        _diagnostic(report, pending, None, None)
    report.lines = counted.n
    return report.compact(exit_code)


def _diagnostic(report: Report, header: str, location: str | None, col: str | None) -> None:
    """One error or warning: ``file:line:col: header`` when it has a location."""
    m = HEADER.match(header)
    if m is None:
        return
    text = f"{location}:{col}: {header}" if location else header
    if m.group("sev") == "error":
        report.error(text, location, used=2 if location else 1)
    else:
        report.warning(text, used=2 if location else 1)
