"""The pip family (``pip install``, ``python -m pip install``, ``pip uninstall``, ``uv pip install|sync``,
``uv sync|add``): keeps every ``ERROR:``/``error:`` line, each ``×`` failure with the ``│``/``╰─>`` lines
under it, and from a failed build's subprocess output the lines that say why (the exception, compiler
errors, the last line before ``[end of output]``); warnings (``WARNING:``, ``DEPRECATION:``, uv's
``warning:``); the result (``Successfully installed ...``, ``Would install ...``, uv's ``Resolved``/
``Installed``/``Audited`` lines with the ``+``/``-`` package lines counted and listed up to a cap) and how
many requirements were already satisfied. It leaves out ``Collecting``/``Downloading``/``Processing``
progress, build steps, ``note:``/``hint:`` lines, tracebacks' frames and pip's upgrade notice. Stdlib
only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits, clip
from outloop.runner.families.diag import Report, cc_line, subcommand

NAME = "pip"
KIND = STRUCTURED

PIP_SUBCOMMANDS = {"install", "uninstall", "download", "wheel"}
UV_PIP_SUBCOMMANDS = {"install", "sync", "uninstall", "compile"}
UV_SUBCOMMANDS = {"sync", "add", "remove", "lock"}
ERROR = re.compile(r"^\s*(ERROR: |error: |× )")
WARNING = re.compile(r"^(WARNING: |DEPRECATION: |warning: )")
BOX = re.compile(r"^\s*(│|╰─[>▶])")
SUB_START = re.compile(r"╰─[>▶] \[\d+ lines of output\]")
SUB_END = re.compile(r"^\s*\[end of output\]")
EXCEPTION = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)|error)(: |\b$)")
SUMMARY = re.compile(r"^(Successfully installed .*|Would install .*|Successfully uninstalled .*|"
                     r"(Installed|Uninstalled|Audited|Checked) \d+ packages? in .*)$")
FACT = re.compile(r"^(Resolved \d+ packages? in .*|Prepared \d+ packages? in .*|Would uninstall .*|"
                  r"Using Python .* environment at: .*)$")
UV_PACKAGE = re.compile(r"^ [-+~] \S+")
SATISFIED = re.compile(r"^Requirement already satisfied: ")
MAX_PACKAGES = 30  # uv's +/- package lines listed; past this they are counted


def detect(argv: list[str]) -> bool:
    """pip, pip3, pip3.11 (and ``python -m pip``) installing; ``uv pip install|sync``, ``uv sync|add``."""
    if not argv:
        return False
    if re.match(r"^pip(\d+(\.\d+)?)?$", argv[0]):
        return subcommand(argv, frozenset({"--python", "--log", "--proxy"})) in PIP_SUBCOMMANDS
    if argv[0] == "uv" and len(argv) > 1:
        if argv[1] == "pip":
            return subcommand(argv[1:]) in UV_PIP_SUBCOMMANDS
        return subcommand(argv, frozenset({"--project", "--directory", "--python", "-p"})) in UV_SUBCOMMANDS
    return False


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """Errors with why they happened, warnings, and the install's result (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    state = _State(report, limits)
    for line in counted:
        state.take(line)
    state.close()
    report.lines = counted.n
    return report.compact(exit_code)


class _State:
    """The reading of one pip/uv output: an open ``×`` block, an open subprocess output, counts."""

    def __init__(self, report: Report, limits: Limits) -> None:
        self.report = report
        self.limits = limits
        self.block: list[str] = []  # an error and the box lines under it
        self.in_sub = False
        self.sub_last = ""  # the last line of the subprocess output read so far
        self.satisfied = 0
        self.packages: list[str] = []
        self.more_packages = 0

    def take(self, line: str) -> None:
        if self.in_sub:
            self._sub(line)
            return
        if ERROR.match(line):
            self._flush()
            self.block = [line.rstrip()]
            return
        if self.block and not line.strip():
            return  # a blank line inside an error's explanation
        if self.block and (BOX.match(line) or line[:1].isspace()):
            self._continue(line)
            return
        self._flush()
        if WARNING.match(line):
            self.report.warning(line.rstrip())
        elif SUMMARY.match(line):
            self.report.set_summary(line)
        elif FACT.match(line):
            self.report.fact(line.rstrip())
        elif SATISFIED.match(line):
            self.satisfied += 1
        elif UV_PACKAGE.match(line):
            if len(self.packages) < MAX_PACKAGES:
                self.packages.append(line.strip())
            else:
                self.more_packages += 1
        elif line.strip() and not line[0].isspace() and not line.startswith(("note:", "hint:", "[notice]")):
            self.report.unclassified(line)

    def _continue(self, line: str) -> None:
        """A line under an error: pip's box lines, uv's indented ``cause:`` and ``[stderr]`` lines (past
        ``detail_lines`` only an exception line is still kept)."""
        if len(self.block) <= self.limits.detail_lines:
            self.block.append(line.rstrip())
        elif EXCEPTION.match(line):
            self.report.error(line.strip())
        if SUB_START.search(line):
            self.in_sub = True

    def _sub(self, line: str) -> None:
        """A line of a failed build's own output: kept when it says why; the last one is kept at the end."""
        if SUB_END.match(line):
            self.in_sub = False
            if self.sub_last:
                self.report.error(self.sub_last.strip())
            self.sub_last = ""
            return
        stripped = line.strip()
        if not stripped:
            return
        seen = cc_line(stripped)
        if (seen and seen[0] == "error") or EXCEPTION.match(line):
            self.report.error(stripped, seen[1] if seen else None)
            self.sub_last = ""  # kept already
        else:
            self.sub_last = clip(stripped, self.limits)

    def _flush(self) -> None:
        if self.block:
            self.report.error("\n".join(self.block), used=len(self.block))
            self.block = []

    def close(self) -> None:
        self._flush()
        if self.satisfied:
            self.report.fact(f"{self.satisfied} requirement(s) already satisfied", used=self.satisfied)
        if self.packages:
            more = f" (and {self.more_packages} more)" if self.more_packages else ""
            self.report.fact(f"packages: {' '.join(self.packages)}{more}", used=len(self.packages) + self.more_packages)
