"""Per-program rules: which category, tool, target and side effect a simple command has.

The rules are data: the rule table (:mod:`agents.ruletable`, ``agents/rules/commands.json``) maps every
program name to a declared rule or to a *handler*, a small named function for the few programs whose
rule needs code. :func:`install` turns a table into :data:`RULES`. Each rule takes a :class:`Call`
(program name, its arguments, the parsed step and a way to analyse nested commands) and returns a
:class:`~agents.categories.Verdict`. Handlers live here (files, text tools), in
:mod:`agents.ecosystems` (python), :mod:`agents.toolchains` (node, go, rust), :mod:`agents.platforms`
(java, make, docker, clouds) and :mod:`agents.sysadmin` (git, package managers, administration); they
register by name with :func:`handler`. Wrappers are unwrapped in :mod:`agents.commands`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from outloop.agents import ruletable
from outloop.agents.categories import (
    DES,
    NET,
    RO,
    UNK,
    WR,
    Verdict,
    basename,
    looks_like_path,
    paths_target,
    positionals,
    verdict,
    word_target,
    words,
)
from outloop.agents.ruletable import ProgramRule, RulesError, RuleTable
from outloop.agents.shell import Step


@dataclass
class Call:
    prog: str  # normalised program name (basename, lower case, no .exe)
    args: list[str]
    step: Step = field(default_factory=lambda: Step(()))
    piped_in: bool = False
    heredocs: tuple[str, ...] = ()
    analyzer: Any = None  # agents.commands.Analyzer: .argv(words, call) / .text(text, call)
    depth: int = 0
    raw0: str = ""  # argv[0] as written

    def sub(self, words: list[str]) -> Verdict:
        return self.analyzer.argv(words, self)

    def text(self, text: str) -> Verdict:
        return self.analyzer.text(text, self)

    def stdin_text(self) -> str | None:
        from outloop.agents.shell import heredoc_index

        for kind, target in self.step.redirects:
            if kind == "in":
                idx = heredoc_index(target)
                if idx is not None and idx < len(self.heredocs):
                    return self.heredocs[idx]
            elif kind == "here":
                return target
        return None


Rule = Callable[[Call], Verdict]
RULES: dict[str, Rule] = {}
"""Program name -> its rule, built from the rule table (:mod:`agents.ruletable`) by :func:`install`."""
HANDLERS: dict[str, Rule] = {}
"""The rules that need code, by the name the table gives them (``"handler": "git"``)."""


def handler(fn: Rule) -> Rule:
    """Register ``fn`` as a handler under its name without leading underscores; a name taken twice fails."""
    name = fn.__name__.lstrip("_")
    if name in HANDLERS:
        raise ValueError(f"handler {name!r} is registered twice")
    HANDLERS[name] = fn
    return fn


def target_of(kind: str, args: list[str], values: frozenset[str], skip: int = 0) -> str:
    """A declared rule's target (the kinds are listed in :data:`agents.ruletable.TARGETS`)."""
    if kind.startswith("="):
        return kind[1:]
    if kind == "none":
        return "*"
    if kind == "first":
        return (args or ["*"])[0]
    if kind == "subcommand":
        return subcommand(args)
    pos = positionals(args, values)[skip:]
    if kind == "word":
        return word_target(pos[0]) if pos else "*"
    if kind == "reads":
        pos = [a for a in pos if not a.lstrip("+-").isdigit() and a not in ("]", "]]")]
    elif kind == "files":
        pos = [a for a in pos if looks_like_path(a)]
    return paths_target(pos)


def declared(p: ProgramRule) -> Rule:
    """The rule function of a declared (handler-less) table entry."""

    def rule(c: Call) -> Verdict:
        category, effect, target, tool = p.category or "other", p.effect, p.target, p.tool
        if p.subcommands:
            keys = c.args if p.match == "any" else positionals(c.args, p.values)[:1]
            sub = next((p.subcommands[k] for k in keys if k in p.subcommands), None)
            if sub is not None:
                if sub.category is not None:
                    category, effect = sub.category, None
                effect = sub.effect or effect
                target, tool = sub.target or target, sub.tool or tool
        return verdict(category, tool or c.prog, target_of(target, c.args, p.values, p.skip), effect, p.role)

    rule.__name__ = rule.__qualname__ = f"declared[{p.names[0]}]"
    return rule


def install(table: RuleTable) -> None:
    """Make ``table`` the rules in force: every name maps to its handler or declared rule. An unknown
    handler name fails (:class:`RulesError`) before anything changes."""
    missing = sorted({p.handler for p in table.programs if p.handler and p.handler not in HANDLERS})
    if missing:
        raise RulesError(f"unknown handler(s) {missing}; known: {sorted(HANDLERS)}")
    compiled = {id(p): HANDLERS[p.handler] if p.handler else declared(p) for p in table.programs}
    RULES.clear()
    RULES.update({name: compiled[id(p)] for name, p in table.by_name.items()})
    global ACTIVE
    ACTIVE = table


BUILTIN: RuleTable = ruletable.load_builtin()
ACTIVE: RuleTable = BUILTIN  # the table in force (agents.signatures adds the user's file)
FILTERS = BUILTIN.filters

# ---- handlers: search, text tools, files ---------------------------------------------------------
_GREP_VALUES = frozenset(
    words(
        "-e -f -m -A -B -C --include --exclude --exclude-dir -g --glob -t --type --max-count --context "
        "--after-context --before-context"
    )
)


@handler
def _grep(c: Call) -> Verdict:
    pos = positionals(c.args, _GREP_VALUES)
    if not any(a in ("-e", "-f") or a.startswith(("--regexp", "--file=")) for a in c.args) and pos:
        pos = pos[1:]  # the pattern
    return verdict("search", c.prog, paths_target(pos) if pos else "*", RO)


@handler
def _find(c: Call) -> Verdict:
    roots = []
    for a in c.args:
        if a.startswith(("-", "(", "!", "\\(")):
            break
        roots.append(a)
    effect = (
        DES
        if "-delete" in c.args
        or any(
            a in ("-exec", "-execdir") and i + 1 < len(c.args) and c.args[i + 1] in ("rm", "mv", "shred")
            for i, a in enumerate(c.args)
        )
        else RO
    )
    if effect == DES:
        return verdict("edit", "find", paths_target(roots) if roots else ".", DES)
    return verdict("search", "find", paths_target(roots) if roots else ".", effect)


@handler
def _sed(c: Call) -> Verdict:
    inplace = any(
        a == "-i"
        or a.startswith(("-i", "--in-place"))
        or (a.startswith("-") and not a.startswith("--") and "i" in a[1:] and "e" not in a[1:])
        for a in c.args
    )
    pos = positionals(c.args, ("-e", "-f", "-l"))
    if not any(a in ("-e", "-f") for a in c.args) and pos:
        pos = pos[1:]  # the script
    if inplace:
        return verdict("edit", c.prog, paths_target(pos), WR)
    return verdict("read", c.prog, paths_target(pos), RO)


@handler
def _awk(c: Call) -> Verdict:
    if c.prog in ("perl", "ruby"):
        if any(a.startswith("-") and "i" in a and a[1:2] != "-" and not a.startswith("-I") for a in c.args):
            pos = positionals(c.args, ("-e", "-I", "-M"))
            return verdict("edit", c.prog, paths_target([p for p in pos if looks_like_path(p)]), WR)
        if not any(a.startswith("-") and "e" in a[1:] for a in c.args):
            pos = positionals(c.args, ("-I", "-M", "-r"))
            return verdict("run", c.prog, paths_target(pos[:1]), UNK)
    inplace = c.prog != "perl" and "inplace" in c.args
    pos = positionals(c.args, ("-F", "-v", "-f", "-i", "-e", "-I", "-M"))
    if pos and c.prog in ("awk", "gawk", "mawk"):
        pos = pos[1:]
    files = [p for p in pos if looks_like_path(p)] if c.prog != "awk" else pos
    return verdict("edit" if inplace else "read", c.prog, paths_target(files), WR if inplace else RO)


@handler
def _tee(c: Call) -> Verdict:
    files = [a for a in positionals(c.args) if not a.startswith("/dev/")]
    return verdict("edit", "tee", paths_target(files), WR if files else RO, "filter" if c.piped_in else None)


# ---- files -----------------------------------------------------------------------------------------


@handler
def _cp(c: Call) -> Verdict:
    pos = positionals(
        c.args, ("-t", "--target-directory", "-m", "--mode", "-o", "-g", "-e", "--exclude", "-P", "-i", "-F")
    )
    remote = any(re.match(r"^[\w.@-]+:", p) and not re.match(r"^[A-Za-z]:[\\/]", p) for p in pos)
    if c.prog == "scp" or remote:
        return verdict("env", c.prog, "*", NET)
    return verdict("edit", c.prog, paths_target(pos[-1:]), WR)




@handler
def _archive(c: Call) -> Verdict:
    listing = (c.prog == "unzip" and "-l" in c.args) or (
        c.prog == "tar" and c.args and "t" in c.args[0].lstrip("-") and "x" not in c.args[0]
    )
    pos = positionals(c.args, ("-d", "-f", "-C", "--directory", "--file"))
    return verdict("read" if listing else "edit", c.prog, paths_target(pos[:1]), RO if listing else WR)


# ---- editors, openers, misc ----------------------------------------------------------------------


_VERBS = frozenset(
    words(
        "list ls edit view show get set add remove rm delete del create new init update upgrade run "
        "start stop restart status build test check install uninstall open close sync push pull login "
        "logout info describe apply import export search find enable disable logs config exec watch "
        "serve deploy"
    )
)
_SUBWORD = re.compile(r"^[a-z][a-z0-9_-]*$")


def subcommand(args: list[str]) -> str:
    """``noun verb`` CLIs keep both words (``backlog task edit`` -> ``task-edit``); a second word counts
    only when it is a common verb, so arguments never leak into the target."""
    pos = positionals(args)
    if not pos or not _SUBWORD.match(pos[0]):
        return word_target(pos[0]) if pos else "*"
    if len(pos) > 1 and pos[1] in _VERBS and pos[0] not in _VERBS:
        return f"{pos[0]}-{pos[1]}"
    return word_target(pos[0])


SYSTEM_DIRS = re.compile(
    r"^(?:/usr/|/bin/|/sbin/|/opt/|/etc/|/lib/|/Library/|/System/|/Applications/|"
    r"[A-Za-z]:/(?:Program Files|Windows|ProgramData))",
    re.I,
)


def local_executable(c: Call) -> Verdict:
    """``./prog``, ``bin/tool``, a script path: the project's own program, run. A program installed
    in a system directory (``/usr/sbin/x``, ``C:/Program Files/...``) is administration: env."""
    if c.args[-1:] in (["--version"], ["-version"]):
        return verdict("env", basename(c.raw0), "version", RO)
    if SYSTEM_DIRS.match(c.raw0.replace("\\", "/")):
        return verdict("env", basename(c.raw0), subcommand(c.args), UNK)
    return script_by_name(basename(c.raw0), c.args)


def script_by_name(name: str, args: list[str]) -> Verdict:
    """A script named after a routable task (``build.sh``, ``scripts/lint``, ``test-api.sh``) is that task;
    any other script or program of the project is run (see :func:`agents.ecosystems.script_category`)."""
    from outloop.agents.ecosystems import script_category

    stem = name.rsplit(".", 1)[0] if name.endswith((".sh", ".bash", ".zsh", ".ps1", ".bat", ".cmd")) else name
    if "." not in stem:
        cat = script_category(stem)
        if cat != "run":
            return verdict(cat, name, subcommand(args))
    return verdict("run", name, subcommand(args), UNK)


def unknown(c: Call) -> Verdict:
    pos = positionals(c.args)
    if c.args[-1:] in (["--version"], ["-version"]) or c.args == ["-V"] or c.args == ["version"]:
        return verdict("env", c.prog, "version", RO)
    if "--help" in c.args or c.args[-1:] == ["-h"] or c.args[:1] == ["help"]:
        return verdict("env", c.prog, "help", RO)
    return verdict("other", c.prog, subcommand(c.args) if pos else "*", UNK)


def version_or_help(c: Call, v: Verdict) -> Verdict:
    """``--version`` (or ``-V``/``version`` alone) is a version check: env. ``--help`` on a dev tool is
    env too; on the project's own program it stays run."""
    args = c.args
    if args and (
        args[-1] in ("--version", "-version")
        or args == ["-V"]
        or args == ["-v"]
        and c.prog in ("node", "npm", "go", "yarn", "pnpm", "bun", "deno", "tmux", "gcc", "clang")
        or args == ["version"]
    ):
        return verdict("env", v.tool, "version", RO)
    if v.category in ("test", "build", "lint", "typecheck", "format", "install") and (
        "--help" in args or args[-1:] == ["-h"] or args[:1] == ["help"]
    ):
        return verdict("env", v.tool, "help", RO)
    if v.category in ("lint", "format") and v.effect == WR and c.prog not in TASK_RUNNERS:
        fixes = any(a in _FIX_FLAGS or a.startswith("--fix") for a in args)
        checks = any(a in _CHECK_FLAGS for a in args)
        if (v.category == "lint" and not fixes) or (v.category == "format" and checks and not fixes):
            return Verdict(v.category, v.tool, v.target, RO, v.role)
    return v


TASK_RUNNERS = frozenset(
    words(
        "npm yarn pnpm bun make gmake just task mage invoke tox nox gradle gradlew mvn mvnw "
        "cargo go pre-commit rake composer deno dotnet swift mix flutter dart"
    )
)
_FIX_FLAGS = frozenset(words("--fix -w --write fix --apply --unsafe-fixes -i --in-place format"))
_CHECK_FLAGS = frozenset(words("--check -l --list-different --diff --dry-run -d --verify"))


__all__ = ["Call", "RULES", "HANDLERS", "FILTERS", "DES", "NET", "RO", "UNK", "WR", "handler", "install"]
