"""The command line that hands a shell command to the runner (the router's ``updatedInput``).

The runner is started as a file by the interpreter outloop is installed in, in isolated mode without
``site`` (``-I -S``), as the hook shim is: that start costs about a bare interpreter start, where the
full CLI would cost several times more. Stdlib only.
"""

from __future__ import annotations

import os
import shlex
import sys

MARKER = "--outloop-run"  # present in every rewritten command: a command that has it is never wrapped again


def runner_path() -> str:
    """The runner's entry file (``main.py`` beside this module)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "main.py")


def runner_command(command: str, family: str | None = None, rule: str | None = None,
                   python: str | None = None) -> str:
    """The shell command that runs ``command`` through the runner: ``python -I -S main.py
    --outloop-run [--family F] [--rule R] -- COMMAND`` (``COMMAND`` is one argument, run with ``bash -c``)."""
    argv = [python or sys.executable, "-I", "-S", runner_path(), MARKER]
    if family:
        argv += ["--family", family]
    if rule:
        argv += ["--rule", rule]
    argv += ["--", command]
    return shlex.join(argv)


def is_wrapped(command: str) -> bool:
    """Whether ``command`` already goes through the runner (or ``outloop run``/``outloop wait``)."""
    if MARKER in command:
        return True
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    pairs = zip(words, words[1:], strict=False)
    return any(os.path.basename(w) == "outloop" and nxt in ("run", "wait") for w, nxt in pairs)
