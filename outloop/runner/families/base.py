"""The contract every output family implements, and the small helpers they share. Stdlib only.

A family is a module in this package with:

- ``NAME: str`` (the name the router uses, e.g. ``"pytest"``) and ``KIND``: ``"structured"`` for a
  family that understands its tool's output, ``"generic"`` for the generic summariser;
- ``detect(argv: list[str]) -> bool``: whether the command's main program is this family's tool.
  ``argv`` is the words of one simple command after wrappers (``env A=1``, ``sudo``, ``time``,
  ``timeout 60``, ``nice``, ``uv run``, ``poetry run``, ``npx``, ``python -m``...) are taken off, with
  ``argv[0]`` reduced to its base name (``/usr/bin/python3 -m pytest -q`` -> ``["pytest", "-q"]``);
  see :func:`outloop.runner.argv.simple_commands`;
- ``summarise(command, lines, exit_code, limits) -> Compact | None``: reads the log's lines (already
  decoded with ``errors="replace"`` and stripped of ANSI escapes, without their line ends) once, in
  order, and returns the compact result, or ``None`` for "not mine / could not parse" (the runner then
  falls back to the generic summariser). ``lines`` can be a gigabyte long: keep bounded state
  (counters, a few capped lists, a ``deque(maxlen=...)`` for the tail), never the whole output.

A failure is never dropped: every failing test id, every error with its file:line and message, and the
tool's own summary line go into the compact text (up to ``limits.max_failures`` entries, past which the
text says how many more there are and how to list them from the log).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

STRUCTURED = "structured"
GENERIC = "generic"


@dataclass(frozen=True)
class Limits:
    """How much a compact result may keep. The runner builds it from the environment
    (``OUTLOOP_RUN_MAX_LINES``, ``OUTLOOP_RUN_MAX_TOKENS``: output within both is printed unchanged)."""

    max_lines: int = 200  # output of at most this many lines ...
    max_tokens: int = 4000  # ... and at most this many estimated tokens is printed unchanged
    head_lines: int = 15  # first lines a generic result shows
    tail_lines: int = 15  # last lines a generic result (and a family, for context) shows
    max_failures: int = 1000  # failure ids / file:line entries listed; past this they are counted
    detail_lines: int = 12  # lines of detail shown under one failure (assertion, traceback end)
    max_detail_lines: int = 300  # lines of failure detail in all; past this, ids only
    max_line_chars: int = 400  # a longer line is cut (the log keeps it whole)


@dataclass
class Compact:
    """A family's compact result: ``text`` is what the runner prints (before its footer with the log
    path); ``failures`` the failing test ids or ``file:line`` entries kept; ``summary_line`` the tool's
    own summary line (``"=== 1 failed, 3 passed in 0.12s ==="``) when it printed one;
    ``omitted_lines`` how many lines of the output the text leaves out."""

    family: str
    kind: str
    text: str
    failures: list[str] = field(default_factory=list)
    summary_line: str | None = None
    omitted_lines: int = 0


def estimate_tokens(text: str) -> int:
    """A rough token count for the print-unchanged threshold (about 4 characters a token): an estimate,
    never reported as a measurement."""
    return (len(text) + 3) // 4


def clip(line: str, limits: Limits) -> str:
    """``line`` cut to ``limits.max_line_chars``, saying how much was cut."""
    n = limits.max_line_chars
    if len(line) <= n:
        return line
    return f"{line[:n]} [... {len(line) - n} more chars]"


class Capped:
    """A list that keeps its first ``cap`` items and counts the rest (bounded memory). ``len()`` counts
    them all: take ``.items`` to make a list (``list(capped)`` would size itself by ``len()``, 8 bytes for
    every item ever added)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: list[str] = []
        self.dropped = 0

    def add(self, item: str) -> None:
        if len(self.items) < self.cap:
            self.items.append(item)
        else:
            self.dropped += 1

    def __len__(self) -> int:
        return len(self.items) + self.dropped

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)


class Counted:
    """Iterates over ``lines`` counting them, so a family knows how many it read (``self.n``)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._it = iter(lines)
        self.n = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._it)
        self.n += 1
        return line


def tail(n: int) -> deque[str]:
    """A bounded buffer of the last ``n`` lines."""
    return deque(maxlen=max(n, 0))


def more_failures_note(dropped: int, hint: str) -> str:
    """The line that stands for failures past ``limits.max_failures``: how many, and how to list them."""
    return f"... and {dropped} more (not listed here; {hint})"


def join(*blocks: Iterable[str] | str | None) -> str:
    """The compact text from blocks of lines (``None`` and empty blocks are skipped)."""
    out: list[str] = []
    for b in blocks:
        if not b:
            continue
        if isinstance(b, str):
            out.append(b)
        else:
            out.extend(b)
    return "\n".join(out)
