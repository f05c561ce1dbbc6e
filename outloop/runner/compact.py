"""The compact result of a long output: the log read back as text lines, the family chosen for the
command, its summary (the generic one when the family declines or fails), and the footer with the log's
path. Stdlib only; imported only when an output is too long to print unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import ModuleType

from outloop.runner.argv import simple_commands
from outloop.runner.families import by_name, detect, generic
from outloop.runner.families.base import Compact, Limits

MAX_LINE_BYTES = 64 * 1024  # a longer line (binary output, minified JSON) is cut: the log keeps it whole
DEFAULT_SCAN_SECONDS = 30.0
BINARY_SNIFF = 8192  # a NUL byte in the first 8 KiB makes an output binary (git's rule)
# CSI and OSC sequences, and the other escapes (ESC, intermediates, a final byte: "ESC ( B", which
# curses-coloured output such as mypy's ends each colour with, "ESC 7", "ESC M"): colours, cursor moves,
# titles, hyperlinks
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]*[0-~])")


def log_lines(path: str) -> Iterator[str]:
    """The log's lines as text: decoded as UTF-8 with replacement characters, ANSI escapes stripped, a
    carriage-return progress line reduced to what a terminal would finally show, line ends removed, each
    line cut at ``MAX_LINE_BYTES``. Reads in bounded pieces, so memory does not grow with the log."""
    with open(path, "rb") as f:
        cut = False  # inside a line longer than MAX_LINE_BYTES: skip until its end
        while True:
            raw = f.readline(MAX_LINE_BYTES)
            if not raw:
                return
            ended = raw.endswith(b"\n")
            if cut:
                cut = not ended
                continue
            cut = not ended and len(raw) >= MAX_LINE_BYTES
            yield clean(raw.decode("utf-8", errors="replace"))


def clean(line: str) -> str:
    """One line without its end, ANSI escapes and overwritten carriage-return segments."""
    line = line.rstrip("\n")
    if line.endswith("\r"):
        line = line[:-1]
    if "\x1b" in line:
        line = ANSI.sub("", line)
    if "\r" in line:
        parts = [p for p in line.split("\r") if p.strip()]
        line = parts[-1] if parts else ""
    return line


def choose(command: str, family: str | None) -> ModuleType:
    """The family named by the router when it exists, else the one that detects the command."""
    named = by_name(family) if family else None
    return named if named is not None else detect(simple_commands(command))


def is_binary(path: str) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(BINARY_SNIFF)


def summarise(command: str, log: str, exit_code: int, limits: Limits, family: str | None) -> Compact:
    """The compact result: the family's, else the generic one's (a family that returns None or raises
    falls back; the generic one failing is left to the caller, which then prints the log unchanged)."""
    if is_binary(log):
        return binary_summary(log)
    fam = choose(command, family)
    budget = scan_budget()
    if fam is not generic:
        try:
            result = fam.summarise(command, timed(log_lines(log), budget), exit_code, limits)
        except Exception:  # noqa: BLE001 - a summariser bug (or one out of time) must not cost the agent its output
            result = None
        if result is not None:
            return result
    return generic.summarise_log(log, exit_code, limits, budget=budget)


class OutOfTime(Exception):
    """A structured family read the log for longer than the scan budget: the generic one takes over."""


def timed(lines: Iterator[str], budget: float) -> Iterator[str]:
    """``lines``, raising ``OutOfTime`` once ``budget`` seconds have passed (checked every 4,096 lines)."""
    import time

    deadline = time.monotonic() + budget
    for i, line in enumerate(lines):
        if not i & 4095 and time.monotonic() > deadline:
            raise OutOfTime(f"past {budget} s at line {i + 1}")
        yield line


def scan_budget() -> float:
    """Seconds the generic search for error lines may take on a huge log (``OUTLOOP_RUN_SCAN_SECONDS``,
    default 30): past it the result says from which line on the log was not searched."""
    import os

    try:
        value = float(os.environ.get("OUTLOOP_RUN_SCAN_SECONDS", ""))
    except ValueError:
        return DEFAULT_SCAN_SECONDS
    return value if value >= 0 else DEFAULT_SCAN_SECONDS


def binary_summary(log: str) -> Compact:
    """Binary output is not shown (it would be noise to a model); the log keeps every byte."""
    import os

    size = os.path.getsize(log)
    text = f"[outloop] binary output ({size} bytes; a NUL byte in its first 8 KiB): not shown"
    return Compact(family=generic.NAME, kind=generic.KIND, text=text, omitted_lines=0)


def footer(log: str, raw_lines: int, raw_bytes: int, compact: bool) -> str:
    """The log's path and how to see more, printed after every compact result (``net.footer``); an
    output printed unchanged gets no footer since the runner charges nothing to a command it does not
    shorten, and ``compact=False`` gives the line older runners printed after one."""
    if not compact:
        return f"[outloop] log: {log}"
    from outloop.runner.net import footer as net_footer

    return net_footer(log, raw_lines, raw_bytes)
