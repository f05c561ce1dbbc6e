"""Rules for node, go and rust. Registered into :data:`agents.programs.RULES` on import."""

from __future__ import annotations

from outloop.agents.categories import (
    DES,
    NET,
    RO,
    UNK,
    WR,
    Verdict,
    paths_target,
    positionals,
    verdict,
    word_target,
)
from outloop.agents.ecosystems import inline_code, is_test_script, task_category, tasks_verdict
from outloop.agents.programs import RULES, Call, handler

# ---- node ----------------------------------------------------------------------------------------
_PM_INSTALL = {
    "install",
    "i",
    "ci",
    "add",
    "update",
    "upgrade",
    "up",
    "remove",
    "rm",
    "uninstall",
    "un",
    "link",
    "unlink",
    "prune",
    "dedupe",
    "rebuild",
    "import",
}
_PM_ENV = {
    "list",
    "ls",
    "ll",
    "la",
    "why",
    "info",
    "view",
    "show",
    "config",
    "root",
    "bin",
    "whoami",
    "ping",
    "search",
    "doctor",
    "cache",
    "prefix",
    "version",
    "help",
    "explain",
    "pack",
    "publish",
    "login",
}


@handler
def node_pm(c: Call) -> Verdict:
    pos = positionals(c.args, ("--prefix", "-C", "--dir", "--filter", "-F", "-w", "--workspace", "--cwd"))
    tool = c.prog
    if not pos:
        if c.prog == "yarn" and not c.args:
            return verdict("install", tool, "install")
        return verdict("env", tool, "version" if "--version" in c.args or "-v" in c.args else "*", RO)
    sub = pos[0]
    if sub in ("run", "run-script", "rum", "urn"):
        script = pos[1] if len(pos) > 1 else ""
        return (
            verdict(task_category(script), tool, word_target(script))
            if script
            else verdict("env", tool, "run", RO)
        )
    if sub in ("test", "t", "tst"):
        return verdict("test", tool, "test")
    if sub == "workspace" and c.prog == "yarn" and len(pos) > 2:
        return c.sub([c.prog, *c.args[c.args.index(pos[1]) + 1 :]])  # yarn workspace web test
    if sub in ("start", "restart", "stop"):
        return verdict("run", tool, sub)
    if sub in ("exec", "x", "dlx", "create", "init") and c.prog != "npm" or sub == "exec":
        rest = c.args[c.args.index(sub) + 1 :]
        while rest and rest[0].startswith("-"):
            rest = rest[1:]
        if rest and rest[0] != "--" and sub not in ("create", "init"):
            return c.sub(rest)
        return verdict("other", tool, sub)
    if sub in ("audit", "outdated"):
        fix = "fix" in pos[1:]
        return verdict("install" if fix else "env", tool, "audit-fix" if fix else sub, NET)
    if sub in _PM_INSTALL:
        return verdict(
            "install",
            tool,
            "install" if sub in ("i", "add") else sub,
            DES if sub in ("remove", "rm", "uninstall", "un") else NET,
        )
    if sub in _PM_ENV:
        return verdict("env", tool, sub, NET if sub in ("publish", "login", "ping", "search", "view") else RO)
    if c.prog == "bun" and sub.endswith((".js", ".ts", ".tsx", ".mjs")):
        return verdict("test" if is_test_script(sub) else "run", "bun", paths_target([sub]))
    if c.prog != "npm" and sub in RULES and sub not in ("build", "test"):
        return c.sub(c.args[c.args.index(sub) :])  # yarn jest, pnpm tsc
    return verdict(task_category(sub), tool, word_target(sub))


@handler
def npx(c: Call) -> Verdict:
    rest = list(c.args)
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] in ("-p", "--package") else rest[1:]
    return c.sub(rest) if rest else verdict("other", c.prog, "*")


@handler
def node(c: Call) -> Verdict:
    if c.prog == "deno":
        pos = positionals(c.args)
        sub = pos[0] if pos else ""
        cats = {
            "test": "test",
            "lint": "lint",
            "fmt": "format",
            "check": "typecheck",
            "compile": "build",
            "bundle": "build",
            "install": "install",
            "add": "install",
            "task": "run",
            "eval": "run",
        }
        if sub in cats:
            if sub == "task" and len(pos) > 1:
                return verdict(task_category(pos[1]), "deno", word_target(pos[1]))
            return verdict(cats[sub], "deno", sub)
        args = c.args[1:] if sub == "run" and c.args and c.args[0] == "run" else c.args
    else:
        args = c.args
    if "--test" in args:
        return verdict("test", c.prog, paths_target(positionals(args)))
    for i, a in enumerate(args):
        if a in ("-e", "--eval", "-p", "--print"):
            return inline_code(c.prog, args[i + 1] if i + 1 < len(args) else "")
        if not a.startswith("-"):
            if is_test_script(a) or ".test." in a or ".spec." in a:
                return verdict("test", c.prog, paths_target([a]))
            return verdict("run", c.prog, paths_target([a]), UNK)
    stdin = c.stdin_text()
    return inline_code(c.prog, stdin) if stdin is not None else verdict("run", c.prog, "repl", UNK)


@handler
def tsc(c: Call) -> Verdict:
    build = "-b" in c.args or "--build" in c.args or not ("--noEmit" in c.args or "--noemit" in c.args)
    return verdict("build" if build and "--noEmit" not in c.args else "typecheck", "tsc", "*")


@handler
def js_build(c: Call) -> Verdict:
    pos = positionals(c.args, ("--config", "-c", "--mode", "--port", "-p", "--filter", "--project"))
    sub = pos[0] if pos else ""
    if c.prog in ("turbo", "nx", "lerna") and sub in ("run", "run-many", "affected"):
        tasks = [p for p in pos[1:] if not p.startswith("-")]
        return tasks_verdict(c.prog, tasks[:1], "build")
    if c.prog in ("webpack", "rollup", "esbuild", "parcel", "tsup", "swc", "babel") and sub not in (
        "serve",
        "watch",
    ):
        return verdict("build", c.prog, "*")
    if not sub or sub in ("dev", "serve", "start", "preview", "develop"):
        return verdict("run", c.prog, sub or "dev")
    return verdict(task_category(sub, "run"), c.prog, word_target(sub))


@handler
def browser_tests(c: Call) -> Verdict:
    pos = positionals(c.args)
    sub = pos[0] if pos else ""
    if sub == "install":
        return verdict("install", c.prog, "install")
    if sub in ("open", "codegen", "show-report"):
        return verdict("run", c.prog, sub)
    return verdict("test", c.prog, paths_target(pos[1:]) if len(pos) > 1 else "*")


@handler
def biome(c: Call) -> Verdict:
    pos = positionals(c.args)
    sub = pos[0] if pos else "check"
    return verdict("format" if sub == "format" else "lint", "biome", word_target(sub))


# ---- go ------------------------------------------------------------------------------------------
_GO_VALUES = (
    "-run",
    "-bench",
    "-o",
    "-tags",
    "-timeout",
    "-count",
    "-p",
    "-coverprofile",
    "-covermode",
    "-ldflags",
    "-gcflags",
    "-mod",
    "-C",
    "-benchtime",
    "-cpu",
    "-parallel",
    "-skip",
    "-exec",
    "-modfile",
)


@handler
def go(c: Call) -> Verdict:
    pos = positionals(c.args, _GO_VALUES)
    sub = pos[0] if pos else ""
    pkgs = paths_target(pos[1:]) if len(pos) > 1 else "."
    if sub == "test":
        return verdict("test", "go", pkgs)
    if sub == "install" and any("@" in a or _remote_module(a) for a in pos[1:]):
        return verdict("install", "go", "install", NET)  # go install tool@version fetches and installs a tool
    if sub in ("build", "install", "generate"):
        return verdict("build", "go", pkgs)
    if sub == "vet":
        return verdict("lint", "go", pkgs, RO)
    if sub == "fmt":
        return verdict("format", "go", pkgs)
    if sub == "run":
        return verdict("run", "go", paths_target(pos[1:2]) if len(pos) > 1 else ".", UNK)
    if sub == "get":
        return verdict("install", "go", "get")
    if sub == "mod":
        action = pos[1] if len(pos) > 1 else ""
        if action == "init":
            return verdict("edit", "go", "mod-init", WR)
        if action in ("tidy", "download", "vendor"):
            return verdict("install", "go", "mod-" + action)
        return verdict("env", "go", "mod-" + word_target(action) if action else "mod", RO)
    if sub == "clean":
        return verdict("build", "go", "clean")
    return verdict("env", "go", word_target(sub) if sub else "*", RO)


def _remote_module(arg: str) -> bool:
    """``golang.org/x/tools/cmd/goimports``: a module path on a host, not a package of this module."""
    first = arg.split("/", 1)[0]
    return "/" in arg and "." in first and not arg.startswith(".")


# ---- rust ----------------------------------------------------------------------------------------
_CARGO = {
    "test": "test",
    "nextest": "test",
    "bench": "run",  # benchmarks measure, they do not pass or fail like tests
    "build": "build",
    "b": "build",
    "doc": "build",
    "clean": "build",
    "check": "typecheck",
    "c": "typecheck",
    "clippy": "lint",
    "fmt": "format",
    "run": "run",
    "r": "run",
    "add": "install",
    "install": "install",
    "fetch": "install",
    "update": "install",
    "remove": "install",
    "tree": "env",
    "metadata": "env",
    "search": "env",
    "publish": "env",  # uploads to a registry, like npm publish
    "audit": "lint",
    "deny": "lint",
    "miri": "test",
    "tarpaulin": "test",
    "llvm-cov": "test",
}


@handler
def cargo(c: Call) -> Verdict:
    args = [a for a in c.args if not a.startswith("+")]
    pos = positionals(
        args,
        (
            "-p",
            "--package",
            "--features",
            "-F",
            "--target",
            "--bin",
            "--example",
            "-j",
            "--manifest-path",
            "--profile",
            "--test",
            "--bench",
        ),
    )
    sub = pos[0] if pos else ""
    cat = _CARGO.get(sub)
    if cat is None:
        return verdict("env", "cargo", "version" if "--version" in args else word_target(sub), RO)
    if cat == "format" and "--check" in args:
        return verdict("format", "cargo", "fmt", RO)
    names = {"b": "build", "c": "check", "r": "run"}
    return verdict(cat, "cargo", names.get(sub, sub), NET if cat == "install" or sub == "publish" else None)
