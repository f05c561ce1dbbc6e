"""``outloop wait``: run a check command every N seconds until its output changes or matches a pattern,
or a time-out passes, and print only the final state and how long it took. One command instead of an
agent's turns of ``sleep`` and the same status check. Stdlib only.

Exit code: 0 when the condition was met (the output changed, or matched ``--until``), 1 on the time-out,
2 for a command line it cannot read.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

USAGE = ("usage: outloop wait [--every N] [--timeout S] [--until REGEX | --until-change] -- CHECK_COMMAND\n"
         "  runs CHECK_COMMAND every N seconds (default 5) until its output changes (the default) or matches\n"
         "  REGEX, or S seconds pass (default 600); prints the final output and how long it took.\n"
         "  exit 0: changed or matched; 1: timed out; 2: bad command line\n")
DEFAULT_EVERY = 5.0
DEFAULT_TIMEOUT = 600.0

Check = Callable[[float], "tuple[int | None, bytes]"]  # time left -> (exit code or None if cut, output)


@dataclass
class WaitResult:
    met: bool  # the condition was met (False: timed out)
    reason: str  # "changed", "matched" or "timed out"
    output: bytes  # the last check's output
    exit_code: int | None  # the last check's exit code (None: cut at the time-out)
    checks: int
    seconds: float


def wait_loop(check: Check, every: float, timeout: float, until: re.Pattern[bytes] | None,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> WaitResult:
    """Run ``check`` until the condition holds or ``timeout`` seconds pass (time passed in for tests).
    Without ``until`` the condition is a change from the first check's output and exit code."""
    start = clock()
    first: tuple[int | None, bytes] | None = None
    checks = 0
    while True:
        left = timeout - (clock() - start)
        code, output = check(max(left, 0.0))
        checks += 1
        if until is not None and until.search(output):
            return WaitResult(True, "matched", output, code, checks, clock() - start)
        if until is None:
            if first is None:
                first = (code, output)
            elif (code, output) != first and code is not None:
                return WaitResult(True, "changed", output, code, checks, clock() - start)
        left = timeout - (clock() - start)
        if left <= 0:
            return WaitResult(False, "timed out", output, code, checks, clock() - start)
        sleep(min(every, left))


def shell_check(command: str) -> Check:
    """A check that runs ``bash -c command`` (stdout and stderr together), cut at the time left."""

    def run(left: float) -> tuple[int | None, bytes]:
        proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=max(left, 0.05))
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out

    return run


def parse(argv: list[str]) -> tuple[float, float, re.Pattern[bytes] | None, str] | None:
    """(every, timeout, until pattern or None, command), or None for a bad command line."""
    every, timeout, until = DEFAULT_EVERY, DEFAULT_TIMEOUT, None
    i = 0
    try:
        while i < len(argv):
            a = argv[i]
            if a == "--":
                rest = argv[i + 1:]
                if not rest or every <= 0 or timeout < 0:
                    return None
                import shlex

                return every, timeout, until, rest[0] if len(rest) == 1 else shlex.join(rest)
            if a == "--every":
                every, i = float(argv[i + 1]), i + 2
            elif a == "--timeout":
                timeout, i = float(argv[i + 1]), i + 2
            elif a == "--until":
                until, i = re.compile(argv[i + 1].encode(), re.MULTILINE), i + 2
            elif a == "--until-change":
                until, i = None, i + 1
            else:
                return None
    except (IndexError, ValueError, re.error):
        return None
    return None


def render(result: WaitResult, command: str) -> bytes:
    """The final state: the last output unchanged, then one line on what happened and how long it took."""
    out = result.output
    if out and not out.endswith(b"\n"):
        out += b"\n"
    code = "cut at the time-out" if result.exit_code is None else f"exit {result.exit_code}"
    line = (f"[outloop] wait: {result.reason} after {result.seconds:.1f} s ({result.checks} checks of "
            f"{command!r}; last {code})\n")
    return out + line.encode()


def main(argv: list[str]) -> int:
    """``outloop wait`` as a process: prints the final state, returns the exit code."""
    parsed = parse(argv)
    if parsed is None:
        sys.stderr.write(USAGE)
        return 2
    every, timeout, until, command = parsed
    result = wait_loop(shell_check(command), every, timeout, until)
    sys.stdout.buffer.write(render(result, command))
    sys.stdout.flush()
    return 0 if result.met else 1
