"""Signatures: every tool call -> ``category:tool:target`` plus a side-effect class.

``signature_of(tool_name, tool_input)`` is pure and stable: the same input always yields the same
signature under one :data:`SIGNATURE_VERSION`. When the rules change, the version goes up and stored
signatures are recomputed from the stored tool inputs (:func:`recompute`). Bash commands go through
the shell analysis (:mod:`agents.commands`); the other tools map onto the same vocabulary.
See ``docs/signatures.md`` for the categories, side-effect classes, target masking and version policy.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from outloop.agents.categories import CATEGORIES, DES, NET, RO, SIDE_EFFECTS, UNK, WR, path_target, word_target
from outloop.agents.commands import Analyzer
from outloop.streams.redact import redact_text as redact  # sample commands are redacted with the project's one redactor

SIGNATURE_VERSION = 2
"""Bumped whenever a rule change can change any signature; stored rows keep the version they were
computed with, and :func:`recompute` brings them up to date."""


@dataclass(frozen=True, slots=True)
class Signature:
    signature: str
    category: str
    tool: str
    target: str
    side_effect: str
    version: int = SIGNATURE_VERSION

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


__all__ = [
    "SIGNATURE_VERSION",
    "Signature",
    "SignatureCache",
    "CACHE",
    "signature_of",
    "command_signature",
    "recompute",
    "redact",
    "CATEGORIES",
    "SIDE_EFFECTS",
]
