"""Helpers for the runner's tests: run the real runner entry file as the router's rewritten command does."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from outloop.runner.rewrite import runner_command

DATA = Path(__file__).resolve().parent / "data" / "runner"


def runner_env(runs: Path, **extra: str) -> dict[str, str]:
    """The test's environment without outloop settings, its runs in ``runs``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
    env["OUTLOOP_RUNS_DIR"] = str(runs)
    env.update(extra)
    return env


def run(command: str, runs: Path, *, cwd: Path | None = None, family: str | None = None, stdin: bytes = b"",
        timeout: float = 60, preexec: Any = None, **extra: str) -> subprocess.CompletedProcess[bytes]:
    """The runner on ``command`` as a real process; stdout and stderr captured apart."""
    argv = shlex.split(runner_command(command, family=family))
    return subprocess.run(argv, input=stdin, capture_output=True, cwd=cwd, env=runner_env(runs, **extra),
                          timeout=timeout, preexec_fn=preexec)


def bare(command: str, *, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """The command without the runner, as the agent would have run it (stdout and stderr interleaved)."""
    return subprocess.run(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          cwd=cwd, env=env, timeout=timeout)


def only_run(runs: Path) -> tuple[dict[str, Any], bytes]:
    """The metadata and log of the one run in ``runs``."""
    metas = sorted(runs.glob("*.json"))
    assert len(metas) == 1, metas
    meta = json.loads(metas[0].read_text())
    return meta, Path(meta["log"]).read_bytes()


def fixture(family: str, case: str) -> tuple[list[str], dict[str, Any]]:
    """A recorded output (decoded and cleaned as the runner reads logs) and its metadata."""
    from outloop.runner.compact import log_lines

    base = DATA / family / case
    return list(log_lines(str(base) + ".log")), json.loads(Path(str(base) + ".json").read_text())
