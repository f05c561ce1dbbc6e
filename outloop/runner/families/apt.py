"""The apt family (``apt``/``apt-get``/``aptitude`` ``install|remove|upgrade|update...``): keeps every
``E:`` error, each ``Err:`` fetch failure and dpkg failure (``dpkg: error processing package X
(--configure):``, ``Errors were encountered while processing:``) with the indented lines under it, the
``W:`` warnings, what the transaction does (``The following NEW packages will be installed:`` and its
package list, the ``Setting up``/``Removing`` packages, counted and listed up to a cap, ``X is already the
newest version``) and the summary (``0 upgraded, 2 newly installed, 0 to remove and 144 not upgraded.``;
``All packages are up to date.`` after an update). It leaves out ``Reading package lists...``, ``Get:``/
``Hit:`` lines, unpacking, triggers, debconf's frontend notices and the suggested packages. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits
from outloop.runner.families.diag import Report, subcommand

NAME = "apt"
KIND = STRUCTURED

PROGRAMS = {"apt", "apt-get", "aptitude"}
SUBCOMMANDS = {"install", "reinstall", "remove", "purge", "upgrade", "full-upgrade", "dist-upgrade", "update",
               "autoremove", "build-dep", "source", "download"}
ERROR_BLOCK = re.compile(r"^(E: |Err:\d* |dpkg: (error|dependency problems)|Errors were encountered while processing:)")
WARNING = re.compile(r"^W: ")
SUMMARY = re.compile(r"^(\d+ upgraded, \d+ newly installed, .*|All packages are up to date\.|"
                     r"\d+ packages? can be upgraded.*)$")
FACT = re.compile(r"^(Fetched .*|Download complete.*|.* is already the newest version.*|"
                  r"Package .* is not available.*|.* has no installation candidate.*)$")
LIST = re.compile(r"^The following (.*):$")
DONE = re.compile(r"^(Setting up|Removing|Purging|Inst|Remv|Conf) (?P<pkg>[^\s:]+)")
NOISE = re.compile(r"^(Reading |Building |Get:|Hit:|Ign:|Selecting |\(Reading database|Preparing to unpack|"
                   r"Unpacking |Processing triggers|debconf: |Need to get|After this operation|Suggested packages|"
                   r"Recommended packages|N: |WARNING: apt does not have a stable|update-alternatives: |"
                   r"Created symlink|Scanning |Running kernel|No services need|No containers|No user sessions|"
                   r"Calculating upgrade)")
MAX_PACKAGES = 40


def detect(argv: list[str]) -> bool:
    return bool(argv) and argv[0] in PROGRAMS and subcommand(argv, frozenset({"-o", "-c", "-t"})) in SUBCOMMANDS


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """Errors, warnings, what the transaction does and its summary (see the module doc)."""
    report = Report(NAME, limits)
    counted = Counted(lines)
    block: list[str] = []  # an error or a "The following ...:" list, with the indented lines under it
    done: dict[str, list[str]] = {}  # "Setting up" -> packages (capped)
    counts: dict[str, int] = {}
    for line in counted:
        if block and line[:1].isspace() and line.strip():
            if block[0].startswith("The following") or len(block) <= limits.detail_lines:
                block.append(line.strip())
            continue
        if block:
            _flush(report, block)
            block = []
        m = DONE.match(line)
        if m:
            names = done.setdefault(m.group(1), [])
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
            if len(names) < MAX_PACKAGES:
                names.append(m.group("pkg"))
        elif ERROR_BLOCK.match(line) or LIST.match(line):
            block = [line.rstrip()]
        elif WARNING.match(line):
            report.warning(line.rstrip())
        elif SUMMARY.match(line):
            report.set_summary(line)
        elif FACT.match(line):
            report.fact(line.rstrip())
        elif line.strip() and not NOISE.match(line) and not line[0].isspace():
            report.unclassified(line)
    if block:
        _flush(report, block)
    for verb, names in done.items():
        more = f" (and {counts[verb] - len(names)} more)" if counts[verb] > len(names) else ""
        report.fact(f"{verb} ({counts[verb]}): {' '.join(names)}{more}", used=counts[verb])
    report.lines = counted.n
    return report.compact(exit_code)


def _flush(report: Report, block: list[str]) -> None:
    """An error with its detail lines, or a package list on one line."""
    if block[0].startswith("The following"):
        report.fact(f"{block[0]} {' '.join(block[1:])}", used=len(block))
    else:
        report.error("\n".join([block[0], *(f"  {b}" for b in block[1:])]), used=len(block))
