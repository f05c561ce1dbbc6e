"""The npm-install family (``npm install|ci|add|update``, ``yarn``/``yarn install|add``, ``pnpm
install|add|update``): keeps each error (``npm error code ENOTCACHED`` with the ``npm error`` lines after
it, up to ``detail_lines``, the rest counted; yarn's ``error ...``; yarn berry's failing ``YN`` codes;
pnpm's ``ERR_PNPM_...``) and where npm wrote its debug log, the warnings (``npm warn deprecated ...``,
capped), the vulnerability count, the packages pnpm lists as added, and the summary (``added 120
packages, and audited 121 packages in 3s``, ``up to date ...``, yarn's ``Done in 3.2s.``, pnpm's ``Done in
1.2s``). It leaves out progress, ``info`` lines, funding requests and usage text past the first lines.
Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report, subcommand

NAME = "npm-install"
KIND = STRUCTURED

NPM_SUBCOMMANDS = {"install", "i", "ci", "add", "isntall", "update", "up", "clean-install", "install-clean", "it"}
YARN_SUBCOMMANDS = {None, "install", "add", "upgrade"}
PNPM_SUBCOMMANDS = {"install", "i", "add", "update", "up", "ci"}
NPM_ERROR = re.compile(r"^npm (error|ERR!)( |$)")
NPM_ERROR_START = re.compile(r"^npm (error|ERR!) code ")
NPM_LOG = re.compile(r"^npm (error|ERR!) (A complete log of this run can be found in|\s*/.*debug.*\.log)")
NPM_WARN = re.compile(r"^npm (warn|WARN)( |$)")
SUMMARY = re.compile(r"^(added \d+ packages?.*|removed \d+ packages?.*|changed \d+ packages?.*|up to date.*|"
                     r"audited \d+ packages?.*|Done in [\d.]+m?s\b.*|Already up to date|Lockfile is up to date.*)$")
VULNERABILITIES = re.compile(r"^(found \d+ vulnerabilit.*|\d+ (\w+ severity )?vulnerabilit.*)$")
YARN_ERROR = re.compile(r"^error ")
YARN_WARN = re.compile(r"^warning ")
BERRY = re.compile(r"^➤ YN(?P<code>\d{4}): (?P<msg>.*)$")
BERRY_ERRORS = {"0001", "0009", "0018", "0020", "0028", "0035", "0071", "0082"}
PNPM_ERROR = re.compile(r"^\s*ERR_PNPM_\w+")
PNPM_WARN = re.compile(r"^\s*WARN\s")
PNPM_PACKAGE = re.compile(r"^[+-] \S+ \S+")
MAX_PACKAGES = 30


def detect(argv: list[str]) -> bool:
    """npm/yarn/pnpm installing packages (not ``npm run``, ``npm test``...)."""
    if not argv:
        return False
    sub = subcommand(argv, frozenset({"--prefix", "-C", "--dir", "--cwd", "--filter", "-F", "-w", "--workspace"}))
    if argv[0] == "npm":
        return sub in NPM_SUBCOMMANDS
    if argv[0] == "yarn":
        return sub in YARN_SUBCOMMANDS
    return argv[0] == "pnpm" and sub in PNPM_SUBCOMMANDS


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """Errors, warnings, vulnerabilities and the install's result (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    block: list[str] = []  # an npm error and the npm error lines after it
    more = 0  # npm error lines past detail_lines in the current block
    packages: list[str] = []
    for line in counted:
        if block and NPM_ERROR.match(line) and not NPM_ERROR_START.match(line) and not NPM_LOG.match(line):
            if len(block) <= limits.detail_lines:
                if line.split(None, 2)[2:]:
                    block.append(line.rstrip())
            else:
                more += 1
            continue
        if block:
            _flush(report, block, more)
            block, more = [], 0
        if NPM_LOG.match(line):
            report.fact(line.rstrip())
        elif NPM_ERROR.match(line):
            block = [line.rstrip()]
        elif PNPM_PACKAGE.match(line):
            if len(packages) < MAX_PACKAGES:
                packages.append(line.strip())
        else:
            _take(report, line)
    if block:
        _flush(report, block, more)
    if packages:
        report.fact("packages: " + ", ".join(packages), used=len(packages))
    report.lines = counted.n
    return report.compact(exit_code)


def _flush(report: Report, block: list[str], more: int) -> None:
    text = "\n".join(block) + (f"\n[... {more} more npm error lines in the log]" if more else "")
    report.error(text, block[0], used=len(block) + more)


def _take(report: Report, line: str) -> None:
    """A line outside an npm error block."""
    berry = BERRY.match(line)
    if berry:
        _berry(report, line, berry.group("code"), berry.group("msg"))
    elif SUMMARY.match(line.strip()):
        report.set_summary(line)
    elif VULNERABILITIES.match(line):
        report.fact(line.rstrip())
    elif YARN_ERROR.match(line) or PNPM_ERROR.match(line):
        report.error(line.strip())
    elif NPM_WARN.match(line) or YARN_WARN.match(line) or PNPM_WARN.match(line):
        report.warning(line.strip())
    elif line.strip() and not line[0].isspace() and not line.startswith(("info ", "[", "Progress:", "Packages:")):
        report.unclassified(line)


def _berry(report: Report, line: str, code: str, msg: str) -> None:
    """A yarn berry line: ``YN0000`` is progress (its last ``Done``/``Failed`` line is the summary)."""
    text = msg.lstrip("│┌└· ").strip()
    if code == "0000":
        if text.startswith(("Done", "Failed")):
            report.set_summary(line)
    elif code in BERRY_ERRORS or "error" in text.lower():
        report.error(line.strip())
    elif text:
        report.warning(line.strip())
