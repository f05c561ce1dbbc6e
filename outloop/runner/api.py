"""The runner from Python (ADWs, ``OutloopClient.run``): the same runner process the router hands
commands to, with its printed result and its run's metadata as one typed value. Stdlib only."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field

from outloop.runner import runlog
from outloop.runner.rewrite import runner_command


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # the command's own (128+N when a signal N killed it)
    summary: str  # what the runner printed: the output unchanged when short, else the compact result
    failures: list[str] = field(default_factory=list)  # failing test ids / file:line entries kept
    log_path: str | None = None  # the whole interleaved output (None when no log could be written)
    raw_bytes: int = 0
    printed_bytes: int = 0
    family: str | None = None
    kind: str | None = None  # "structured", "generic", or None when printed unchanged


def run(command: str, cwd: str | os.PathLike[str] | None = None, family: str | None = None,
        env: dict[str, str] | None = None, timeout: float | None = None) -> RunResult:
    """Run ``command`` (``bash -c``) through the runner in ``cwd`` and return its result. stdin is
    empty; ``timeout`` (seconds) ends the runner and the command if they take longer."""
    environ = dict(os.environ if env is None else env)
    run_id = runlog.new_run_id()
    argv = shlex.split(runner_command(command, family=family))
    argv[argv.index("--"):argv.index("--")] = ["--run-id", run_id]
    proc = subprocess.run(argv, cwd=cwd, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          timeout=timeout)
    summary = proc.stdout.decode("utf-8", errors="replace")
    meta_path = os.path.join(runlog.runs_dir(environ), run_id + ".json")
    try:
        with open(meta_path, encoding="ascii") as f:
            meta = json.load(f)
    except (OSError, ValueError):  # no log folder: the output was passed through
        return RunResult(exit_code=proc.returncode, summary=summary, printed_bytes=len(proc.stdout))
    return RunResult(exit_code=proc.returncode, summary=summary, failures=list(meta.get("failures") or []),
                     log_path=meta.get("log"), raw_bytes=int(meta.get("raw_bytes") or 0),
                     printed_bytes=int(meta.get("printed_bytes") or 0), family=meta.get("family"),
                     kind=meta.get("kind"))
