"""The git-diff family (``git diff``, ``git show``): a diffstat (each file with its added and removed
lines and hunk count, and what happened to it: new, deleted, renamed, mode change, binary) and under
each file its hunks' headers (``@@ -12,7 +12,9 @@ def parse(...)``), with the counts of what was left out:
the hunks' bodies, which the agent can read in the log (``sed -n`` on the line numbers given). ``git
show``'s commit header (the commit, author, date and subject) is kept. Output that is not a patch
(``--stat``, ``--name-only``) goes to the generic summariser. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits, clip, join
from outloop.runner.families.diag import git_subcommand

NAME = "git-diff"
KIND = STRUCTURED

FILE = re.compile(r"^diff --(?:git a/(?P<a>.*) b/(?P<b>.*)|git (?P<plain>\S+ (?P<np>\S+))|cc (?P<cc>.*)|"
                  r"combined (?P<comb>.*))$")  # "plain": --no-prefix, --src-prefix...
HUNK = re.compile(r"^@@@? -[\d,]+ (?:-[\d,]+ )?\+[\d,]+ @@@?")
MARKS = (("new file mode", "new"), ("deleted file mode", "deleted"), ("rename from", "renamed"),
         ("old mode", "mode change"), ("similarity index", None), ("Binary files", "binary"))
HEADER_KEEP = re.compile(r"^(commit [0-9a-f]{7,}|Author: |Date: |Merge: )")
MAX_HUNK_HEADERS = 20  # hunk headers listed per file; past this they are counted


class _File:
    def __init__(self, path: str, line_no: int) -> None:
        self.path = path
        self.line_no = line_no  # where its diff starts in the log
        self.added = self.removed = self.hunks = 0
        self.marks: list[str] = []
        self.headers: list[str] = []

    def render(self, limits: Limits) -> list[str]:
        marks = f" ({', '.join(self.marks)})" if self.marks else ""
        out = [f"{self.path} | +{self.added} -{self.removed}, {self.hunks} hunk{'s' * (self.hunks != 1)}{marks} "
               f"[log line {self.line_no}]"]
        out += [f"  {clip(h, limits)}" for h in self.headers]
        if self.hunks > len(self.headers):
            out.append(f"  ... and {self.hunks - len(self.headers)} more hunks")
        return out


def detect(argv: list[str]) -> bool:
    return git_subcommand(argv) in ("diff", "show")


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """A diffstat with each file's hunk headers (see the module doc)."""
    counted = Counted(lines)
    files: list[_File] = []
    dropped_files = 0
    header: list[str] = []  # git show's commit header lines kept
    subject_next = False
    cur: _File | None = None
    totals = [0, 0, 0, 0]  # files, added, removed, hunks (all of them, listed or not)
    in_hunk = False
    for line in counted:
        m = FILE.match(line)
        if m:
            cur = _File(m.group("b") or m.group("np") or m.group("cc") or m.group("comb") or "?", counted.n)
            totals[0] += 1
            in_hunk = False
            if len(files) < limits.max_failures:
                files.append(cur)
            else:
                dropped_files += 1
            continue
        if cur is None:
            subject_next = _commit_header(header, line, subject_next, limits)
            continue
        if HUNK.match(line):
            in_hunk = True
            cur.hunks += 1
            totals[3] += 1
            if len(cur.headers) < MAX_HUNK_HEADERS:
                cur.headers.append(f"{line} [log line {counted.n}]")
        elif in_hunk and line[:1] in ("+", "-"):
            cur.added += line[0] == "+"
            cur.removed += line[0] == "-"
            totals[1] += line[0] == "+"
            totals[2] += line[0] == "-"
        elif not in_hunk:
            cur.marks += [mark for prefix, mark in MARKS if mark and line.startswith(prefix)]
        elif line.startswith("commit "):  # git show of several commits / git log -p
            cur, in_hunk = None, False
            subject_next = _commit_header(header, line, False, limits)
    if not files:  # no output: no differences; else --stat, --name-only, an error: not a patch
        if counted.n == 0 and exit_code == 0:
            return Compact(family=NAME, kind=KIND, text="[outloop] git diff: no differences", omitted_lines=0)
        return None
    return _render(counted.n, header, files, dropped_files, totals, exit_code, limits)


def _commit_header(header: list[str], line: str, subject_next: bool, limits: Limits) -> bool:
    """Keeps ``git show``'s commit, author, date lines and the subject; says whether the subject is next."""
    if len(header) >= limits.head_lines:
        return False
    if HEADER_KEEP.match(line):
        header.append(clip(line.rstrip(), limits))
        return line.startswith("Date: ") or subject_next
    if subject_next and line.strip():
        header.append(clip(line.rstrip(), limits))
        return False
    return subject_next


def _render(n: int, header: list[str], files: list[_File], dropped: int, totals: list[int], exit_code: int,
            limits: Limits) -> Compact:
    nfiles, added, removed, hunks = totals
    shown = len(header) + sum(1 + len(f.headers) for f in files)
    plural = {"files": "s" * (nfiles != 1), "hunks": "s" * (hunks != 1)}
    head = (f"[outloop] git diff: {nfiles} file{plural['files']} changed, +{added} -{removed} in {hunks} "
            f"hunk{plural['hunks']}; "
            f"{n} lines of output, {max(n - shown, 0)} left out (the hunks' bodies: see the log at the line numbers "
            "given)")
    body = [line for f in files for line in f.render(limits)]
    more = [f"... and {dropped} more files (not listed here; grep '^diff --git' the log)"] if dropped else None
    return Compact(family=NAME, kind=KIND, text=join([head], header, body, more), failures=[],
                   summary_line=None, omitted_lines=max(n - shown, 0))
