"""Helpers for the family fidelity tests: run a real tool (or load a recorded output), turn its bytes into
the lines a family reads (decoded with errors="replace", ANSI escapes stripped, as the runner hands them
over), and check what the compact result kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from outloop.runner.compact import log_lines
from outloop.runner.families.base import Compact, Limits

DATA = Path(__file__).resolve().parent / "data" / "runner"


@dataclass
class Output:
    """One command's interleaved stdout+stderr and exit code."""

    command: str
    raw: bytes
    exit_code: int


def lines_of(raw: bytes) -> list[str]:
    """The lines a family reads from a log holding ``raw``, as the runner reads them."""
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "run.log")
        with open(log, "wb") as f:
            f.write(raw)
        return list(log_lines(log))


def run(command: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Output:
    """Runs ``command`` with ``bash -c`` in ``cwd``, stderr into stdout, as the runner does."""
    # a make that runs the tests (``make test``) exports its level: a make run here would print
    # ``make[1]:`` instead of the ``make:`` a user sees
    outer = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    full = {**outer, **(env or {})}
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=full, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout, check=False)
    return Output(command, proc.stdout, proc.returncode)


def need(tool: str) -> str:
    """The path of ``tool``, or skip the test when it is not on this machine."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed here")
    return path


def recorded(family: str, case: str) -> Output:
    """A recorded output ``data/runner/<family>/<case>.txt`` and its metadata ``<case>.json`` (the
    command, the tool's version, the exit code, and whether it is a real run)."""
    meta = json.loads((DATA / family / f"{case}.json").read_text())
    assert meta["command"] and meta["tool_version"] and meta["source"], meta
    return Output(meta["command"], (DATA / family / f"{case}.txt").read_bytes(), int(meta["exit_code"]))


def summarise(family: ModuleType, out: Output, limits: Limits | None = None) -> Compact | None:
    return family.summarise(out.command, iter(lines_of(out.raw)), out.exit_code, limits or Limits())


def compact(family: ModuleType, out: Output, limits: Limits | None = None) -> Compact:
    """The family's compact result, which must exist and be its own."""
    result = summarise(family, out, limits)
    assert result is not None, out.raw[-2000:].decode(errors="replace")
    assert result.family == family.NAME and result.kind == family.KIND
    return result


def keeps(result: Compact, *needles: str) -> None:
    """Every needle is in the compact text."""
    missing = [n for n in needles if n not in result.text]
    assert not missing, f"missing {missing} in:\n{result.text}"


def smaller(result: Compact, out: Output, factor: float = 2.0) -> None:
    """The compact text is at least ``factor`` times smaller than the raw output."""
    assert len(result.text) * factor <= len(out.raw), (len(result.text), len(out.raw))
