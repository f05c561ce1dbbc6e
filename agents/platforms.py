"""Rules for the JVM (maven, gradle), make-like task runners, other build tools, containers and cloud
CLIs. Registered into :data:`agents.programs.RULES` on import."""

from __future__ import annotations

from outloop.agents.categories import (
    DES,
    NET,
    RO,
    UNK,
    WR,
    Verdict,
    option_value,
    paths_target,
    positionals,
    verdict,
    word_target,
)
from outloop.agents.ecosystems import task_category, tasks_verdict
from outloop.agents.programs import Call, handler

# ---- java / jvm ----------------------------------------------------------------------------------
_MVN_PHASES = {
    "test": "test",
    "verify": "test",
    "integration-test": "test",
    "validate": "lint",
    "compile": "build",
    "test-compile": "build",
    "package": "build",
    "install": "build",
    "deploy": "build",
    "clean": "build",
    "site": "build",
    "generate-sources": "build",
}
_MVN_PLUGINS = {
    "spotless": "format",
    "fmt": "format",
    "checkstyle": "lint",
    "pmd": "lint",
    "spotbugs": "lint",
    "dependency": "env",
    "versions": "env",
    "exec": "run",
    "spring-boot": "run",
    "jetty": "run",
    "surefire": "test",
    "failsafe": "test",
    "jacoco": "test",
    "javadoc": "build",
    "help": "env",
}


@handler
def maven(c: Call) -> Verdict:
    goals = positionals(
        c.args, ("-pl", "--projects", "-f", "--file", "-P", "-s", "-T", "-rf", "-am", "-Dtest")
    )
    goals = [g for g in goals if not g.startswith("-D")]
    if not goals:
        return verdict("env", "mvn", "version" if "-v" in c.args or "--version" in c.args else "*", RO)
    cats = []
    for g in goals:
        if ":" in g:
            plugin, _, goal = g.partition(":")
            cats.append("install" if goal in ("resolve", "go-offline") else _MVN_PLUGINS.get(plugin, "build"))
        else:
            cats.append(_MVN_PHASES.get(g, "build"))
    order = ("test", "format", "lint", "run", "build", "install", "env")
    best = min(cats, key=lambda x: order.index(x) if x in order else 99)
    return verdict(best, "mvn", "+".join(word_target(g) for g in goals[:4]))


@handler
def gradle(c: Call) -> Verdict:
    tasks = positionals(c.args, ("-p", "--project-dir", "-x", "--exclude-task", "--tests", "-P", "-D", "-c"))
    tasks = [t for t in tasks if not t.startswith("-")]
    if not tasks:
        return verdict("env", "gradle", "version" if "--version" in c.args else "*", RO)
    names = [t.rsplit(":", 1)[-1] for t in tasks]
    if any(n in ("dependencies", "tasks", "properties", "projects") for n in names):
        return verdict("env", "gradle", "+".join(word_target(n) for n in names[:4]), RO)
    fixed = {
        "bootRun": "run",
        "run": "run",
        "spotlessApply": "format",
        "spotlessCheck": "format",
        "ktlintFormat": "format",
        "ktlintCheck": "lint",
        "detekt": "lint",
        "lint": "lint",
    }
    cats = [fixed.get(n) or task_category(n, "build", "gradle") for n in names]
    order = ("test", "lint", "typecheck", "format", "build", "install", "run")
    best = min(cats, key=lambda x: order.index(x) if x in order else 99)
    return verdict(best, "gradle", "+".join(word_target(t.lstrip(":")) for t in tasks[:4]))




@handler
def java(c: Call) -> Verdict:
    jar = option_value(c.args, "-jar")
    if jar:
        return verdict("run", c.prog, paths_target([jar]), UNK)
    pos = positionals(c.args, ("-cp", "-classpath", "--class-path", "-p", "--module-path", "-m"))
    return verdict("run", c.prog, word_target(pos[0]) if pos else "*", UNK)


@handler
def multi_tool(c: Call) -> Verdict:
    pos = positionals(
        c.args,
        (
            "-p",
            "--project",
            "-c",
            "--configuration",
            "-f",
            "--framework",
            "--target",
            "-C",
            "-scheme",
            "-workspace",
            "-destination",
        ),
    )
    sub = pos[0] if pos else ""
    if c.prog == "bundle" and sub == "exec":
        return c.sub(c.args[c.args.index("exec") + 1 :])
    if c.prog in ("dotnet", "swift", "dart", "flutter") and sub == "run":
        return verdict("run", c.prog, "run", UNK)
    if c.prog == "swift" and sub == "package":
        action = pos[1] if len(pos) > 1 else ""
        if action in ("resolve", "update", "reset", "add-dependency"):
            return verdict("install", "swift", "package-" + action, NET)
        return verdict("env", "swift", "package-" + word_target(action) if action else "package", RO)
    if c.prog == "dotnet" and sub in ("add", "remove") and "package" in pos:
        return verdict("install", "dotnet", sub + "-package", NET if sub == "add" else DES)
    fixed = {
        "restore": "install",
        "deps.get": "install",
        "get": "install",
        "pub": "install",
        "require": "install",
        "analyze": "lint",
        "credo": "lint",
        "format": "format",
        "fmt": "format",
        "query": "env",
        "--version": "env",
        "outdated": "env",
        "list": "env",
        "show": "env",
        "info": "env",
    }
    if c.prog == "gem" and sub != "build":
        return verdict(
            "install" if sub in ("install", "update", "uninstall") else "env", "gem", word_target(sub)
        )
    if not sub:
        cat = "build" if c.prog in ("ant", "scons", "rake", "xcodebuild", "zig") else "env"
        return verdict(cat, c.prog, "*")
    cat = fixed.get(sub) or task_category(sub, "run")
    if c.prog == "composer" and sub in ("install", "update"):
        cat = "install"
    return verdict(cat, c.prog, word_target(sub), NET if cat == "install" else None)


# ---- make-like task runners ------------------------------------------------------------------------


@handler
def make(c: Call) -> Verdict:
    pos = positionals(
        c.args,
        (
            "-C",
            "--directory",
            "-f",
            "--file",
            "-j",
            "--jobs",
            "-o",
            "-W",
            "-l",
            "-d",
            "--justfile",
            "--working-directory",
            "-t",
            "--taskfile",
            "-e",
            "--environment",
        ),
    )
    if c.prog == "pixi" and pos and pos[0] in ("install", "add", "remove"):
        return verdict("install", "pixi", pos[0])
    if c.prog == "pixi" and pos and pos[0] == "run":
        pos = pos[1:]
    targets = [p for p in pos if "=" not in p]
    if c.prog == "earthly":
        targets = [t.rsplit("+", 1)[-1] for t in targets]
    default = "build" if c.prog in ("make", "gmake", "mage", "earthly") else "run"
    return tasks_verdict(c.prog, targets, default)


# ---- containers ------------------------------------------------------------------------------------
_DOCKER_RUN_VALUES = (
    "-v",
    "--volume",
    "-e",
    "--env",
    "-p",
    "--publish",
    "--name",
    "-w",
    "--workdir",
    "--network",
    "--entrypoint",
    "-u",
    "--user",
    "--env-file",
    "--platform",
    "--mount",
    "-m",
    "--memory",
    "--cpus",
    "-l",
    "--label",
    "--add-host",
    "--device",
    "--gpus",
    "-h",
    "--hostname",
    "--restart",
    "--shm-size",
    "--ulimit",
    "--pull",
    "--cap-add",
    "--security-opt",
    "-f",
    "--file",
    "-t",
    "--tag",
    "--build-arg",
    "--target",
    "--project-name",
    "--profile",
    "--index",
    "--detach-keys",
    "--log-driver",
)


@handler
def docker(c: Call) -> Verdict:
    args = list(c.args)
    tool = "docker" if c.prog != "podman" else "podman"
    compose = c.prog == "docker-compose"
    while args and args[0].startswith("-"):
        args = (
            args[2:]
            if args[0]
            in (
                "-H",
                "--host",
                "--context",
                "-c",
                "-f",
                "--file",
                "-p",
                "--project-name",
                "--log-level",
                "--env-file",
                "--profile",
            )
            else args[1:]
        )
    if args and args[0] == "compose":
        compose = True
        args = args[1:]
        while args and args[0].startswith("-"):
            args = (
                args[2:]
                if args[0] in ("-f", "--file", "-p", "--project-name", "--env-file", "--profile")
                else args[1:]
            )
    if not args:
        return verdict("env", tool, "*", RO)
    sub, rest = args[0], args[1:]
    name = ("compose-" if compose else "") + sub
    if sub == "exec" or (compose and sub == "run"):
        inner = positionals(rest, _DOCKER_RUN_VALUES, stop_at_dashdash=False)
        return c.sub(inner[1:]) if len(inner) > 1 else verdict("run", tool, name, UNK)
    if sub == "run" and not compose:
        inner = positionals(rest, _DOCKER_RUN_VALUES)
        return c.sub(inner[1:]) if len(inner) > 1 else verdict("run", tool, "run", UNK)
    if sub in ("build", "buildx"):
        return verdict("build", tool, name)
    if sub in ("up", "start", "restart", "create"):
        return verdict("run", tool, name, UNK)
    if sub in ("down", "stop", "kill", "rm", "rmi", "prune", "system", "volume", "network") and (
        sub not in ("volume", "network", "system") or any(a in ("rm", "prune") for a in rest)
    ):
        return verdict("env", tool, name, DES)
    if sub in ("pull", "push", "login", "logout", "search"):
        return verdict("env", tool, name, NET)
    if sub in ("cp",):
        return verdict("edit", tool, name, WR)
    return verdict("env", tool, name, RO)


@handler
def cloud(c: Call) -> Verdict:
    pos = positionals(
        c.args,
        (
            "-n",
            "--namespace",
            "-f",
            "--filename",
            "-o",
            "--output",
            "--context",
            "-c",
            "--region",
            "--project",
            "--profile",
            "-l",
            "--selector",
        ),
    )
    sub = pos[0] if pos else ""
    if c.prog == "kubectl" and sub == "exec" and "--" in c.args:
        return c.sub(c.args[c.args.index("--") + 1 :])
    destructive = {"delete", "destroy", "rm", "uninstall", "drain", "scale"}
    writes = {
        "apply",
        "create",
        "install",
        "upgrade",
        "deploy",
        "set",
        "patch",
        "edit",
        "rollout",
        "import",
        "push",
        "init",
        "up",
    }
    effect = DES if sub in destructive else NET
    if sub in ("plan", "validate", "fmt", "lint"):
        return verdict(
            "lint" if sub in ("validate", "lint") else "format" if sub == "fmt" else "env",
            c.prog,
            sub,
            RO if sub != "plan" else NET,
        )
    return verdict(
        "env", c.prog, word_target(sub) if sub else "*", effect if sub in destructive | writes else NET
    )


@handler
def rails(c: Call) -> Verdict:
    pos = positionals(c.args, ("-e", "--environment", "-p", "--port", "-b"))
    sub = pos[0] if pos else ""
    fixed = {
        "test": "test",
        "spec": "test",
        "s": "run",
        "server": "run",
        "serve": "run",
        "c": "run",
        "console": "run",
        "tinker": "run",
        "g": "edit",
        "generate": "edit",
        "make": "edit",
        "routes": "env",
        "route:list": "env",
        "about": "env",
    }
    cat = fixed.get(sub.split(":", 1)[0] if sub.startswith("make:") else sub)
    if cat is None:
        cat = "run" if sub.startswith(("db:", "migrate")) else task_category(sub, "run") if sub else "env"
    return verdict(cat, c.prog, word_target(sub) if sub else "*")


@handler
def php(c: Call) -> Verdict:
    if c.args[:1] == ["artisan"]:
        return rails(Call("artisan", c.args[1:], c.step))
    if "-l" in c.args:
        return verdict("lint", "php", paths_target(positionals(c.args)), RO)
    pos = positionals(c.args, ("-d", "-c"))
    return verdict("run", "php", paths_target(pos[:1]) if pos else "*", UNK)


@handler
def migrations(c: Call) -> Verdict:
    pos = positionals(c.args, ("--schema", "-c", "--config", "--name", "-n", "-m", "--message"))
    sub = pos[0] if pos else ""
    cats = {"generate": "build", "format": "format", "validate": "lint", "check": "lint", "studio": "run"}
    cat = cats.get(sub, "run")
    target = "-".join(p for p in pos[:2] if p.isalpha() and p.islower()) or word_target(sub)
    return verdict(cat, c.prog, target or "*", WR if cat != "run" else UNK)
