"""The words of a shell command's main programs, as the families' ``detect`` sees them. Stdlib only.

``simple_commands("cd app && FOO=1 uv run python -m pytest -q | tee out")`` gives
``[["cd", "app"], ["pytest", "-q"], ["tee", "out"]]``: the command split at ``;``, ``&&``, ``||``,
``|`` and ``&``, variable assignments and wrappers (``env``, ``sudo``, ``time``, ``timeout 60``,
``nice``, ``uv run``, ``poetry run``, ``npx``, ``python -m``...) taken off, and the program reduced to
its base name. It is a reading for choosing a summariser, not a shell parser: a command it cannot split
(an unclosed quote) gives ``[]`` and the generic summariser.
"""

from __future__ import annotations

import os
import re
import shlex

_OPERATORS = {";", "&&", "||", "|", "&", "|&", ";;", "(", ")", "{", "}", "!"}
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^(python|python3|pypy3?)(\.\d+)*$")
# wrapper -> options of it that take a value (the wrapper and its options are dropped)
_PLAIN: dict[str, set[str]] = {
    "env": {"-u", "--unset", "-C", "--chdir", "-S"},
    "sudo": {"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"},
    "doas": {"-u", "-C"},
    "time": {"-f", "-o"},
    "command": set(),
    "exec": {"-a"},
    "nohup": set(),
    "stdbuf": {"-i", "-o", "-e"},
    "nice": {"-n"},
    "ionice": {"-c", "-n", "-p"},
    "chronic": set(),
    "xvfb-run": {"-a", "-s", "-n", "-e", "-f"},
    "npx": {"-p", "--package", "-c"},
    "pnpx": set(),
    "bunx": set(),
}
_RUNNERS = {"uv": {"--with", "--python", "-p", "--project", "--directory", "--extra", "--group", "--env-file"},
            "poetry": {"-C", "--directory"}, "pipenv": set(), "pdm": set(), "hatch": {"-e"}, "rye": set(),
            "conda": {"-n", "--name", "-p", "--prefix"}, "mamba": {"-n", "--name"}}


def simple_commands(command: str) -> list[list[str]]:
    """Each simple command of ``command`` as its main program's words (see the module doc)."""
    try:
        lex = shlex.shlex(command, posix=True, punctuation_chars=";&|()")
        lex.whitespace_split = True
        lex.commenters = ""
        words = list(lex)
    except ValueError:
        return []
    out: list[list[str]] = []
    cur: list[str] = []
    for w in words:
        if w in _OPERATORS or (w and set(w) <= set(";&|()")):
            if cur:
                out.append(main_words(cur))
            cur = []
        else:
            cur.append(w)
    if cur:
        out.append(main_words(cur))
    return [c for c in out if c]


def _skip_options(words: list[str], i: int, valued: set[str]) -> int:
    """The index of the first word at or after ``i`` that is not an option (or an option's value)."""
    while i < len(words) and words[i].startswith("-"):
        if words[i] == "--":
            return i + 1
        i += 2 if words[i] in valued else 1
    return i


def main_words(words: list[str]) -> list[str]:
    """One simple command's words without assignments and wrappers, the program as a base name."""
    i = 0
    for _ in range(8):  # wrappers nest (``sudo env A=1 time uv run pytest``); a few levels are plenty
        while i < len(words) and _ASSIGN.match(words[i]):
            i += 1
        if i >= len(words):
            return []
        prog = os.path.basename(words[i])
        if prog in _PLAIN:
            i = _skip_options(words, i + 1, _PLAIN[prog])
        elif prog == "timeout":
            i = _skip_options(words, i + 1, {"-s", "--signal", "-k", "--kill-after"}) + 1  # + the duration
        elif prog in _RUNNERS and i + 1 < len(words) and words[i + 1] in ("run", "exec"):
            i = _skip_options(words, i + 2, _RUNNERS[prog])
        elif prog in ("pnpm", "yarn", "bun", "npm") and i + 1 < len(words) and words[i + 1] == "exec":
            i = _skip_options(words, i + 2, set())
        elif _PYTHON.match(prog) and i + 2 < len(words) and words[i + 1] == "-m":
            return [words[i + 2], *words[i + 3:]]
        else:
            break
    rest = words[i:]
    return [os.path.basename(rest[0]), *rest[1:]] if rest else []
