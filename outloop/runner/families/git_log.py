"""The git-log family (``git log`` in its default, medium format, with or without ``--stat``/``-p``): one
line per commit, ``<short hash> <date> <author>: <subject> (<refs>)``, with the ``--stat`` shortstat
(``[3 files, +10 -2]``) when the log has one; the body, the stat lines and the patches are left out
(counted). Up to ``limits.max_lines`` commits are listed, the rest counted. Other formats (``--oneline``,
``--format``) are already one line a commit: they go to the generic summariser. Stdlib only."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits, clip, join
from outloop.runner.families.diag import git_subcommand

NAME = "git-log"
KIND = STRUCTURED

COMMIT = re.compile(r"^commit (?P<sha>[0-9a-f]{7,64})(?: \((?P<refs>.*)\))?")
AUTHOR = re.compile(r"^Author:\s+(?P<name>.*?)(?: <[^>]*>)?\s*$")
DATE = re.compile(r"^(?:Author)?Date:\s+(?P<date>.*\S)")
SHORTSTAT = re.compile(r"^ (?P<files>\d+) files? changed(?:, (?P<ins>\d+) insertions?\(\+\))?"
                       r"(?:, (?P<dels>\d+) deletions?\(-\))?")


def detect(argv: list[str]) -> bool:
    return git_subcommand(argv) in ("log", "whatchanged")


def short_date(raw: str) -> str:
    """``Mon Dec 1 10:00:00 2026 +0000`` -> ``2026-12-01``; any other form is kept as it is."""
    try:
        return time.strftime("%Y-%m-%d", time.strptime(raw.rsplit(" ", 1)[0], "%a %b %d %H:%M:%S %Y"))
    except ValueError:
        return raw


class _Commit:
    def __init__(self, sha: str, refs: str | None) -> None:
        self.sha, self.refs = sha[:10], refs
        self.author = self.date = self.subject = ""
        self.stat = ""

    def line(self) -> str:
        refs = f" ({self.refs})" if self.refs else ""
        return f"{self.sha} {self.date} {self.author}: {self.subject}{refs}{self.stat}"


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """One line per commit (see the module doc)."""
    counted = Counted(lines)
    listed: list[str] = []
    total = 0
    cur: _Commit | None = None
    for line in counted:
        m = COMMIT.match(line)
        if m:
            if cur is not None and len(listed) < limits.max_lines:
                listed.append(clip(cur.line(), limits))
            cur, total = _Commit(m.group("sha"), m.group("refs")), total + 1
        elif cur is None:
            continue
        elif not cur.author and (a := AUTHOR.match(line)):
            cur.author = a.group("name")
        elif not cur.date and (d := DATE.match(line)):
            cur.date = short_date(d.group("date"))
        elif not cur.subject and line.startswith("    ") and line.strip():
            cur.subject = line.strip()
        elif s := SHORTSTAT.match(line):
            cur.stat = f" [{s.group('files')} files, +{s.group('ins') or 0} -{s.group('dels') or 0}]"
    if cur is not None and len(listed) < limits.max_lines:
        listed.append(clip(cur.line(), limits))
    if total == 0:
        return None  # --oneline, --format, an error: not the default format
    omitted = counted.n - len(listed)
    head = (f"[outloop] git log: {total} commit{'s' * (total != 1)}, one line each (hash, date, author: subject); "
            f"{counted.n} lines of output, {omitted} left out (bodies, stats, patches: see the log)")
    more = [f"... and {total - len(listed)} more commits (not listed here)"] if total > len(listed) else None
    return Compact(family=NAME, kind=KIND, text=join([head], listed, more), failures=[], summary_line=None,
                   omitted_lines=omitted)
