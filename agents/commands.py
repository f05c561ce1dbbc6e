"""Whole command lines: unwrap wrappers, classify each simple command, pick the step the agent is after.

Rules (``docs/signatures.md`` has the reasoning):

* wrappers are unwrapped: sudo, doas, timeout, nohup, nice, env, ``VAR=x cmd``, time, watch, xargs,
  stdbuf, exec, command, ``nix develop --command``, ``nix-shell --run``, ``uv run``, ``poetry run``,
  ``npx``, ``bash -c``, ``eval``, ``ssh host "cmd"``, ``docker exec``, ``powershell -Command``, ``cmd /c``;
* in a pipeline, filters (grep, head, tail, wc, jq, sort, ...) keep the producer's category; a
  non-filter consumer (``| xargs rm``, ``| bash``, ``| gpg --import``) is what the pipeline does;
* in a list (``&&``, ``||``, ``;``, newlines), ``cd``/``echo``/``sleep``/``export`` are noise,
  ``||`` fallbacks and ``if`` conditions count only when nothing else does, and the last action wins;
  read and search steps after an action are confirmations (``sed -i ... && grep -n ...`` is edit);
* a text producer (cat, echo, sed, head) redirected into a file is edit;
* the side effect is the worst over every step, including fallbacks and substitutions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from outloop.agents import ecosystems, platforms, sysadmin, toolchains  # noqa: F401  (register their rules)
from outloop.agents.categories import RO, UNK, WR, Verdict, basename, path_target, verdict, worst
from outloop.agents.ecosystems import is_test_script, script_verdict
from outloop.agents.programs import (
    BUILTIN,
    FILTERS,
    RULES,
    Call,
    handler,
    install,
    local_executable,
    script_by_name,
    unknown,
    version_or_help,
)
from outloop.agents.shell import ASSIGN_RE, Parsed, Pipeline, Step, heredoc_index, parse

MAX_DEPTH = 4
_PYTHON = re.compile(r"^(?:python|pypy)[\d.]*$")
_VALUE_OPTS = {
    "sudo": ("-u", "-g", "-C", "-p", "-h", "-r", "-t", "-U", "-D"),
    "doas": ("-u", "-C"),
    "timeout": ("-s", "-k", "--signal", "--kill-after"),
    "nice": ("-n", "--adjustment"),
    "ionice": ("-c", "-n", "-p", "--class", "--classdata"),
    "env": ("-u", "--unset", "-C", "--chdir", "-S"),
    "watch": ("-n", "--interval", "-d"),
    "xargs": (
        "-I",
        "-i",
        "-n",
        "-P",
        "-d",
        "-L",
        "-s",
        "-E",
        "-a",
        "--max-args",
        "--max-procs",
        "--delimiter",
    ),
    "stdbuf": ("-i", "-o", "-e"),
    "xvfb-run": ("-s", "-n", "-f", "-e", "--server-args"),
    "uv": (
        "--with",
        "--python",
        "-p",
        "--group",
        "--extra",
        "--package",
        "--directory",
        "--project",
        "--env-file",
        "--index",
        "--from",
        "-w",
        "--with-requirements",
    ),
    "poetry": ("-C", "--directory", "-P", "--project"),
    "caffeinate": ("-t", "-w"),
    "flock": ("-w", "-E", "--timeout"),
}
_SIMPLE_WRAPPERS = {
    "sudo",
    "doas",
    "nohup",
    "nice",
    "ionice",
    "time",
    "exec",
    "builtin",
    "stdbuf",
    "chronic",
    "unbuffer",
    "caffeinate",
    "xvfb-run",
    "strace",
    "ltrace",
    "valgrind",
    "firejail",
    "proxychains",
    "proxychains4",
    "torsocks",
    "flock",
    "gtimeout",
    "winpty",
    "rlwrap",
    "catchsegv",
    "setsid",
    "faketime",
    "dotenvx",
    "with-contenv",
    "arch",
    "command",
}
_RUN_WRAPPERS = {
    "poetry",
    "pipenv",
    "pdm",
    "hatch",
    "rye",
    "uv",
    "dotenv",
    "doppler",
    "devbox",
    "direnv",
    "flox",
    "infisical",
    "op",
    "conda-run",
    "aws-vault",
    "env-cmd",
    "cross-env",
}
_SHELLS = {"bash", "sh", "zsh", "dash", "ksh", "fish", "busybox", "ash"}


class Analyzer:
    """Classifies command lines. ``fast`` enables the fast lexer for the simple subset."""

    def __init__(self, fast: bool = True) -> None:
        self.fast = fast

    # -- entry points ---------------------------------------------------------------------------
    def command(self, text: str) -> Verdict:
        return self.text(text, None)

    def text(self, text: str, parent: Call | None) -> Verdict:
        depth = parent.depth + 1 if parent is not None else 0
        if depth > MAX_DEPTH or not text.strip():
            return verdict("other", "shell", "*", UNK)
        parsed = parse(text, fast=self.fast)
        return self.parsed(parsed, depth)

    def parsed(self, parsed: Parsed, depth: int = 0) -> Verdict:
        items: list[tuple[Verdict, str, str]] = []
        effects: list[str] = []
        for pl in parsed.pipelines:
            v, eff = self.pipeline(pl, parsed.heredocs, depth)
            items.append((v, pl.op, pl.ctx))
            effects.append(eff)
        if not items:
            return verdict("other", "shell", "*", RO, "noise")
        chosen = select(items)
        if chosen.category == "run" and parsed.heredocs and _rewriting_script(parsed, chosen.target):
            chosen = Verdict("edit", chosen.tool, chosen.target, WR, "action")
        return Verdict(chosen.category, chosen.tool, chosen.target, worst(*effects), chosen.role)

    # -- pipelines ------------------------------------------------------------------------------
    def pipeline(self, pl: Pipeline, heredocs: tuple[str, ...], depth: int) -> tuple[Verdict, str]:
        vs = [self.step(s, heredocs, i > 0, depth) for i, s in enumerate(pl.steps)]
        effect = worst(*(v.effect for v in vs))
        if len(vs) == 1:
            return vs[0], effect
        consumers = [v for v in vs[1:] if v.role != "filter"]
        if consumers:
            chosen = consumers[-1]
        elif vs[0].role == "noise":
            edits = [v for v in vs[1:] if v.category == "edit"]
            chosen = edits[-1] if edits else vs[-1]
        else:
            chosen = vs[0]
        if chosen.role == "filter":
            chosen = Verdict(chosen.category, chosen.tool, chosen.target, chosen.effect, "look")
        return chosen, effect

    def step(self, step: Step, heredocs: tuple[str, ...], piped_in: bool, depth: int) -> Verdict:
        call = Call(
            "", list(step.words), step, piped_in, heredocs, self, depth, step.words[0] if step.words else ""
        )
        v = verdict("env", "assign", "*", RO, "noise") if not step.words else self.argv(list(step.words), call)
        return _apply_redirects(v, step, heredocs)

    # -- simple commands ----------------------------------------------------------------------------
    def argv(self, words: list[str], parent: Call) -> Verdict:
        words = list(words)
        piped_in = parent.piped_in
        while words:
            if ASSIGN_RE.match(words[0]):
                words = words[1:]
                continue
            prog = basename(words[0]).lower()
            args = words[1:]
            if prog in _SIMPLE_WRAPPERS or prog in ("timeout", "env", "watch", "xargs", "gtimeout"):
                if prog == "command" and args[:1] in (["-v"], ["-V"]):
                    return verdict("env", "command", "which", RO)
                rest = _skip_options(prog, args)
                if prog in ("timeout", "gtimeout") and rest:
                    rest = rest[1:]  # the duration
                if prog == "watch" and len(rest) == 1 and " " in rest[0]:
                    return self.text(rest[0], parent)  # watch -n 5 'docker ps': the command is one string
                if prog == "xargs":
                    piped_in = False
                    if not rest:
                        return verdict("other", "echo", "*", RO, "filter")
                if not rest:
                    return verdict("env", prog, "*", RO)
                words = rest
                continue
            if prog in _RUN_WRAPPERS and args:
                inner = _run_wrapper(prog, args)
                if inner is not None:
                    if not inner:
                        return verdict("env", prog, "*", RO)
                    if inner[0].endswith(".py"):
                        inner = ["python", *inner]
                    words = inner
                    continue
            if prog in ("uvx", "pipx") and args and (prog == "uvx" or args[0] == "run"):
                words = args[1:] if prog == "pipx" else _skip_options("uv", args)
                continue
            if prog in ("nix", "nix-shell"):
                v = self._nix(prog, args, parent)
                if isinstance(v, Verdict):
                    return v
                words = v
                continue
            if prog in _SHELLS or prog in ("eval", "su", "script"):
                inner_verdict = self._shell(prog, args, parent, words[0])
                if inner_verdict is not None:
                    return inner_verdict
            break
        if not words:
            return verdict("env", "env", "*", RO, "noise")
        call = Call(
            _prog_name(words[0]),
            words[1:],
            parent.step,
            piped_in,
            parent.heredocs,
            self,
            parent.depth,
            words[0],
        )
        v = dispatch(call)
        if call.prog in FILTERS and piped_in and v.role != "noise":
            v = Verdict(v.category, v.tool, v.target, v.effect, "filter")
        return v

    def _nix(self, prog: str, args: list[str], parent: Call) -> Verdict | list[str]:
        for i, a in enumerate(args):
            if a in ("--command", "-c") and prog == "nix":
                return args[i + 1 :]
            if a in ("--run", "--command") and prog == "nix-shell" and i + 1 < len(args):
                return self.text(args[i + 1], parent)
        sub = args[0] if args else ""
        cats = {
            "build": "build",
            "flake": "test" if "check" in args else "env",
            "run": "run",
            "develop": "env",
            "shell": "env",
            "fmt": "format",
            "profile": "install",
        }
        return verdict(cats.get(sub, "env"), "nix", sub or "*", WR if sub == "build" else None)

    def _shell(self, prog: str, args: list[str], parent: Call, raw0: str) -> Verdict | None:
        for i, a in enumerate(args):
            if prog in ("su", "script") and a == "-c" and i + 1 < len(args):
                return self.text(args[i + 1], parent)
            if (
                prog in _SHELLS
                and a.startswith("-")
                and not a.startswith("--")
                and "c" in a[1:]
                and i + 1 < len(args)
            ):
                return self.text(args[i + 1], parent)
        if prog == "eval":
            return self.text(" ".join(args), parent)
        if prog in _SHELLS:
            pos = [a for a in args if not a.startswith("-")]
            if pos:
                if is_test_script(pos[0]):
                    return script_verdict(prog, pos[0], pos[1:])
                return script_by_name(basename(pos[0]), pos[1:])
            stdin = Call(prog, args, parent.step, False, parent.heredocs, self, parent.depth).stdin_text()
            if stdin is not None:
                return self.text(stdin, parent)
            return verdict("run", prog, "*", UNK)
        return None

    # -- PowerShell -----------------------------------------------------------------------------------
    def powershell(self, text: str, parent: Call) -> Verdict:
        from outloop.agents.sysadmin import ps_statements

        items: list[tuple[Verdict, str, str]] = []
        effects: list[str] = []
        for statement in ps_statements(text):
            vs = [self._ps_command(words, parent, i > 0) for i, words in enumerate(statement)]
            consumers = [v for v in vs[1:] if v.role != "filter"]
            chosen = consumers[-1] if consumers else vs[0]
            items.append((chosen, ";", "main"))
            effects.extend(v.effect for v in vs)
        if not items:
            return verdict("env", "powershell", "*", RO)
        chosen = select(items)
        return Verdict(chosen.category, chosen.tool, chosen.target, worst(*effects), chosen.role)

    def _ps_command(self, words: list[str], parent: Call, piped_in: bool) -> Verdict:
        if len(words) > 2 and words[0].startswith("$") and words[1] == "=":
            words = words[2:]
        if words and words[0] == "&":
            words = words[1:]
        if not words or not re.match(r"^[A-Za-z.\\/]", words[0]) or words[0].startswith("."):
            return verdict("env", "powershell", "*", RO, "noise")
        low = words[0].lower()
        if piped_in and low in FILTERS:
            return verdict("read", low, "*", RO, "filter")
        native = (
            low in RULES
            or _prog_name(words[0]) in RULES
            or low.endswith(".exe")
            or bool(re.match(r"^(?:[a-z]:|\.)[\\/]", low))
        )
        if native:
            call = Call(low, words[1:], Step(tuple(words)), piped_in, (), self, parent.depth + 1, words[0])
            sub = Call("", words, call.step, piped_in, (), self, parent.depth + 1, words[0])
            return self.argv(words, sub)
        if "-" not in low:
            return verdict("env", "powershell", "*", RO, "noise")
        verb = low.split("-", 1)[0]
        if verb in (
            "get",
            "test",
            "measure",
            "select",
            "find",
            "resolve",
            "read",
            "show",
            "out",
            "format",
            "convertfrom",
            "convertto",
            "compare",
            "where",
            "sort",
            "group",
            "search",
            "wait",
        ):
            effect = RO
        elif verb in ("stop", "remove", "disable", "clear", "uninstall", "unregister", "dismount", "suspend"):
            effect = "destructive"
        elif verb in ("invoke", "send", "connect"):
            effect = "network"
        else:
            effect = WR
        role = "filter" if piped_in and low in FILTERS else None
        return verdict("env", low, "*", effect, role)


def dispatch(c: Call) -> Verdict:
    rule = RULES.get(c.prog)
    if rule is None and _PYTHON.match(c.prog):
        rule = RULES["python"]
    raw = c.raw0.replace("\\", "/")
    if "/" in raw and (c.prog in ("test", "[", "[[") or is_test_script(raw)):
        rule = None
    if rule is None:
        if "/init.d/" in raw:
            return RULES["init.d"](c)
        if c.prog.endswith(".py") and (is_test_script(raw) or c.prog == "manage.py"):
            from outloop.agents.ecosystems import manage_py

            return manage_py(c.args) if c.prog == "manage.py" else script_verdict("python", raw, c.args)
        if is_test_script(raw):
            return script_verdict("sh", raw, c.args)
        if "/" in raw or c.prog.endswith((".py", ".sh")):
            return local_executable(c)
        return unknown(c)
    v = rule(c)
    if v.category == "vcs":
        return v
    return version_or_help(c, v)


def _prog_name(word: str) -> str:
    name = basename(word).lower()
    if "@" in name[1:]:
        name = name[0] + name[1:].split("@", 1)[0]  # npx create-next-app@latest, @scope/pkg@1
    if name in ("gradlew", "mvnw"):
        return name
    return name


def _skip_options(prog: str, args: Sequence[str]) -> list[str]:
    values = set(_VALUE_OPTS.get(prog, ()))
    rest = list(args)
    while rest:
        a = rest[0]
        if a == "--":
            return rest[1:]
        if prog == "env" and ASSIGN_RE.match(a):
            rest = rest[1:]
            continue
        if not a.startswith("-") or a == "-":
            break
        rest = rest[2:] if a in values else rest[1:]
    return rest


def _run_wrapper(prog: str, args: list[str]) -> list[str] | None:
    """``poetry run X``, ``uv run X``, ``dotenv -- X``, ``op run -- X``: the inner argv, else None."""
    if prog in ("dotenv", "env-cmd", "cross-env", "dotenvx", "aws-vault", "infisical", "doppler", "op"):
        if "--" in args:
            return args[args.index("--") + 1 :]
        if prog in ("env-cmd", "cross-env"):
            return [a for a in args if not ASSIGN_RE.match(a) and not a.startswith("-")][0:] or []
        return None
    if prog == "direnv" and args[:1] == ["exec"]:
        return args[2:]
    if prog == "devbox" and args[:1] == ["run"]:
        return args[1:]
    if prog == "uv" and args[:1] in (["run"], ["tool"]):
        rest = args[2:] if args[:2] == ["tool", "run"] else args[1:]
        return _skip_options("uv", rest)
    if prog == "uv" and args[:1] == ["pip"]:
        return ["uv-pip", *args[1:]]
    if prog in ("pdm", "hatch", "rye") and args[:2] == ["run", "test"]:
        return [f"{prog}-sub", *args[1:]]  # a project script named test, not the shell's test builtin
    if prog in ("poetry", "pipenv", "pdm", "hatch", "rye", "flox") and args[:1] in (["run"], ["activate"]):
        return _skip_options("poetry", args[1:])
    if prog == "uv":
        sub = args[0]
        cats = {
            "sync": "install",
            "add": "install",
            "lock": "install",
            "remove": "install",
            "venv": "env",
            "build": "build",
            "publish": "build",
            "python": "env",
            "tree": "env",
            "init": "other",
        }
        return ["uv-" + cats.get(sub, "env"), sub]
    if prog in ("poetry", "pdm", "hatch", "pipenv", "rye") and args:
        return [f"{prog}-sub", *args]
    return None


def select(items: list[tuple[Verdict, str, str]]) -> Verdict:
    """The step the agent is after: the last action among main, non-fallback steps; trailing reads and
    searches are confirmations. Fallbacks, conditions and substitutions count only when the main line
    has nothing; noise only when nothing else is there."""
    main = [v for v, op, ctx in items if ctx == "main" and op != "||" and v.role != "noise"]
    pool = main or [v for v, _, _ in items if v.role != "noise"] or [v for v, _, _ in items]
    actions = [v for v in pool if v.role == "action"]
    return actions[-1] if actions else pool[-1]


def _rewriting_script(parsed: Parsed, target: str) -> bool:
    """The script being run was written by a here-document in the same command and visibly rewrites a
    file (``cat > patch.py <<EOF ... open(f, 'w') ... EOF; python patch.py``): inline code, so edit."""
    from outloop.agents.ecosystems import INLINE_WRITE

    for pl in parsed.pipelines:
        for st in pl.steps:
            body = None
            out = None
            for kind, t in st.redirects:
                idx = heredoc_index(t) if kind == "in" else None
                if idx is not None and idx < len(parsed.heredocs):
                    body = parsed.heredocs[idx]
                elif kind in ("out", "append"):
                    out = t
            if (
                body is not None
                and out is not None
                and path_target(out) == target
                and INLINE_WRITE.search(body)
            ):
                return True
    return False


def _apply_redirects(v: Verdict, step: Step, heredocs: tuple[str, ...]) -> Verdict:
    files = [
        t
        for kind, t in step.redirects
        if kind in ("out", "append")
        and t
        and not t.startswith(("/dev/", "&"))
        and t.lower() not in ("nul", "$null")
    ]
    if v.tool in ("cat", "type") and v.target == "*" and v.role == "look":
        v = Verdict("other", v.tool, "*", RO, "noise")
    if not files:
        return v
    if v.role == "noise" or v.category in ("read", "search", "env"):
        return verdict("edit", v.tool, path_target(files[-1]), worst(v.effect, WR))
    return Verdict(v.category, v.tool, v.target, worst(v.effect, WR), v.role)


@handler
def _pyproject_tool(c: Call) -> Verdict:
    tool = c.prog.removesuffix("-sub")
    sub = c.args[0] if c.args else ""
    if sub in ("install", "add", "update", "lock", "remove", "sync"):
        return verdict("install", tool, sub)
    if sub in ("build", "publish"):
        return verdict("build", tool, sub)
    if sub == "test":
        return verdict("test", tool, "test")
    if sub == "check":
        return verdict("lint", tool, "check")
    return verdict("env", tool, sub or "*", RO)


install(BUILTIN)  # agents.signatures adds the user's file

__all__ = ["Analyzer", "select", "dispatch", "heredoc_index"]
