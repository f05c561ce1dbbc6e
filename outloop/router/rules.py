"""Routing rules as data: the built-in rules (``rules.toml`` beside this module) and the user's file.

A rule names the signatures (glob patterns on ``category:tool:target``) or categories it takes, the
runner family that summarises their output, its kind (``structured`` for a family summariser,
``generic`` for the generic compactor), its mode and its exclusions. Every built-in rule ships in
``shadow``. The user file (``$OUTLOOP_HOME/routes.json``, or ``OUTLOOP_ROUTES``) is JSON, so that
``outloop routes mode|exclude`` can rewrite it::

    {"rules": {"pytest": {"mode": "enforce", "threshold": 60}},   # override fields of a rule
     "add": [{"name": "tox", "family": "generic", "kind": "generic", "signatures": ["test:tox:*"]}],
     "exclude": ["test:pytest:tests/slow"],                          # signatures never routed
     "loop_guard": 3,                                                # the Nth identical run is denied
     "guard_mode": "enforce",                                        # the loop guard's mode (shadow default)
     "rewrite_permission": "allow",                                  # or "ask": prompt on rewrites
     "cache_note": true, "cache_note_min_tokens": 20000}             # cache-break note (off by default)

Loading checks everything and fails with the reason: an unknown family, mode or field, a duplicate
name, a threshold outside 0-100. A rule's ``version`` is a digest of its effective fields, so a
decision records exactly which rule text made it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

MODES = ("shadow", "advise", "enforce")
KINDS = ("structured", "generic")
FAMILIES = ("pytest", "unittest", "go-test", "cargo-test", "js-test", "swift-test", "swift-build", "cargo-build",
            "go-build", "tsc", "cc", "make", "ruff", "eslint", "mypy", "pip", "npm-install", "apt", "git-status",
            "git-diff", "git-log", "generic")
GUARD = "loop-guard"  # the name decisions of the loop guard carry, and its mode's name in ``outloop routes mode``
REREAD = "unchanged-reread"  # the unchanged re-read rule's name (agents.rereads), and its mode's name
DEFAULT_THRESHOLD = 70
DEFAULT_LOOP_GUARD = 3
DEFAULT_PROMOTE_AT = 0.95  # measured fidelity over enough shadow decisions that suggests a promotion
DEFAULT_MIN_DECISIONS = 50  # decisions with a measured fidelity before it suggests or demotes anything
BUILTIN = Path(__file__).with_name("rules.toml")
_EDITABLE = {"mode", "threshold", "exclude", "promote_at", "min_decisions", "signatures", "categories", "family",
             "kind", "examples", "description"}


class RulesError(ValueError):
    """A rules file that cannot be used, with the reason."""


@dataclass(frozen=True)
class Rule:
    name: str
    family: str
    kind: str = "structured"
    mode: str = "shadow"
    signatures: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    threshold: int = DEFAULT_THRESHOLD
    promote_at: float = DEFAULT_PROMOTE_AT
    min_decisions: int = DEFAULT_MIN_DECISIONS
    examples: tuple[str, ...] = ()
    description: str = ""
    builtin: bool = True

    @property
    def version(self) -> str:
        """A digest of the fields that decide (not of the examples or the description)."""
        body = json.dumps([self.name, self.family, self.kind, self.mode, self.signatures, self.categories,
                           self.exclude, self.threshold], separators=(",", ":"))
        return hashlib.blake2b(body.encode(), digest_size=6).hexdigest()

    def takes(self, signature: str, category: str) -> bool:
        """Whether this rule covers the signature (its exclusions aside)."""
        if any(fnmatch.fnmatchcase(signature, p) for p in self.exclude):
            return False
        return category in self.categories or any(fnmatch.fnmatchcase(signature, p) for p in self.signatures)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = self.version
        return d


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    exclude: tuple[str, ...] = ()
    loop_guard: int = DEFAULT_LOOP_GUARD
    rewrite_permission: str = "allow"
    guard_mode: str = "shadow"  # the loop guard's and the wait advice's mode
    source: str = ""  # the user file it was loaded with, if any
    by_name: dict[str, Rule] = field(default_factory=dict, compare=False, repr=False)
    reread_mode: str = "shadow"  # the unchanged re-read rule's mode
    cache_note: bool = False  # add a one-line note after an idle cache break (agents.cachenote.idle_break)
    cache_note_min_tokens: int = 20_000  # ... of a context at least this large

    def __post_init__(self) -> None:
        self.by_name.update({r.name: r for r in self.rules})

    def excluded(self, signature: str) -> bool:
        return any(fnmatch.fnmatchcase(signature, p) for p in self.exclude)

    def matching(self, signature: str, category: str) -> list[Rule]:
        """The rules that take this signature, in priority order."""
        return [r for r in self.rules if r.takes(signature, category)]

    @property
    def version(self) -> str:
        body = json.dumps([[r.name, r.version] for r in self.rules] + [list(self.exclude), self.loop_guard,
                                                                         self.rewrite_permission, self.guard_mode]
                          + ([self.reread_mode] if self.reread_mode != "shadow" else [])
                          + ([self.cache_note_min_tokens] if self.cache_note else []))
        return hashlib.blake2b(body.encode(), digest_size=6).hexdigest()


def _rule(raw: dict[str, Any], builtin: bool) -> Rule:
    unknown = set(raw) - _EDITABLE - {"name"}
    if unknown:
        raise RulesError(f"rule {raw.get('name')!r}: unknown fields {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise RulesError(f"a rule needs a name without spaces, not {name!r}")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        rule = Rule(builtin=builtin, **values)
    except TypeError as exc:
        raise RulesError(f"rule {name!r}: {exc}") from None
    return check(rule)


def check(rule: Rule) -> Rule:
    """The rule if it is usable, else :class:`RulesError` saying why."""
    where = f"rule {rule.name!r}"
    if rule.family not in FAMILIES:
        raise RulesError(f"{where}: unknown family {rule.family!r} (one of {', '.join(FAMILIES)})")
    if rule.kind not in KINDS:
        raise RulesError(f"{where}: kind must be one of {KINDS}, not {rule.kind!r}")
    if rule.mode not in MODES:
        raise RulesError(f"{where}: mode must be one of {MODES}, not {rule.mode!r}")
    if not (rule.signatures or rule.categories):
        raise RulesError(f"{where}: needs signatures or categories")
    if not isinstance(rule.threshold, int) or not 0 <= rule.threshold <= 100:
        raise RulesError(f"{where}: threshold must be an integer 0-100, not {rule.threshold!r}")
    if not 0.0 <= float(rule.promote_at) <= 1.0 or int(rule.min_decisions) < 1:
        raise RulesError(f"{where}: promote_at must be 0-1 and min_decisions at least 1")
    for group in (rule.signatures, rule.categories, rule.exclude, rule.examples):
        if not all(isinstance(s, str) and s for s in group):
            raise RulesError(f"{where}: lists must hold non-empty strings")
    return rule


def builtin_rules(path: Path = BUILTIN) -> list[Rule]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    rules = [_rule(r, True) for r in data.get("rule", [])]
    _unique(rules)
    return rules


def _unique(rules: list[Rule]) -> None:
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise RulesError(f"rule {r.name!r} is defined twice")
        seen.add(r.name)


def user_path(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """``OUTLOOP_ROUTES``, else ``$OUTLOOP_HOME/routes.json`` (``~/.outloop/routes.json``)."""
    env = os.environ if environ is None else environ
    if env.get("OUTLOOP_ROUTES"):
        return Path(os.path.expanduser(env["OUTLOOP_ROUTES"]))
    return Path(os.path.expanduser(env.get("OUTLOOP_HOME") or "~/.outloop")) / "routes.json"


def read_user(path: Path) -> dict[str, Any]:
    """The user file's content ({} when there is none)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise RulesError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RulesError(f"{path}: must hold a JSON object")
    return data


def build(user: dict[str, Any], base: list[Rule] | None = None, source: str = "") -> RuleSet:
    """The effective rule set: the built-in rules with the user's overrides, then the user's own
    rules (before the generic rule, so that they win over it)."""
    unknown = set(user) - {"rules", "add", "exclude", "loop_guard", "guard_mode", "rewrite_permission",
                           "reread_mode", "cache_note", "cache_note_min_tokens"}
    if unknown:
        raise RulesError(f"{source or 'the rules'}: unknown keys {sorted(unknown)}")
    rules = list(builtin_rules() if base is None else base)
    names = {r.name: i for i, r in enumerate(rules)}
    for name, fields in (user.get("rules") or {}).items():
        if name not in names:
            raise RulesError(f"override of unknown rule {name!r}")
        if not isinstance(fields, dict) or set(fields) - _EDITABLE:
            raise RulesError(f"override of {name!r}: fields must be among {sorted(_EDITABLE)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        rules[names[name]] = check(replace(rules[names[name]], **values))
    added = [_rule(r, False) for r in user.get("add") or []]
    generic = [r for r in rules if r.kind == "generic"]
    rules = [r for r in rules if r.kind != "generic"] + added + generic
    _unique(rules)
    exclude = user.get("exclude") or []
    guard = user.get("loop_guard", DEFAULT_LOOP_GUARD)
    permission = user.get("rewrite_permission", "allow")
    if not isinstance(exclude, list) or not all(isinstance(s, str) and s for s in exclude):
        raise RulesError("exclude must be a list of signature patterns")
    if not isinstance(guard, int) or guard < 0:
        raise RulesError("loop_guard must be a whole number (0 turns the loop guard off)")
    if permission not in ("allow", "ask"):
        raise RulesError("rewrite_permission must be 'allow' or 'ask'")
    guard_mode = user.get("guard_mode", "shadow")
    if guard_mode not in MODES:
        raise RulesError(f"guard_mode must be one of {MODES}")
    reread_mode = user.get("reread_mode", "shadow")
    if reread_mode not in MODES:
        raise RulesError(f"reread_mode must be one of {MODES}")
    note, note_min = user.get("cache_note", False), user.get("cache_note_min_tokens", 20_000)
    if not isinstance(note, bool):
        raise RulesError("cache_note must be true or false")
    if not isinstance(note_min, int) or isinstance(note_min, bool) or note_min < 0:
        raise RulesError("cache_note_min_tokens must be a whole number of tokens")
    return RuleSet(tuple(rules), tuple(exclude), guard, permission, guard_mode, source, reread_mode=reread_mode,
                   cache_note=note, cache_note_min_tokens=note_min)


def load(path: Path | None = None) -> RuleSet:
    path = user_path() if path is None else path
    return build(read_user(path), source=str(path))


def write_user(path: Path, data: dict[str, Any]) -> None:
    """Replace the user file atomically (checked first: a file that would not load is not written)."""
    build(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def set_mode(path: Path, rule: str, mode: str) -> dict[str, Any]:
    """Set a rule's mode in the user file (``loop-guard``: the loop guard's and wait advice's;
    ``unchanged-reread``: the unchanged re-read rule's)."""
    data = read_user(path)
    if rule == GUARD:
        data["guard_mode"] = mode
    elif rule == REREAD:
        data["reread_mode"] = mode
    else:
        data.setdefault("rules", {}).setdefault(rule, {})["mode"] = mode
    write_user(path, data)
    return data


def add_exclusion(path: Path, signature: str) -> dict[str, Any]:
    data = read_user(path)
    exclude = data.setdefault("exclude", [])
    if signature not in exclude:
        exclude.append(signature)
    write_user(path, data)
    return data


def suggestion(rule: Rule, decisions: int, fidelity: float | None) -> str | None:
    """``promote`` (a rule not yet enforced whose measured fidelity over at least ``min_decisions``
    decisions reaches ``promote_at``), ``demote`` (an advised or enforced rule that fell below it:
    the router treats it as shadow), else None. Pure."""
    if fidelity is None or decisions < rule.min_decisions:
        return None
    if fidelity < rule.promote_at:
        return "demote" if rule.mode != "shadow" else None
    return "promote" if rule.mode != "enforce" else None


def effective_mode(rule: Rule, decisions: int, fidelity: float | None) -> str:
    """The mode the router applies: the rule's, or shadow once it is demoted by its fidelity."""
    return "shadow" if suggestion(rule, decisions, fidelity) == "demote" else rule.mode
