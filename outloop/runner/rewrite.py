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
RUN_ID_PREFIX = "tu-"  # a run named after the agent's tool call (see run_id_for)
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


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


def run_id_for(tool_use_id: str | None) -> str | None:
    """The run id the router gives the runner for an agent's tool call: ``tu-<tool_use_id>``, so that the
    run is found from the session's transcript even when the runner printed the output unchanged (no
    footer names its log). None when the id is missing or not a plain file name."""
    if not tool_use_id or len(tool_use_id) > 128 or not set(tool_use_id) <= _ID_CHARS:
        return None
    return RUN_ID_PREFIX + tool_use_id


def with_run_id(command: str, run_id: str) -> str:
    """A runner command (``runner_command``'s) that names its run ``run_id``; any other command as is."""
    if f" {MARKER} --run-id " in command:
        return command
    return command.replace(f" {MARKER} ", f" {MARKER} --run-id {shlex.quote(run_id)} ", 1)


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
