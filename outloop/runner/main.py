"""The runner's entry file: ``python -I -S <root>/outloop/runner/main.py --outloop-run [--family F]
[--rule R] -- COMMAND`` (see ``rewrite.runner_command``). Stdlib only, started without ``site`` so that
its start costs about a bare interpreter start.

Fail open: if the runner cannot even be imported, or fails before the command started, the command is
run by ``bash -c`` in the runner's place (``exec``), exactly as it would have been without outloop.
"""

import os
import sys


def _bare(argv: list[str]) -> None:
    """Replace this process with ``bash -c COMMAND`` (the command after ``--``); returns only when
    there is no command to run."""
    if "--" not in argv:
        return
    rest = argv[argv.index("--") + 1:]
    if not rest:
        return
    if len(rest) == 1:
        command = rest[0]
    else:
        import shlex

        command = shlex.join(rest)
    os.execvp("bash", ["bash", "-c", command])


if __name__ == "__main__":
    if __package__ in (None, ""):  # run as a file: make the ``outloop`` package beside it importable
        _root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if _root not in sys.path:
            sys.path.append(_root)  # appended: the standard library keeps precedence
    try:
        from outloop.runner import run
    except Exception:  # noqa: BLE001 - a broken install must not cost the agent its command
        _bare(sys.argv[1:])
        raise
    try:
        code = run.main(sys.argv[1:])
    except Exception:  # noqa: BLE001
        if run.STARTED:
            raise
        _bare(sys.argv[1:])
        raise
    sys.exit(code)
