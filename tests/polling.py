"""Waiting for a condition in tests that drive real processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path


def tail(path: Path, lines: int = 80) -> str:
    """The last ``lines`` lines of a log file, or why there are none."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def wait(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.2,
         logs: Iterable[Path] = ()) -> None:
    """Poll ``cond`` every ``step`` s; an AssertionError naming ``what`` when it is not true within
    ``timeout`` s. The tails of ``logs`` are appended to the error, so a failure in CI carries what
    the processes were doing."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            detail = "".join(f"\n--- last lines of {p} ---\n{tail(p)}" for p in logs)
            raise AssertionError(f"{what}: not within {timeout:.0f}s{detail}")
        time.sleep(step)
