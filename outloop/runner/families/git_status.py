"""The git-status family (``git status`` in its long, short and porcelain v1/v2 forms): keeps the branch and state lines
(``On branch main``, ``Your branch is ahead of 'origin/main' by 2 commits.``, a rebase or merge in
progress), every unmerged path (a conflict is a failure), and for the staged, not staged, untracked and
ignored sections their count, their first entries and the rest counted by top-level folder; the closing
line (``no changes added to commit ...``) is the summary. It leaves out git's ``(use "git add" ...)``
hints. Stdlib only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outloop.runner.families.base import STRUCTURED, Compact, Counted, Limits, clip, join
from outloop.runner.families.diag import git_subcommand

NAME = "git-status"
KIND = STRUCTURED

MAX_LIST = 30  # entries listed per section; past this they are counted by top-level folder
MAX_FOLDERS = 1000  # folders counted per section (bounded memory); past this, "other"
SECTIONS = {"Changes to be committed:": "staged", "Changes not staged for commit:": "not staged",
            "Untracked files:": "untracked", "Unmerged paths:": "unmerged", "Ignored files:": "ignored"}
SHORT = re.compile(r"^(?P<xy>[ MADRCUT?!]{2}) (?P<path>.+)$")
# --porcelain=v2: "1 XY sub mH mI mW hH hI path", "2 XY ... Xscore path<TAB>orig", "u XY ... path", "? path"
V2_FIELDS = {"1": 8, "2": 9, "u": 10}  # fields before the path
V2 = re.compile(r"^([12u] [.MADRCUT]{2} |[?!] )")
UNMERGED_XY = {"DD", "AU", "UD", "UA", "DU", "AA", "UU"}
SUMMARY = re.compile(r"^(nothing to commit.*|no changes added to commit.*|nothing added to commit but .*)$")


def detect(argv: list[str]) -> bool:
    return git_subcommand(argv) == "status"


class _Section:
    """One section's entries: the first ``cap`` listed, the rest counted by top-level folder."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: list[str] = []
        self.count = 0
        self.folders: dict[str, int] = {}

    def add(self, entry: str, path: str) -> None:
        self.count += 1
        if len(self.items) < self.cap:
            self.items.append(entry)
            return
        top = path.split("/", 1)[0] + "/" if "/" in path else "(top level)"
        if top in self.folders or len(self.folders) < MAX_FOLDERS:
            self.folders[top] = self.folders.get(top, 0) + 1
        else:
            self.folders["(other)"] = self.folders.get("(other)", 0) + 1

    def lines(self, title: str) -> list[str]:
        out = [f"{title} ({self.count}):", *(f"  {i}" for i in self.items)]
        if self.count > len(self.items):
            top = sorted(self.folders.items(), key=lambda kv: -kv[1])[:10]
            out.append(f"  ... and {self.count - len(self.items)} more: " + ", ".join(f"{k} {v}" for k, v in top))
        return out


def summarise(command: str, lines: Iterable[str], exit_code: int, limits: Limits) -> Compact | None:
    """The branch, the state, each section's count and first entries, every conflict (see the module doc)."""
    counted = Counted(lines)
    sections: dict[str, _Section] = {}
    state: list[str] = []
    summary: str | None = None
    current: str | None = None
    for line in counted:
        if line in SECTIONS:
            current = SECTIONS[line]
            continue
        if line.startswith("\t") and current:
            entry = line.strip()
            _section(sections, current, limits).add(entry, entry.split(":", 1)[-1].strip())
            continue
        if current is None and V2.match(line):
            _v2(sections, line, limits)
            continue
        m = SHORT.match(line)
        if m and current is None and not line.startswith("  "):
            xy, path = m.group("xy"), m.group("path")
            for name in _short_sections(xy):
                _section(sections, name, limits).add(f"{xy} {path}", path.split(" -> ")[-1])
            continue
        if SUMMARY.match(line):
            summary = line.strip()
        elif line.strip() and not line.startswith("  (") and len(state) < limits.head_lines:
            state.append(clip(line.rstrip(), limits))
    if exit_code != 0 and not sections and summary is None:
        return None  # not a repository, a bad option: the generic summariser keeps git's message
    return _render(counted.n, state, sections, summary, exit_code)


def _v2(sections: dict[str, _Section], line: str, limits: Limits) -> None:
    """One ``--porcelain=v2`` entry (its path is the last field; a rename's original follows a tab)."""
    kind = line[0]
    if kind in "?!":
        xy, path = kind * 2, line[2:]
    else:
        xy, path = line[2:4].replace(".", " "), line.split(" ", V2_FIELDS[kind])[-1].split("\t")[0]
    for name in ["unmerged"] if kind == "u" else _short_sections(xy):
        _section(sections, name, limits).add(f"{xy} {path}", path)


def _section(sections: dict[str, _Section], name: str, limits: Limits) -> _Section:
    if name not in sections:
        sections[name] = _Section(limits.max_failures if name == "unmerged" else MAX_LIST)
    return sections[name]


def _short_sections(xy: str) -> list[str]:
    """The sections a short-format ``XY`` code belongs to (a file can be staged and changed again)."""
    if xy in UNMERGED_XY:
        return ["unmerged"]
    if xy == "??":
        return ["untracked"]
    if xy == "!!":
        return ["ignored"]
    return [name for flag, name in ((xy[0], "staged"), (xy[1], "not staged")) if flag != " "]


def _render(n: int, state: list[str], sections: dict[str, _Section], summary: str | None, exit_code: int) -> Compact:
    order = ["unmerged", "staged", "not staged", "untracked", "ignored"]
    counts = ", ".join(f"{sections[s].count} {s}" for s in order if s in sections) or "no changes"
    blocks = [sections[s].lines(s) for s in order if s in sections]
    kept = len(state) + sum(len(sections[s].items) for s in sections) + (1 if summary else 0)
    head = f"[outloop] git status: exit {exit_code}; {counts}; {n} lines of output, {max(n - kept, 0)} left out"
    text = join([head], state, *blocks, [f"summary: {summary}"] if summary else None)
    unmerged = sections.get("unmerged")
    failures = [i.split(":", 1)[-1].strip() if ":" in i else i[3:] for i in unmerged.items] if unmerged else []
    return Compact(family=NAME, kind=KIND, text=text, failures=failures, summary_line=summary,
                   omitted_lines=max(n - kept, 0))
