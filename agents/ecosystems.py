"""Rules for the common ecosystems: python, node, go, rust, java (maven/gradle), make-like task runners,
docker, git/gh, system administration. Registered into :data:`agents.programs.RULES` on import."""

from __future__ import annotations

import re

from outloop.agents.categories import (
    DES,
    NET,
    RO,
    UNK,
    WR,
    Verdict,
    looks_like_path,
    mask_text,
    option_value,
    paths_target,
    positionals,
    verdict,
    word_target,
)
from outloop.agents.programs import RULES, Call, handler

# ---- task names (npm scripts, make targets, gradle tasks, just recipes) ---------------------------
_TASK_WORDS = (
    ("typecheck", ("typecheck", "type-check", "types", "tsc", "check-types", "mypy", "pyright")),
    ("lint", ("lint", "eslint", "stylelint", "clippy", "vet", "detekt", "checkstyle", "ruff", "flake8")),
    ("format", ("format", "fmt", "prettier", "spotless", "black", "isort")),
    (
        "test",
        (
            "test",
            "spec",
            "e2e",
            "jest",
            "vitest",
            "cypress",
            "playwright",
            "coverage",
        ),
    ),
    (
        "build",
        (
            "build",
            "compile",
            "bundle",
            "dist",
            "package",
            "assemble",
            "jar",
            "generate",
            "gen",
            "all",
            "clean",
            "docs",
            "wheel",
            "sdist",
        ),
    ),
    ("install", ("install", "deps", "vendor")),
    ("run", ("dev", "start", "serve", "run", "preview", "watch", "demo", "up")),
)


_QUERY_WORDS = frozenset(("status", "logs", "log", "ps", "health", "healthcheck", "wait", "info", "help", "version"))
"""A task named after a query or a wait (``make status``, ``npm run build:status``, ``just logs``) is
run, whatever else its name says: routing must not take it for the build or test it mentions."""
_TASK_VETO = frozenset(
    (
        *("deploy", "release", "publish", "upload", "push", "migrate", "migration", "migrations", "seed"),
        *("setup", "bootstrap", "reset", "watch", "serve", "start", "bench", "benchmark", "benchmarks"),
        *("profile", "docker"),
    )
)
"""A task whose name also says it deploys, releases, migrates, sets up, watches, serves or measures
(``build-and-deploy``, ``test:watch``, ``docker-build``, ``bench``) is run: it does more than the build or
test it mentions, or never ends, and routing trusts the routable classes."""
CONVENTIONAL_CHECK = frozenset(("make", "gmake", "gradle", "gradlew", "mvn", "mvnw"))
"""Tools for which ``check`` and ``verify`` conventionally run the test suite (GNU ``make check``,
Gradle ``check``, Maven ``verify``). Elsewhere (``npm run check``, ``just verify``) the name says
nothing certain: run."""


def task_category(name: str, default: str = "run", tool: str = "") -> str:
    """The category of a named task (an npm script, a make target, a just recipe): a routable class
    only when a word of the name says so and none says it does something else as well; otherwise
    ``default`` (run for task runners: an arbitrary name does not say what it does)."""
    low = name.lower()
    squashed = re.sub(r"[^a-z]+", "", low)
    if any(w in squashed for w in ("typecheck", "checktypes", "typescheck")):
        return "typecheck"
    tokens = set(re.split(r"[^a-z]+", low))
    if tokens & _QUERY_WORDS or tokens & _TASK_VETO:
        return "run"
    for cat, words in _TASK_WORDS:
        if any(w in tokens for w in words):
            return cat
    if tool in CONVENTIONAL_CHECK and tokens & {"check", "verify", "installcheck", "distcheck"}:
        return "test"
    for cat, words in _TASK_WORDS:
        if cat != "install" and any(low.startswith(w) or low.endswith(w) for w in words if len(w) > 3):
            return cat
    return default


_SCRIPT_WORDS = (
    ("test", frozenset(("test", "tests", "spec", "specs", "e2e", "unittest", "unittests", "coverage"))),
    ("lint", frozenset(("lint", "linter", "eslint", "ruff", "flake8", "clippy", "vet", "shellcheck"))),
    ("typecheck", frozenset(("typecheck", "mypy", "pyright", "tsc"))),
    ("format", frozenset(("format", "fmt", "prettier", "black"))),
    ("build", frozenset(("build", "compile", "bundle", "package", "generate", "gen", "codegen", "dist"))),
)
_SCRIPT_VETO = frozenset(
    (
        *("deploy", "release", "publish", "push", "upload", "migrate", "seed", "setup", "install", "uninstall"),
        *("bootstrap", "clean", "reset", "destroy", "delete", "remove", "start", "stop", "serve", "update"),
        *("upgrade", "fix", "status", "wait", "watch", "report", "bench", "benchmark", "profile"),
    )
)


def script_category(stem: str) -> str:
    """The category of a project's own script from its name (``scripts/test.sh``, ``build-docker``):
    test, lint, typecheck, format or build only when a word of the name clearly says so and no word says
    it does something else as well (``test_and_deploy.sh``); anything else, installers, checks and
    set-ups included (``setup.sh``, ``check_env.sh``, ``verify_fix.sh``), is run: its purpose is unclear,
    and routing trusts the routable classes."""
    low = stem.lower()
    tokens = set(re.split(r"[^a-z0-9]+", low))
    if tokens & _SCRIPT_VETO:
        return "run"
    if "typecheck" in re.sub(r"[^a-z]+", "", low):
        return "typecheck"
    return next((cat for cat, names in _SCRIPT_WORDS if tokens & names), "run")


def tasks_verdict(tool: str, tasks: list[str], default: str) -> Verdict:
    if not tasks:
        return verdict(default, tool, "*")
    # a named target that does not say what it does is run (``make deploy``, ``make shell``), unless it
    # names a file to make (``make bin/server``, ``make main.o``); ``make`` alone builds the default goal
    cats = [task_category(t, "build" if default == "build" and ("/" in t or "." in t) else "run", tool)
            for t in tasks]
    order = ("test", "lint", "typecheck", "format", "build", "install", "run")
    best = min(cats, key=lambda x: order.index(x) if x in order else 99)
    return verdict(best, tool, "+".join(word_target(t.lstrip(":")) for t in tasks[:4]))


# ---- python -------------------------------------------------------------------------------------
PY_MODULES = {
    "pytest": "test",
    "py.test": "test",
    "unittest": "test",
    "nose2": "test",
    "doctest": "test",
    "tox": "test",
    "nox": "test",
    "pylint": "lint",
    "flake8": "lint",
    "ruff": "lint",
    "pyflakes": "lint",
    "pycodestyle": "lint",
    "bandit": "lint",
    "mypy": "typecheck",
    "pyright": "typecheck",
    "black": "format",
    "isort": "format",
    "autopep8": "format",
    "yapf": "format",
    "py_compile": "build",
    "compileall": "build",
    "build": "build",
    "pip": "install",
    "venv": "env",
    "virtualenv": "env",
    "http.server": "run",
    "json.tool": "read",
    "sphinx": "build",
    "coverage": "test",
    "pydoc": "read",
    "site": "env",
    "ensurepip": "install",
}
INLINE_WRITE = re.compile(
    r"""open\([^)]*,\s*(?:mode\s*=\s*)?['"][wa+]|\.write_text\(|\.write_bytes\(|writeFileSync|fs\.writeFile"""
    r"""|fileinput\.input\([^)]*inplace|shutil\.(?:copy|move)|os\.(?:rename|replace)\("""
)
_TEST_DIR = re.compile(r"(?:^|/)(?:tests?|testing|__tests__|spec)/")
TEST_SCRIPTS = {
    "runtests.py",
    "run_tests.py",
    "runtests",
    "run-tests",
    "run_tests.sh",
    "run-tests.sh",
    "runtests.sh",
    "test.sh",
    "tests.sh",
    "run_test.sh",
    "test_runner.py",
}


def is_test_script(path: str) -> bool:
    p = path.replace("\\", "/")
    base = p.rsplit("/", 1)[-1]
    return (
        base in TEST_SCRIPTS
        or p.endswith("bin/test")
        or p in ("test", "./test")
        or bool(_TEST_DIR.search(p) and re.match(r"^(?:test_.*|.*_test|.*\.test|.*\.spec)\.\w+$", base))
    )


def inline_code(tool: str, code: str | None) -> Verdict:
    """Inline code (``python -c``, ``python - <<EOF``, ``node -e``): run, or edit when it visibly
    rewrites a file."""
    if code and INLINE_WRITE.search(code):
        return verdict("edit", tool, "inline", WR)
    return verdict("run", tool, "inline", UNK)


def script_verdict(tool: str, script: str, rest: list[str]) -> Verdict:
    if is_test_script(script):
        base = script.replace("\\", "/").rsplit("/", 1)[-1]
        if base in TEST_SCRIPTS or script.replace("\\", "/").endswith("bin/test") or base == "test":
            pos = positionals(rest, ("--settings", "--parallel", "-k", "--verbosity", "-v"))
            return verdict("test", script_tool(script), labels_target(pos))
        return verdict("test", tool, paths_target([script]))
    return verdict("run", tool, paths_target([script]), UNK)


def script_tool(script: str) -> str:
    p = script.replace("\\", "/").lstrip("./")
    return "bin/test" if p.endswith("bin/test") else p.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def labels_target(pos: list[str]) -> str:
    """Test labels: paths collapse like paths; dotted labels keep their common dotted prefix."""
    if not pos:
        return "*"
    if any(looks_like_path(p) for p in pos):
        return paths_target(pos)
    parts = [p.split(".") for p in pos]
    common = []
    for comps in zip(*parts, strict=False):
        if len(set(comps)) != 1:
            break
        common.append(comps[0])
    return mask_text(".".join(common)) if common else "*"


_PY_VALUES = ("-W", "-X", "-O")


@handler
def python(c: Call) -> Verdict:
    args = c.args
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-c":
            return inline_code("python", args[i + 1] if i + 1 < len(args) else "")
        if a == "-m" and i + 1 < len(args):
            return python_module(c, args[i + 1], args[i + 2 :])
        if a == "-":
            return inline_code("python", c.stdin_text())
        if a in _PY_VALUES:
            i += 2
            continue
        if a.startswith("-"):
            if a in ("--version", "-V"):
                return verdict("env", "python", "version", RO)
            i += 1
            continue
        if a.endswith("manage.py"):
            return manage_py(args[i + 1 :])
        if a.endswith("setup.py"):
            sub = positionals(args[i + 1 :])
            cat = {"test": "test", "install": "install", "develop": "install"}.get(
                sub[0] if sub else "", "build"
            )
            return verdict(cat, "setup.py", word_target(sub[0]) if sub else "*")
        return script_verdict("python", a, args[i + 1 :])
    stdin = c.stdin_text()
    return inline_code("python", stdin) if stdin is not None else verdict("run", "python", "repl", UNK)


def python_module(c: Call, module: str, rest: list[str]) -> Verdict:
    if module in ("pytest", "py.test"):
        return pytest(Call("pytest", rest, c.step))
    if module == "pip":
        return pip(Call("pip", rest, c.step))
    if module in ("unittest", "nose2", "doctest"):
        return verdict("test", module, labels_target(positionals(rest, ("-k", "-p", "-s", "-t"))))
    if module == "django":
        return manage_py(rest)
    if module in RULES and module not in ("build",):
        return RULES[module](Call(module, rest, c.step, c.piped_in, c.heredocs, c.analyzer, c.depth, module))
    cat = PY_MODULES.get(module)
    if cat is None:
        return verdict("run", "python", word_target(module.split(".")[0]) if module else "*", UNK)
    target = paths_target([p for p in positionals(rest) if looks_like_path(p)])
    return verdict(
        cat,
        module,
        target,
        RO if cat in ("read", "env") else None,
        "filter" if module == "json.tool" and c.piped_in else None,
    )


def manage_py(rest: list[str]) -> Verdict:
    pos = positionals(rest, ("--settings", "--parallel", "-k", "--verbosity", "-v", "--pythonpath"))
    sub = pos[0] if pos else ""
    if sub == "test":
        return verdict("test", "manage.py", labels_target(pos[1:]))
    cat = {
        "runserver": "run",
        "check": "lint",
        "makemigrations": "edit",
        "collectstatic": "build",
        "shell": "run",
        "migrate": "run",
    }.get(sub, "run")
    return verdict(cat, "manage.py", word_target(sub) if sub else "*")


_PYTEST_VALUES = (
    "-k",
    "-m",
    "-p",
    "-o",
    "-c",
    "--rootdir",
    "--maxfail",
    "-n",
    "--tb",
    "-W",
    "--junitxml",
    "--cov",
    "--durations",
    "--log-level",
    "--basetemp",
    "--deselect",
    "--ignore",
    "-r",
    "--confcutdir",
    "--timeout",
    "--cov-report",
    "--override-ini",
    "--import-mode",
)


@handler
def pytest(c: Call) -> Verdict:
    if "--version" in c.args or "-V" in c.args:
        return verdict("env", "pytest", "version", RO)
    pos = positionals(c.args, _PYTEST_VALUES)
    return verdict("test", "pytest", paths_target(pos))


@handler
def tox(c: Call) -> Verdict:
    env = option_value(c.args, "-e", "-s", "--session", "--sessions")
    cat = task_category(env, "test") if env else "test"
    return verdict(cat, c.prog, word_target(env) if env else "*")


@handler
def ruff(c: Call) -> Verdict:
    pos = positionals(c.args, ("--config", "--select", "--ignore", "--target-version", "--line-length"))
    sub = pos[0] if pos else "check"
    cat = "format" if sub == "format" else "lint"
    return verdict(cat, "ruff", sub if sub in ("check", "format") else "check")


@handler
def coverage(c: Call) -> Verdict:
    pos = positionals(c.args)
    if pos and pos[0] == "run":
        rest = c.args[c.args.index("run") + 1 :]
        inner = python(Call("python", rest, c.step, c.piped_in, c.heredocs, c.analyzer, c.depth, "python"))
        return inner if inner.category == "test" else verdict("test", "coverage", inner.target)
    return verdict("test", "coverage", word_target(pos[0]) if pos else "*", WR)


@handler
def pip(c: Call) -> Verdict:
    pos = positionals(c.args, ("-r", "-c", "-e", "--index-url", "-i", "--target", "-t", "--python"))
    sub = pos[0] if pos else ""
    if sub in (
        "install",
        "download",
        "uninstall",
        "sync",
        "compile",
        "wheel",
        "inject",
        "upgrade",
        "reinstall",
    ):
        return verdict("install", c.prog.replace("uv-pip", "pip"), sub, DES if sub == "uninstall" else NET)
    return verdict("env", c.prog.replace("uv-pip", "pip"), word_target(sub) if sub else "*", RO)


@handler
def conda(c: Call) -> Verdict:
    pos = positionals(c.args, ("-n", "--name", "-c", "--channel", "-p", "--prefix"))
    sub = pos[0] if pos else ""
    if sub == "run":
        i = c.args.index("run")
        rest = c.args[i + 1 :]
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] in ("-n", "--name", "-p", "--prefix") else rest[1:]
        return c.sub(rest) if rest else verdict("env", c.prog, "run")
    if sub in ("install", "create", "update", "upgrade", "remove", "uninstall"):
        return verdict("install", c.prog, sub)
    return verdict("env", c.prog, word_target(sub) if sub else "*", RO)
