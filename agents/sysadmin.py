"""Rules for version control (every git and gh command is vcs), system package managers, system and
network administration (env), and Windows PowerShell / cmd. Registered into
:data:`agents.programs.RULES` on import."""

from __future__ import annotations

import re

from outloop.agents.categories import (
    DES,
    NET,
    RO,
    UNK,
    WR,
    Verdict,
    basename,
    positionals,
    verdict,
    word_target,
)
from outloop.agents.programs import Call, handler, subcommand

# ---- git / gh ------------------------------------------------------------------------------------
_GIT_RO = {
    "status",
    "diff",
    "log",
    "show",
    "blame",
    "rev-parse",
    "ls-files",
    "grep",
    "describe",
    "shortlog",
    "reflog",
    "rev-list",
    "cat-file",
    "ls-tree",
    "whatchanged",
    "name-rev",
    "merge-base",
    "check-ignore",
    "help",
    "version",
    "count-objects",
    "fsck",
    "var",
    "for-each-ref",
    "show-ref",
    "range-diff",
}
_GIT_NET = {"push", "pull", "fetch", "clone", "ls-remote", "submodule", "lfs"}
_FILE_ARG = re.compile(r"\.[A-Za-z]{1,5}$|^\./|^\.$|\*")
_GIT_VALUES = ("-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path")


def _git_effect(sub: str, rest: list[str]) -> str:
    if sub in _GIT_NET:
        return (
            DES
            if sub == "push"
            and any(a in ("-f", "--force", "--force-with-lease", "--delete", "-d") for a in rest)
            else NET
        )
    if sub in _GIT_RO:
        return RO
    if (
        sub == "reset"
        and "--hard" in rest
        or sub == "clean"
        and any(a.startswith("-") and "f" in a for a in rest)
    ):
        return DES
    if sub == "checkout" and any(a in ("-b", "-B", "--orphan", "-t", "--track") for a in rest):
        return WR
    if sub == "restore" or (
        sub == "checkout"
        and ("--" in rest or any(_FILE_ARG.search(a) for a in rest if not a.startswith("-")))
    ):
        return DES  # discards working-tree changes
    if sub == "checkout" and rest[:1] == ["."]:
        return DES
    if sub == "branch":
        return (
            DES if any(a in ("-D", "-d", "--delete") for a in rest) else (RO if not positionals(rest) else WR)
        )
    if sub == "stash":
        return DES if any(a in ("drop", "clear") for a in rest) else WR
    if sub in ("remote", "config", "tag", "worktree"):
        return (
            RO
            if not positionals(rest, ("--get", "--file", "-f"))
            or "-v" in rest
            or "--get" in rest
            or "--list" in rest
            or "-l" in rest
            else WR
        )
    return WR


@handler
def git(c: Call) -> Verdict:
    pos = positionals(c.args, _GIT_VALUES, stop_at_dashdash=True)
    if not pos:
        return verdict("vcs", "git", "version" if "--version" in c.args else "*", RO)
    sub = pos[0]
    rest = c.args[c.args.index(sub) + 1 :]
    return verdict("vcs", "git", word_target(sub), _git_effect(sub, rest))


@handler
def gh(c: Call) -> Verdict:
    pos = positionals(
        c.args,
        (
            "-R",
            "--repo",
            "-L",
            "--limit",
            "--json",
            "--jq",
            "-q",
            "-t",
            "--title",
            "-b",
            "--body",
            "-F",
            "-f",
            "--state",
            "-s",
            "--label",
            "-l",
            "--template",
            "-X",
            "--method",
            "-H",
            "--header",
            "--base",
            "--head",
            "-a",
            "--assignee",
            "-w",
            "--body-file",
            "--search",
            "-S",
            "--branch",
        ),
    )
    words = [p for p in pos[:2] if re.match(r"^[a-z][a-z-]*$", p)]
    if words and words[0] == "api":
        words = ["api"]
    delete = any(w in ("delete", "close", "merge") for w in words)
    return verdict("vcs", c.prog, "-".join(words) or "*", DES if delete else NET)


# ---- system package managers -----------------------------------------------------------------------
_PKG_INSTALL = {
    "install",
    "upgrade",
    "update",
    "reinstall",
    "remove",
    "uninstall",
    "purge",
    "autoremove",
    "add",
    "del",
    "tap",
    "dist-upgrade",
    "full-upgrade",
    "-S",
    "-Syu",
    "-U",
    "-i",
    "refresh",
}


@handler
def system_pm(c: Call) -> Verdict:
    pos = positionals(c.args, ("-t", "--target-release", "-o"))
    sub = pos[0] if pos else (c.args[0] if c.args else "")
    if c.prog == "brew" and sub == "services":
        action = pos[1] if len(pos) > 1 else "list"
        return verdict(
            "env", "brew", "services-" + word_target(action), RO if action in ("list", "info") else WR
        )
    if sub in _PKG_INSTALL or (c.prog in ("dpkg", "rpm") and sub in ("-i", "--install")):
        destructive = sub in ("remove", "uninstall", "purge", "autoremove", "del")
        return verdict("install", c.prog, word_target(sub.lstrip("-")), DES if destructive else NET)
    if "--version" in c.args or c.args == ["-v"]:
        return verdict("env", c.prog, "version", RO)
    return verdict("env", c.prog, word_target(sub.lstrip("-")) if sub else "*", RO)


# ---- env: system administration (the programs are listed in the rule table) ----------------------
_READ_SUBS = {
    "show",
    "status",
    "list",
    "list-units",
    "is-active",
    "is-enabled",
    "get",
    "read",
    "export",
    "info",
    "print",
    "cat",
    "query",
    "-L",
    "-l",
    "-S",
    "--list",
    "list-keys",
    "--list-keys",
    "--list-secret-keys",
    "-k",
    "-K",
    "--fingerprint",
    "--version",
    "find-generic-password",
    "dump-keychain",
    "help",
}
_DES_SUBS = {
    "stop",
    "disable",
    "delete",
    "remove",
    "kill",
    "mask",
    "unload",
    "bootout",
    "-D",
    "-F",
    "-X",
    "flush",
    "--delete-keys",
    "--delete-secret-keys",
    "userdel",
}


@handler
def _admin(c: Call) -> Verdict:
    pos = [a for a in c.args if not a.startswith("--") or a in _READ_SUBS or a in _DES_SUBS]
    sub = next((a for a in pos if a in _READ_SUBS or a in _DES_SUBS or not a.startswith("-")), "")
    if c.prog.startswith(("stop-", "remove-", "disable-")):
        effect = DES
    elif any(
        re.match(r"^[-/]{0,2}(?:get|list|show|status|print|query|info|export|check|enum)", a) for a in c.args
    ) and not any(
        re.match(r"^[-/]{0,2}(?:set|add|delete|remove|write|enable|disable|load|unload|import)", a)
        for a in c.args
    ):
        effect = RO
    elif c.prog in ("hdiutil",):
        effect = DES if sub == "detach" else WR
    elif sub in _READ_SUBS or not c.args:
        effect = RO
    elif sub in _DES_SUBS:
        effect = DES
    else:
        effect = WR
    target = (
        subcommand(c.args)
        if c.args and not c.args[0].startswith(("-", "/"))
        else (word_target(sub.lstrip("-/")) if sub else "*")
    )
    return verdict("env", c.prog, target, effect)


@handler
def ssh(c: Call) -> Verdict:
    rest = list(c.args)
    while rest and rest[0].startswith("-"):
        flag = rest[0]
        rest = (
            rest[2:]
            if flag
            in (
                "-p",
                "-i",
                "-l",
                "-o",
                "-F",
                "-J",
                "-L",
                "-R",
                "-D",
                "-b",
                "-c",
                "-E",
                "-e",
                "-m",
                "-O",
                "-Q",
                "-S",
                "-W",
                "-w",
                "-B",
            )
            else rest[1:]
        )
    if len(rest) <= 1:
        return verdict("env", "ssh", "login", NET)
    inner = c.text(" ".join(rest[1:]))
    return Verdict(inner.category, inner.tool, inner.target, _worst(inner.effect, NET), inner.role)


def _worst(a: str, b: str) -> str:
    from outloop.agents.categories import worst

    return worst(a, b)


@handler
def init_d(c: Call) -> Verdict:
    action = c.args[0] if c.args else ""
    return verdict(
        "env",
        basename(c.raw0),
        word_target(action),
        RO if action in ("status", "") else DES if action in ("stop",) else WR,
    )


# ---- PowerShell and cmd ----------------------------------------------------------------------------
_PS_STMT = re.compile(r"""('(?:[^']|'')*'|"(?:[^"`]|`.)*"|[{}();|]|[^\s'"{}();|]+)""")


@handler
def powershell(c: Call) -> Verdict:
    args = list(c.args)
    text = None
    i = 0
    while i < len(args):
        a = args[i]
        low = a.lower()
        if low in ("-command", "-c"):
            text = " ".join(args[i + 1 :])
            break
        if low in ("-file", "-f") and i + 1 < len(args):
            return verdict("run", "powershell", "file", UNK)
        if low in ("-executionpolicy", "-windowstyle", "-outputformat", "-inputformat", "-workingdirectory"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        text = " ".join(args[i:])
        break
    if not text:
        return verdict("env", "powershell", "*", RO)
    return c.analyzer.powershell(text, c)


_PS_KEYWORDS = {"try", "catch", "finally", "else", "if", "elseif", "foreach", "while", "switch", "do", "for"}


def ps_statements(text: str) -> list[list[list[str]]]:
    """Statements of pipelines (split on ``|``) of words. Statements end at ``;`` and at the braces of
    code blocks (after try/catch/else or an ``if (...)``/``foreach (...)`` head); script blocks given to
    cmdlets (``Where-Object { ... }``) and argument sub-expressions are skipped; a ``( ... )`` that opens
    a statement is read as a statement."""
    toks = [m.group() for m in _PS_STMT.finditer(text)]
    statements: list[list[list[str]]] = [[[]]]
    i = 0
    while i < len(toks):
        tok = toks[i]
        cur = statements[-1][-1]
        if tok == ";" or tok == "}":
            statements.append([[]])
        elif tok == "{":
            prev = cur[-1].lower() if cur else ""
            if not cur or prev in _PS_KEYWORDS or prev == ")":
                statements.append([[]])
            else:
                i = _skip_group(toks, i, "{", "}")
                cur.append("{}")
        elif tok == "(":
            prev = cur[-1].lower() if cur else ""
            if cur or prev in _PS_KEYWORDS:
                i = _skip_group(toks, i, "(", ")")
                cur.append(")" if prev in _PS_KEYWORDS else "()")
        elif tok == ")":
            pass  # the end of a statement-level "( ... )": what follows pipes on from it
        elif tok == "|":
            statements[-1].append([])
        else:
            cur.append(tok[1:-1] if tok[:1] in ("'", '"') and len(tok) > 1 else tok)
        i += 1
    out = []
    for st in statements:
        pipes = [w for w in st if w and w[0].lower() not in _PS_KEYWORDS]
        if pipes:
            out.append(pipes)
    return out


def _skip_group(toks: list[str], i: int, open_: str, close: str) -> int:
    depth = 0
    while i < len(toks):
        if toks[i] == open_:
            depth += 1
        elif toks[i] == close:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return i


@handler
def cmd_exe(c: Call) -> Verdict:
    for i, a in enumerate(c.args):
        if a.lower() in ("/c", "/k", "/s/c"):
            return c.text(" ".join(c.args[i + 1 :]))
    return verdict("env", "cmd", "*", RO)


@handler
def win_dir(c: Call) -> Verdict:
    return verdict("search", "dir", paths_or_star([a for a in c.args if not a.startswith("/")]), RO)


def paths_or_star(paths: list[str]) -> str:
    from outloop.agents.categories import paths_target

    return paths_target(paths) if paths else "*"


__all__ = ["ps_statements", "RO", "UNK", "WR"]
