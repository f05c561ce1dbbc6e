"""Signatures: every tool call -> ``category:tool:target`` plus a side-effect class.

``signature_of(tool_name, tool_input)`` is pure and stable: the same input always yields the same
signature under one :data:`SIGNATURE_VERSION`. When the rules change, the version goes up and stored
signatures are recomputed from the stored tool inputs (:func:`recompute`). Bash commands go through
the shell analysis (:mod:`agents.commands`); the other tools map onto the same vocabulary.
See ``docs/signatures.md`` for the categories, side-effect classes, target masking and version policy.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outloop.agents import programs, ruletable
from outloop.agents.categories import CATEGORIES, DES, NET, RO, SIDE_EFFECTS, UNK, WR, path_target, word_target
from outloop.agents.commands import Analyzer
from outloop.agents.ruletable import RulesError, RuleTable
from outloop.streams.redact import redact_text as redact  # sample commands are redacted with the project's one redactor

log = logging.getLogger(__name__)

CODE_VERSION = 3
"""Bumped whenever a change to the analysis code (not the rule table) can change any signature.
Version 2 read unterminated here-documents as bash does; version 3 moved the rules into the table and
keeps the structure of paths under temporary folders."""


@dataclass(frozen=True, slots=True)
class Signature:
    signature: str
    category: str
    tool: str
    target: str
    side_effect: str
    version: int = 0  # SIGNATURE_VERSION when made by make()

    @property
    def routable(self) -> bool:
        """Later routing must never act on destructive or unknown commands."""
        return self.side_effect not in (DES, UNK)


def make(category: str, tool: str, target: str, side_effect: str) -> Signature:
    tool = _clean(tool) or "unknown"
    target = (target or "*").replace("\n", " ").replace(" ", "_")[:120]
    return Signature(f"{category}:{tool}:{target}", category, tool, target, side_effect, SIGNATURE_VERSION)


def _clean(tool: str) -> str:
    return re.sub(r"[:\s]+", "_", tool.strip())[:60]


# ---- the parse cache -----------------------------------------------------------------------------


class SignatureCache:
    """A bounded LRU of command text -> Signature. ``enabled=False`` turns it off (benchmarks, tests)."""

    def __init__(self, maxsize: int = 8192, enabled: bool = True) -> None:
        self.maxsize = maxsize
        self.enabled = enabled
        self._data: OrderedDict[str, Signature] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Signature | None:
        if not self.enabled:
            return None
        sig = self._data.get(key)
        if sig is None:
            self.misses += 1
            return None
        self.hits += 1
        self._data.move_to_end(key)
        return sig

    def put(self, key: str, sig: Signature) -> None:
        if not self.enabled:
            return
        self._data[key] = sig
        if len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()
        self.hits = self.misses = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def __len__(self) -> int:
        return len(self._data)


CACHE = SignatureCache()
_FAST = Analyzer(fast=True)
_FULL = Analyzer(fast=False)


def rules_version(table: RuleTable) -> int:
    """The signature version of ``table`` under this code: ``CODE_VERSION`` millions plus six digits of
    the table's digest (built-in and user rules), so any rule change gives another version."""
    return CODE_VERSION * 1_000_000 + int(table.digest[:12], 16) % 1_000_000


def check_examples(table: RuleTable, *, user_only: bool = False) -> list[str]:
    """Every example of ``table`` (of the user's entries only with ``user_only``) whose signature or side
    effect differs from what it expects, as ``command: expected -> got`` lines. Uses the rules in force."""
    failures = []
    for p in table.programs:
        if user_only and p.source == "builtin":
            continue
        for ex in p.examples:
            got = command_signature(ex.run, cache=None)
            if (got.signature, got.side_effect) != (ex.sig, ex.effect):
                failures.append(f"{ex.run!r}: expected {ex.sig} ({ex.effect}), got {got.signature} ({got.side_effect})")
    return failures


def use_rules(user: Path | None) -> RuleTable:
    """Put the built-in rules with ``user``'s entries on top in force, after checking them: the file's
    shape (:mod:`agents.ruletable`), its handler names and its examples. On any problem the built-in
    rules stay in force and :class:`RulesError` says why. Signatures already cached are dropped."""
    table = ruletable.load(user, programs.BUILTIN)
    CACHE.clear()
    programs.install(table)
    failures = check_examples(table, user_only=True) if user is not None else []
    if failures:
        programs.install(programs.BUILTIN)
        raise RulesError(f"{user}: {len(failures)} example(s) do not hold:\n" + "\n".join(failures))
    return table


def _startup_rules() -> RuleTable:
    """The rules in force at import: the built-in table plus the user's file when there is one. A user
    file that does not check is logged and left out (classification fails open to the built-in rules)."""
    try:
        user = ruletable.user_rules_path()
        return use_rules(user)
    except (RulesError, OSError) as e:
        log.warning("outloop: user command rules ignored: %s", e)
        return use_rules(None)


def command_signature(command: str, *, cache: SignatureCache | None = CACHE, fast: bool = True) -> Signature:
    """The signature of a shell command string."""
    if cache is not None:
        hit = cache.get(command)
        if hit is not None:
            return hit
    v = (_FAST if fast else _FULL).command(command)
    sig = make(v.category, v.tool, v.target, v.effect or UNK)
    if cache is not None:
        cache.put(command, sig)
    return sig


# ---- non-shell tools ---------------------------------------------------------------------------
_FILE_READ = {"Read", "NotebookRead"}
_FILE_EDIT = {"Edit", "MultiEdit", "Write", "NotebookEdit"}
_WEB = {"WebFetch": NET, "WebSearch": NET}
_PLAN = {
    "TodoWrite",
    "TodoRead",
    "ExitPlanMode",
    "EnterPlanMode",
    "AskUserQuestion",
    "Skill",
    "TaskCreate",
    "TaskUpdate",
    "TaskList",
    "TaskGet",
}
_DELEGATE = {"Task", "Agent", "TaskOutput", "AgentOutputTool"}
_SHELL_CTL = {"BashOutput", "KillBash", "KillShell"}


def _path_of(tool_input: Mapping[str, Any], *keys: str) -> str | None:
    for k in keys:
        v = tool_input.get(k)
        if isinstance(v, str) and v:
            return v
    return None


def signature_of(
    tool_name: str,
    tool_input: Mapping[str, Any] | None,
    *,
    cache: SignatureCache | None = CACHE,
    fast: bool = True,
) -> Signature:
    """The signature of one tool call. Never raises: odd input becomes ``other``."""
    name = tool_name or ""
    inp: Mapping[str, Any] = tool_input if isinstance(tool_input, Mapping) else {}
    if name == "Bash":
        cmd = inp.get("command")
        if isinstance(cmd, str) and cmd.strip():
            return command_signature(cmd, cache=cache, fast=fast)
        return make("other", "bash", "*", UNK)
    if name in _FILE_READ:
        return make("read", "file", _target(_path_of(inp, "file_path", "notebook_path", "path")), RO)
    if name in _FILE_EDIT:
        tool = "notebook" if name.startswith("Notebook") else "file"
        return make("edit", tool, _target(_path_of(inp, "file_path", "notebook_path", "path")), WR)
    if name == "Grep":
        return make("search", "grep", _target(_path_of(inp, "path")), RO)
    if name == "Glob":
        return make("search", "glob", _target(_path_of(inp, "path")), RO)
    if name == "LS":
        return make("search", "ls", _target(_path_of(inp, "path")), RO)
    if name in _WEB:
        if name == "WebFetch":
            url = _path_of(inp, "url") or ""
            host = re.sub(r"^[a-z]+://(?:[^@/]*@)?", "", url).split("/", 1)[0].split(":", 1)[0].lower()
            return make("web", "fetch", host or "*", NET)
        return make("web", "search", "*", NET)
    if name in _PLAN:
        return make("plan", name.lower(), "*", RO)
    if name in _DELEGATE:
        sub = _path_of(inp, "subagent_type")
        return make("delegate", name.lower(), word_target(sub) if sub else "*", UNK)
    if name in _SHELL_CTL:
        return make("run", name.lower(), "*", RO if name == "BashOutput" else DES)
    if name.startswith("mcp__"):
        parts = name.split("__")
        server = parts[1] if len(parts) > 1 else "*"
        action = "__".join(parts[2:]) if len(parts) > 2 else "*"
        return make("mcp", server, action, UNK)
    return make("other", name.lower() or "unknown", "*", UNK)


def _target(path: str | None) -> str:
    return path_target(path) if path else "*"


def recompute(
    rows: Iterable[Mapping[str, Any]], *, cache: SignatureCache | None = None
) -> Iterator[dict[str, Any]]:
    """Rows with ``tool_name``/``tool_input`` (and maybe ``signature_version``) -> rows whose signature
    fields are those of the current version. Rows already at this version pass unchanged."""
    for row in rows:
        if row.get("signature_version") == SIGNATURE_VERSION and row.get("signature"):
            yield dict(row)
            continue
        sig = signature_of(str(row.get("tool_name") or ""), row.get("tool_input"), cache=cache)
        yield {
            **row,
            "signature": sig.signature,
            "category": sig.category,
            "side_effect": sig.side_effect,
            "signature_version": sig.version,
        }


SIGNATURE_VERSION = 0  # while the rules are checked at import (their signatures are compared, never kept)
RULES_TABLE = _startup_rules()
SIGNATURE_VERSION = rules_version(RULES_TABLE)
"""Changes whenever a rule change can change any signature (the code's version or the rule table's
content, user rules included); stored rows keep the version they were computed with, and
:func:`recompute` brings them up to date."""

__all__ = [
    "SIGNATURE_VERSION",
    "RULES_TABLE",
    "Signature",
    "SignatureCache",
    "CACHE",
    "signature_of",
    "command_signature",
    "recompute",
    "use_rules",
    "check_examples",
    "redact",
    "CATEGORIES",
    "SIDE_EFFECTS",
]
