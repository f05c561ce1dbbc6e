"""The vocabulary of signatures and the small helpers every program rule uses: verdicts, side-effect
ranks, option skipping, and masking of targets (paths, numbers, hashes, temp names).

Categories (shell): test, build, lint, typecheck, format, install, vcs, search, read, edit, run, env,
other; non-shell tools add web, plan, delegate and mcp. Side effects, from safest to worst:
read-only < writes files < network < unknown < destructive; a compound command takes the worst of its
steps. ``docs/signatures.md`` states every rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def words(text: str) -> list[str]:
    """A whitespace-separated word list (keeps long tables readable)."""
    return text.split()


SHELL_CATEGORIES = (
    "test",
    "build",
    "lint",
    "typecheck",
    "format",
    "install",
    "vcs",
    "search",
    "read",
    "edit",
    "run",
    "env",
    "other",
)
TOOL_CATEGORIES = ("web", "plan", "delegate", "mcp")
CATEGORIES = SHELL_CATEGORIES + TOOL_CATEGORIES

RO, WR, NET, UNK, DES = "read-only", "writes files", "network", "unknown", "destructive"
SIDE_EFFECTS = (RO, WR, NET, UNK, DES)
EFFECT_RANK = {e: i for i, e in enumerate(SIDE_EFFECTS)}

# What a category does by default, when the program rule says nothing more precise.
DEFAULT_EFFECT = {
    "test": WR,
    "build": WR,
    "lint": WR,
    "typecheck": RO,
    "format": WR,
    "install": NET,
    "vcs": WR,
    "search": RO,
    "read": RO,
    "edit": WR,
    "run": UNK,
    "env": RO,
    "other": UNK,
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classification of one simple command (or of a whole command line, once selected).

    ``role`` drives the compound rules: ``noise`` (cd, echo, sleep, export: never what the agent is
    after unless nothing else is there), ``look`` (read and search: confirmations when they trail an
    action), ``filter`` (a pipe consumer such as grep/head/jq that keeps the producer's category) and
    ``action`` (everything else)."""

    category: str
    tool: str
    target: str = "*"
    effect: str = ""
    role: str = "action"

    def with_effect(self, effect: str) -> Verdict:
        return Verdict(self.category, self.tool, self.target, effect, self.role)


def verdict(
    category: str, tool: str, target: str = "*", effect: str | None = None, role: str | None = None
) -> Verdict:
    if role is None:
        role = "look" if category in ("read", "search") else "action"
    return Verdict(category, tool, target or "*", effect or DEFAULT_EFFECT.get(category, UNK), role)


def worst(*effects: str) -> str:
    return max((e for e in effects if e), key=EFFECT_RANK.__getitem__, default=RO)


def positionals(
    args: Sequence[str], takes_value: Iterable[str] = (), stop_at_dashdash: bool = False
) -> list[str]:
    """Arguments that are not options. Options named in ``takes_value`` consume the next argument
    (unless written ``--opt=value``)."""
    values = set(takes_value)
    out: list[str] = []
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a == "--":
            if stop_at_dashdash:
                break
            out.extend(args[i + 1 :])
            break
        if a.startswith("-") and len(a) > 1:
            if a in values:
                skip = True
            continue
        out.append(a)
    return out


def option_value(args: Sequence[str], *names: str) -> str | None:
    for i, a in enumerate(args):
        for name in names:
            if a == name and i + 1 < len(args):
                return args[i + 1]
            if name.startswith("--") and a.startswith(name + "="):
                return a[len(name) + 1 :]
    return None


# ---- masking ---------------------------------------------------------------------------------------

_DIGIT = re.compile(r"\d")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HASH = re.compile(
    r"(?<![A-Za-z0-9])(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}(?![A-Za-z0-9])"
)
_LONGNUM = re.compile(r"\d{5,}")
_NUMERIC = re.compile(r"^[\d.:_+-]*\d[\d.:_+-]*$")
_TEMPNAME = re.compile(
    r"^(?:(?:tmp|temp)[._-][\w.-]+|tmp(?=[a-z0-9_]*\d)[a-z0-9_]{6,}[\w.-]*|tmpclaude[\w.-]*)$", re.I
)
_TEMPDIRS = ("/tmp/", "/var/tmp/", "/private/tmp/", "/private/var/folders/", "/var/folders/", "/dev/shm/")
MARKERS = frozenset(
    words(
        "src lib libs tests test testing spec specs __tests__ internal cmd pkg packages crates docs "
        "doc scripts include .github examples benches benchmarks"
    )
)
_VAR_PREFIX = re.compile(r"^(?:\$\{?(?:HOME|PWD|TMPDIR|TMP|TEMP|USERPROFILE|CLAUDE_PROJECT_DIR)\}?|~)(?=/|$)")


def mask_text(s: str) -> str:
    """Mask UUIDs, hashes and long numbers inside a target word."""
    if _DIGIT.search(s):
        s = _UUID.sub("<uuid>", s)
        s = _HASH.sub("<hash>", s)
        s = _LONGNUM.sub("<n>", s)
    return s


def mask_component(c: str) -> str:
    if "$" in c:
        return re.sub(r"\$\{?\w+\}?", "<var>", c)
    if _NUMERIC.match(c):
        return "<n>"
    if _TEMPNAME.match(c):
        return "<tmp>"
    return mask_text(c)


def path_target(path: str) -> str:
    """A stable, short, machine-independent form of a path argument.

    Backslashes become slashes; ``~``, ``$HOME``, drive letters and absolute prefixes go; ``.`` and
    ``..`` are resolved lexically. What is left starts at the first repo-root marker (src, lib, tests,
    internal, cmd, pkg, docs, scripts, ...) found among the last five components, else keeps the last
    three components. Paths in temporary folders get the same treatment below the folder and its random
    names, behind ``<tmp>/``: ``/tmp/tmpab12/proj/src/app.py`` is ``<tmp>/src/app.py``, never the same as
    ``<tmp>/lib/app.py``. Numbers, hashes, UUIDs and temp names are masked."""
    p = path.strip().replace("\\", "/")
    if not p:
        return "*"
    if len(p) > 1 and p[1] == ":" and p[0].isalpha():
        p = p[2:] or "/"
    p = _VAR_PREFIX.sub("", p)
    temp = _under_temp(p)
    parts = _resolve(temp if temp is not None else p.split("/"))
    if temp is not None:
        encoded = [i for i, c in enumerate(parts[:-1]) if _ENCODED_PATH.match(c)]
        if encoded:
            parts = parts[encoded[-1] + 1 :]  # claude/-Users-bob-proj/tasks/x: the machine's path, encoded
        while len(parts) > 1 and (_TEMPDIR_NAME.match(parts[0]) or mask_component(parts[0]) in ("<tmp>", "<n>")):
            parts.pop(0)  # tmpab12cd34, pytest-of-alice/pytest-37, 1234: the temporary folder's own names
        return "/".join(["<tmp>", *(mask_component(c) for c in _project_part(parts))])
    if not parts:
        return "."
    return "/".join(mask_component(c) for c in _project_part(parts))


_ENCODED_PATH = re.compile(r"^(?:-|[A-Za-z]--)(?:Users|home|root|private|var|tmp|opt|srv|mnt|workspace)(?:-|$)")
_TEMPDIR_NAME = re.compile(r"^(?:pytest-of-.*|pytest-\d+)$")


def _under_temp(p: str) -> list[str] | None:
    """The components below the temporary folder holding ``p`` (macOS ``/var/folders/xy/<id>/T`` and
    Windows ``AppData/Local/Temp`` included), or None when ``p`` is not in one."""
    low = "/" + p.lower().lstrip("/") + ("/" if not p.endswith("/") else "")
    for prefix in _TEMPDIRS:
        if low.startswith(prefix):
            skip = prefix.count("/") - 1 + (3 if prefix.endswith("/var/folders/") else 0)  # xy/<id>/T
            return p.lstrip("/").split("/")[skip:]
    at = low.find("/appdata/local/temp/")
    if at >= 0:
        return ("/" + p.lstrip("/"))[at + len("/appdata/local/temp/") :].split("/")
    return None


def _resolve(components: list[str]) -> list[str]:
    parts: list[str] = []
    for c in components:
        if c in ("", "."):
            continue
        if c == ".." and parts and parts[-1] != "..":
            parts.pop()
            continue
        parts.append(c)
    while parts and parts[0] == "..":
        parts.pop(0)
    return parts


def _project_part(parts: list[str]) -> list[str]:
    """From the first repo-root marker among the last five components, else the last three."""
    for i in range(max(0, len(parts) - 5), len(parts)):
        if parts[i] in MARKERS:
            return parts[i:]
    return parts[-3:]


def paths_target(paths: Sequence[str]) -> str:
    """One path: its target. Several: their longest common directory, else ``*`` (argument lists of
    any length collapse to one target)."""
    if not paths:
        return "*"
    targets = sorted({path_target(p.split("::", 1)[0]) for p in paths})
    if len(targets) == 1:
        return targets[0]
    split = [t.split("/") for t in targets]
    common: list[str] = []
    for comps in zip(*split, strict=False):
        if len(set(comps)) != 1:
            break
        common.append(comps[0])
    if len(common) == min(len(s) for s in split):  # one is a prefix of the others: a directory
        return "/".join(common)
    return "/".join(common) if common and common != ["<tmp>"] else "*"


_WORD = re.compile(r"^[A-Za-z][\w.:+-]*$")
_FILELIKE = re.compile(r"\.(?:py|js|ts|tsx|jsx|go|rs|java|rb|sh|json|ya?ml|toml|md|txt|c|h|cpp|cfg|ini|log)$")


def word_target(word: str | None) -> str:
    """A subcommand-like word (``doctor``, ``issue``, ``build:prod``) kept as it is; anything else
    (numbers, paths, quoted prose) is masked to ``*``."""
    if not word or len(word) > 40 or not _WORD.match(word) or _FILELIKE.search(word):
        return "*"
    return mask_text(word)


def looks_like_path(a: str) -> bool:
    return "/" in a or "\\" in a or bool(_FILELIKE.search(a)) or a in (".", "..") or a.startswith("~")


def basename(word: str) -> str:
    b = word.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    low = b.lower()
    if low.endswith((".exe", ".cmd", ".bat")):
        b = b[:-4]
    return b
