"""Per-program rules: which category, tool, target and side effect a simple command has.

Each rule takes a :class:`Call` (program name, its arguments, the parsed step and a way to analyse
nested commands) and returns a :class:`~agents.categories.Verdict`. Ecosystem rules (python, node, go,
rust, java, make, docker, git) live in :mod:`agents.ecosystems`; wrappers in :mod:`agents.commands`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from outloop.agents.categories import (
    DES,
    NET,
    RO,
    UNK,
    WR,
    Verdict,
    basename,
    looks_like_path,
    option_value,
    paths_target,
    positionals,
    verdict,
    word_target,
    words,
)
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


def rule(*names: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn

    return deco


def simple(
    category: str,
    effect: str | None = None,
    role: str | None = None,
    target: str = "paths",
    values: tuple[str, ...] = (),
) -> Rule:
    def fn(c: Call) -> Verdict:
        if target == "paths":
            t = paths_target([a for a in positionals(c.args, values)])
        elif target == "word":
            pos = positionals(c.args, values)
            t = word_target(pos[0]) if pos else "*"
        else:
            t = "*"
        return verdict(category, c.prog, t, effect, role)

    return fn


def table(category: str, names: str, effect: str | None = None, target: str = "word") -> None:
    r = simple(category, effect, target=target)
    for n in names.split():
        RULES.setdefault(n, r)


# ---- noise -----------------------------------------------------------------------------------------
NOISE = frozenset(
    words(
        "cd pushd popd pwd echo printf sleep true false : export set unset source . clear exit wait shopt "
        "alias trap local declare typeset read return break continue start-sleep write-host write-"
        "output set-location unalias hash reset"
    )
)


def noise(c: Call) -> Verdict:
    cat = (
        "env"
        if c.prog in ("cd", "pushd", "popd", "pwd", "export", "set", "unset", "source", ".", "set-location")
        else "other"
    )
    return verdict(cat, c.prog, "*", RO, "noise")


for _n in NOISE:
    RULES[_n] = noise

# ---- read / search / filters ---------------------------------------------------------------------
FILTERS = frozenset(
    words(
        "grep egrep fgrep rg ag ack head tail wc jq yq sort uniq cut awk gawk sed tr tee less more "
        "column fmt nl od xxd hexdump base64 findstr select-string select-object where-object sort-"
        "object format-table format-list measure-object group-object foreach-object out-null out-"
        "string convertfrom-json convertto-json select where ft fl % ? get-member cat bat paste rev "
        "strings comm diff xargs iconv fold expand sha256sum md5sum shasum tac python-json-tool"
    )
)
READERS = (
    "cat bat less more head tail nl od xxd hexdump strings wc md5sum sha256sum shasum sha1sum file "
    "diff cmp tac column type get-content gc readlink realpath"
)
for _m in READERS.split():
    RULES.setdefault(
        _m,
        lambda c: verdict(
            "read",
            c.prog,
            paths_target(
                [
                    a
                    for a in positionals(c.args, ("-n", "-c", "--lines", "--bytes", "-s", "-w", "-v"))
                    if not a.lstrip("+-").isdigit()
                ]
            ),
            RO,
        ),
    )
_SEARCH_VALUES = (
    "-L",
    "-I",
    "-P",
    "--depth",
    "-d",
    "--level",
    "-t",
    "--type",
    "-e",
    "--extension",
    "-Filter",
)
for _m in words(
    "ls ll la dir tree fd fdfind locate mdfind stat du get-childitem gci test-path test [ [[ exa eza lsd"
):
    RULES.setdefault(
        _m,
        lambda c: verdict(
            "search",
            c.prog,
            paths_target(
                [a for a in positionals(c.args, _SEARCH_VALUES) if not a.isdigit() and a not in ("]", "]]")]
            ),
            RO,
        ),
    )
_GREP_VALUES = (
    "-e",
    "-f",
    "-m",
    "-A",
    "-B",
    "-C",
    "--include",
    "--exclude",
    "--exclude-dir",
    "-g",
    "--glob",
    "-t",
    "--type",
    "--max-count",
    "--context",
    "--after-context",
    "--before-context",
)


@rule("grep", "egrep", "fgrep", "rg", "ag", "ack", "findstr", "zgrep")
def _grep(c: Call) -> Verdict:
    pos = positionals(c.args, _GREP_VALUES)
    if not any(a in ("-e", "-f") or a.startswith(("--regexp", "--file=")) for a in c.args) and pos:
        pos = pos[1:]  # the pattern
    return verdict("search", c.prog, paths_target(pos) if pos else "*", RO)


@rule("find", "gfind")
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


@rule("sed", "gsed")
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


@rule("awk", "gawk", "mawk", "perl", "ruby")
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


@rule("jq", "yq")
def _jq(c: Call) -> Verdict:
    pos = positionals(c.args, ("--arg", "--argjson", "-L", "--indent", "--slurpfile", "--rawfile"))
    return verdict("read", c.prog, paths_target(pos[1:]) if len(pos) > 1 else "*", RO)


@rule("sort", "uniq", "cut", "tr", "fmt", "fold", "rev", "paste", "comm", "iconv", "expand")
def _textfilter(c: Call) -> Verdict:
    return verdict(
        "read",
        c.prog,
        paths_target([a for a in positionals(c.args, ("-k", "-t", "-d", "-f", "-c")) if looks_like_path(a)]),
        RO,
    )


@rule("tee")
def _tee(c: Call) -> Verdict:
    files = [a for a in positionals(c.args) if not a.startswith("/dev/")]
    return verdict("edit", "tee", paths_target(files), WR if files else RO, "filter" if c.piped_in else None)


# ---- files -----------------------------------------------------------------------------------------


@rule("rm", "rmdir", "unlink", "shred", "trash", "del", "rd", "remove-item", "ri", "erase")
def _rm(c: Call) -> Verdict:
    return verdict("edit", c.prog, paths_target(positionals(c.args)), DES)


@rule("cp", "mv", "ln", "rsync", "copy-item", "move-item", "rename-item", "install", "scp")
def _cp(c: Call) -> Verdict:
    pos = positionals(
        c.args, ("-t", "--target-directory", "-m", "--mode", "-o", "-g", "-e", "--exclude", "-P", "-i", "-F")
    )
    remote = any(re.match(r"^[\w.@-]+:", p) and not re.match(r"^[A-Za-z]:[\\/]", p) for p in pos)
    if c.prog == "scp" or remote:
        return verdict("env", c.prog, "*", NET)
    return verdict("edit", c.prog, paths_target(pos[-1:]), WR)


table(
    "edit",
    "mkdir md touch chmod chown chgrp truncate dos2unix unix2dos patch ed ex mktemp new-item ni "
    "set-content add-content out-file zip gzip gunzip bzip2 xz 7z",
    WR,
    target="paths",
)
RULES["truncate"] = simple("edit", DES)


@rule("tar", "unzip")
def _archive(c: Call) -> Verdict:
    listing = (c.prog == "unzip" and "-l" in c.args) or (
        c.prog == "tar" and c.args and "t" in c.args[0].lstrip("-") and "x" not in c.args[0]
    )
    pos = positionals(c.args, ("-d", "-f", "-C", "--directory", "--file"))
    return verdict("read" if listing else "edit", c.prog, paths_target(pos[:1]), RO if listing else WR)


# ---- editors, openers, misc ----------------------------------------------------------------------
table("edit", "vim vi nvim nano emacs micro", WR, target="paths")
table("other", "open xdg-open code subl start explorer osascript say notify-send pbcopy pbpaste", UNK)
RULES["gitleaks"] = simple("lint", RO, target="word")
RULES["pre-commit"] = simple("lint", WR, target="word")
RULES["shellcheck"] = simple("lint", RO)
RULES["hadolint"] = simple("lint", RO)
RULES["markdownlint"] = simple("lint", RO)
RULES["yamllint"] = simple("lint", RO)
RULES["actionlint"] = simple("lint", RO)
RULES["codespell"] = simple("lint", RO)
RULES["shfmt"] = simple("format", WR)


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
    """A shell script named after a task (``build.sh``, ``scripts/lint``, ``install.sh``) is that task;
    any other script or program of the project is run."""
    from outloop.agents.ecosystems import task_category

    stem = name.rsplit(".", 1)[0] if name.endswith((".sh", ".bash", ".zsh", ".ps1", ".bat", ".cmd")) else name
    if "." not in stem:
        cat = task_category(stem, "run")
        if cat in ("test", "build", "lint", "typecheck", "format", "install"):
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


__all__ = ["Call", "RULES", "FILTERS", "NOISE", "DES", "NET", "RO", "UNK", "WR", "option_value"]
