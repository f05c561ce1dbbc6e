"""The command rule table: which category, tool, target and side effect each program gets, as data.

The table ships with the package (``agents/rules/commands.json``); a user can add or override entries in
a file of their own (``OUTLOOP_RULES``, else ``$OUTLOOP_HOME/rules.toml`` or ``rules.json`` when present).
Every entry names the programs it covers and either declares the rule (``category``, ``effect``,
``target``, ``values``, ``subcommands``) or names a ``handler`` (a small function registered by name in
:data:`agents.programs.HANDLERS`) for the few programs whose rule needs code. Every entry carries at
least one example (a command, its expected signature and side-effect class); the examples are the
table's tests.

Loading is pure and quick (one ``json.loads`` and a pass over the entries): the result is a frozen
:class:`RuleTable`. Load-time checks fail loudly with :class:`RulesError`: an unknown field, category,
side effect or target kind, a name covered twice within one file, an entry without examples. A user
entry replaces the built-in rule of every name it lists (that is what overriding means); names it does
not list keep their built-in rule. The table's ``digest`` (a hash of the built-in file and of the user
file in use) feeds ``SIGNATURE_VERSION``, so stored signatures are recomputed when the rules change.
See ``docs/signatures.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

BUILTIN = Path(__file__).resolve().parent / "rules" / "commands.json"
CATEGORIES = frozenset(
    ("test", "build", "lint", "typecheck", "format", "install", "vcs", "search", "read", "edit", "run", "env", "other")
)
EFFECTS = frozenset(("read-only", "writes files", "network", "unknown", "destructive"))
ROLES = frozenset(("noise", "look", "filter", "action"))
TARGETS = frozenset(("paths", "reads", "files", "word", "subcommand", "first", "none"))
"""How a declared rule finds its target (literal targets are written ``=text``):

* ``paths``: the positional arguments as paths (several collapse to their common directory);
* ``reads``: the same, without bare numbers and ``]`` (``head -5 f``, ``test -f x ]``);
* ``files``: only the positionals that look like paths (``sort -k2 data.csv``);
* ``word``: the first positional as a word (``build``, ``lint``), else ``*``;
* ``subcommand``: the first positional, plus a second when it is a common verb (``task-edit``);
* ``first``: the first argument as written; ``none``: ``*``."""
ENTRY_FIELDS = frozenset(
    (
        *("names", "category", "effect", "role", "target", "values", "skip", "tool", "match", "subcommands"),
        *("handler", "examples", "internal", "note"),
    )
)
SUB_FIELDS = frozenset(("category", "effect", "target", "tool"))


class RulesError(ValueError):
    """A rule file that cannot be used: the message says which file, which entry and why."""


class Example(NamedTuple):
    run: str  # a shell command
    sig: str  # its expected signature
    effect: str  # its expected side-effect class


class SubRule(NamedTuple):
    """What a subcommand changes in its program's rule (unset fields keep the program's)."""

    category: str | None = None
    effect: str | None = None
    target: str | None = None
    tool: str | None = None


@dataclass(frozen=True, slots=True)
class ProgramRule:
    names: tuple[str, ...]
    category: str | None = None
    effect: str | None = None  # None: the category's default (see agents.categories.DEFAULT_EFFECT)
    role: str | None = None
    target: str = "paths"
    values: frozenset[str] = frozenset()  # options that take a value
    skip: int = 0  # leading positionals that are not targets (a pattern, a jq filter)
    tool: str | None = None  # the tool in the signature; None: the program name as typed
    match: str = "first"  # subcommands match the first positional, or "any" argument
    subcommands: Mapping[str, SubRule] = field(default_factory=lambda: MappingProxyType({}))
    handler: str | None = None
    examples: tuple[Example, ...] = ()
    internal: bool = False  # names only the analyser produces (``uv-install``): not typed by anyone
    source: str = "builtin"


@dataclass(frozen=True, slots=True)
class RuleTable:
    programs: tuple[ProgramRule, ...]
    by_name: Mapping[str, ProgramRule]
    filters: frozenset[str]  # pipe consumers that keep the producer's category (grep, head, jq, ...)
    digest: str  # sha256 over the built-in file and the user file in use
    user_path: str | None = None


def _fail(source: str, where: str, why: str) -> RulesError:
    return RulesError(f"{source}: {where}: {why}")


def _strings(value: Any, source: str, where: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, where, f"{field} must be a list of non-empty strings")
    return tuple(value)


def _check_target(target: Any, source: str, where: str) -> str:
    if not isinstance(target, str) or not (target in TARGETS or (target.startswith("=") and len(target) > 1)):
        raise _fail(source, where, f"target {target!r} is not one of {sorted(TARGETS)} or =literal")
    return target


def _check_common(d: Mapping[str, Any], source: str, where: str) -> None:
    if d.get("category") is not None and d["category"] not in CATEGORIES:
        raise _fail(source, where, f"unknown category {d['category']!r}")
    if d.get("effect") is not None and d["effect"] not in EFFECTS:
        raise _fail(source, where, f"unknown side effect {d['effect']!r}")
    if d.get("target") is not None:
        _check_target(d["target"], source, where)


def _sub(d: Any, source: str, where: str) -> SubRule:
    if isinstance(d, str):
        d = {"category": d}
    if not isinstance(d, dict) or set(d) - SUB_FIELDS:
        raise _fail(source, where, f"a subcommand is a category or a table of {sorted(SUB_FIELDS)}")
    _check_common(d, source, where)
    return SubRule(d.get("category"), d.get("effect"), d.get("target"), d.get("tool"))


def _example(d: Any, source: str, where: str) -> Example:
    try:
        ex = Example(d["run"], d["sig"], d["effect"])
    except (KeyError, TypeError):
        ex = None
    if ex is None or len(d) != 3 or type(ex.run) is not str or type(ex.sig) is not str:
        raise _fail(source, where, 'an example is {"run": command, "sig": signature, "effect": side effect}')
    if ex.effect not in EFFECTS:
        raise _fail(source, where, f"example side effect {ex.effect!r} is unknown")
    return ex


def parse_entry(d: Any, source: str, index: int) -> ProgramRule:
    """One entry of a rule file -> a frozen :class:`ProgramRule`, or :class:`RulesError`."""
    where = f"entry {index + 1}"
    if not isinstance(d, dict):
        raise _fail(source, where, "an entry is a table")
    names = _strings(d.get("names"), source, where, "names")
    where = f"entry {index + 1} ({names[0]})"
    unknown = set(d) - ENTRY_FIELDS
    if unknown:
        raise _fail(source, where, f"unknown field(s) {sorted(unknown)}; fields are {sorted(ENTRY_FIELDS)}")
    if any(n != n.lower() or " " in n or n.endswith((".exe", ".cmd", ".bat")) for n in names):
        raise _fail(source, where, "names are lower case program names without spaces or .exe/.cmd/.bat")
    if (d.get("handler") is None) == (d.get("category") is None):
        raise _fail(source, where, "an entry declares a category or names a handler (exactly one)")
    _check_common(d, source, where)
    if d.get("role") is not None and d["role"] not in ROLES:
        raise _fail(source, where, f"unknown role {d['role']!r}")
    if d.get("match", "first") not in ("first", "any"):
        raise _fail(source, where, 'match is "first" or "any"')
    subs = d.get("subcommands") or {}
    if not isinstance(subs, dict):
        raise _fail(source, where, "subcommands is a table of subcommand -> category or rule")
    examples = d.get("examples")
    if not isinstance(examples, list) or not examples:
        raise _fail(source, where, "every entry carries at least one example")
    return ProgramRule(
        names=names,
        category=d.get("category"),
        effect=d.get("effect"),
        role=d.get("role"),
        target=_check_target(d.get("target", "paths"), source, where),
        values=frozenset(_strings(d.get("values", []), source, where, "values")),
        skip=int(d.get("skip", 0)),
        tool=d.get("tool"),
        match=d.get("match", "first"),
        subcommands=MappingProxyType({k: _sub(v, source, f"{where} subcommand {k!r}") for k, v in subs.items()}),
        handler=d.get("handler"),
        examples=tuple(_example(x, source, f"{where} example {i + 1}") for i, x in enumerate(examples)),
        internal=bool(d.get("internal", False)),
        source=source,
    )


def parse_file(data: Mapping[str, Any], source: str) -> tuple[list[ProgramRule], frozenset[str]]:
    """A whole rule file (``{"program": [...]}``, plus ``filters`` in the built-in one): its entries,
    with every name covered once at most."""
    if not isinstance(data, Mapping) or set(data) - {"program", "filters", "about"}:
        raise RulesError(f"{source}: a rule file holds 'program' entries (and 'filters', 'about')")
    entries = [parse_entry(d, source, i) for i, d in enumerate(data.get("program") or [])]
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        for n in e.names:
            if n in seen:
                raise _fail(source, f"entry {i + 1} ({e.names[0]})", f"{n!r} is already covered by entry {seen[n] + 1}")
            seen[n] = i
    filters = frozenset(_strings(data.get("filters", []), source, "filters", "filters"))
    return entries, filters


def read_file(path: Path) -> tuple[dict[str, Any], bytes]:
    """A rule file's content (JSON, or TOML by its suffix) and its bytes."""
    raw = path.read_bytes()
    try:
        if path.suffix == ".toml":
            import tomllib  # only user files may be TOML: the built-in table is JSON, for load time

            return tomllib.loads(raw.decode()), raw
        return json.loads(raw), raw
    except (ValueError, UnicodeDecodeError) as e:
        raise RulesError(f"{path}: not valid {path.suffix.lstrip('.') or 'json'}: {e}") from e


def user_rules_path(env: Mapping[str, str] | None = None) -> Path | None:
    """``OUTLOOP_RULES`` (must exist), else ``$OUTLOOP_HOME/rules.toml`` or ``rules.json`` when present."""
    env = os.environ if env is None else env
    explicit = env.get("OUTLOOP_RULES")
    if explicit:
        return Path(os.path.expanduser(explicit))
    home = Path(os.path.expanduser(env.get("OUTLOOP_HOME") or os.path.join("~", ".outloop")))
    for name in ("rules.toml", "rules.json"):
        if (home / name).is_file():
            return home / name
    return None


def load_builtin(path: Path = BUILTIN) -> RuleTable:
    """The table shipped with the package. Raises :class:`RulesError` when it does not check."""
    data, raw = read_file(path)
    entries, filters = parse_file(data, "builtin")
    by_name = {n: e for e in entries for n in e.names}
    return RuleTable(tuple(entries), MappingProxyType(by_name), filters, hashlib.sha256(raw).hexdigest())


def load(user: Path | None = None, base: RuleTable | None = None) -> RuleTable:
    """``base`` (the built-in table by default) with the user's entries on top: a user entry takes every
    name it lists. Raises :class:`RulesError` on any problem with either file."""
    base = base or load_builtin()
    if user is None:
        return base
    try:
        data, raw = read_file(user)
    except OSError as e:
        raise RulesError(f"{user}: cannot read: {e}") from e
    entries, filters = parse_file(data, str(user))
    if filters:
        raise RulesError(f"{user}: filters are built in; a user file holds 'program' entries only")
    by_name: dict[str, ProgramRule] = dict(base.by_name)
    for entry in entries:
        by_name.update(dict.fromkeys(entry.names, entry))
    kept = tuple(p for p in (*base.programs, *entries) if any(by_name.get(n) is p for n in p.names))
    digest = hashlib.sha256(base.digest.encode() + b"\0user\0" + raw).hexdigest()
    return RuleTable(kept, MappingProxyType(by_name), base.filters, digest, str(user))


__all__ = [
    *("BUILTIN", "Example", "ProgramRule", "RuleTable", "RulesError", "SubRule"),
    *("load", "load_builtin", "user_rules_path"),
]
