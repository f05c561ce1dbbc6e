"""Fidelity of a compact result: of the strings from a tool's raw output that the agent went on to use,
the share the compact result kept.

The rule (documented in docs/routing-savings.md):
1. *Evidence* is taken from the raw output: paths (``src/app.py``, ``./a/b``), ``path:line``, test ids
   (``tests/x.py::test_y``, ``--- FAIL: TestX``), error codes (``E501``, ``TS2304``, ``error[E0308]``) and
   distinctive identifiers (with an underscore or an inner capital, at least 5 characters). Strings that
   already appear in the tool's own input are not evidence (the agent knew them before).
2. A string is *used* when it appears in the input of one of the agent's next ``WINDOW`` tool calls, or
   in the text of its messages up to the last of them.
3. Fidelity = used strings the compact text contains / used strings. With no used string there is no
   evidence either way: fidelity is None (counted apart, never as 1).
Pure: strings in, numbers out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

WINDOW = 5
MAX_EVIDENCE = 2_000  # strings looked at per output: bounded work on huge outputs

_PATTERNS = (
    re.compile(r"(?:[\w.-]+/)+[\w.-]+\.\w{1,8}(?::\d+(?::\d+)?)?"),  # paths with a file name, :line(:col)
    re.compile(r"\b[\w.-]+\.(?:py|js|ts|tsx|jsx|go|rs|c|h|cc|cpp|java|rb|swift|kt|md|json|toml|yaml|yml)"
               r"(?::\d+(?::\d+)?)?\b"),
    re.compile(r"[\w/.-]+::[\w:\[\]-]+"),  # pytest / cargo test ids
    re.compile(r"\b(?:[A-Z]{1,4}\d{3,5}|TS\d{4}|E\d{4})\b"),  # error codes
    re.compile(r"\b(?=\w*(?:_|[a-z][A-Z]))[A-Za-z_]\w{4,}\b"),  # snake_case / camelCase identifiers
)


@dataclass(frozen=True)
class Fidelity:
    used: int
    kept: int

    @property
    def value(self) -> float | None:
        return None if self.used == 0 else self.kept / self.used


def evidence(raw: str, own_input: str = "") -> set[str]:
    """The distinctive strings of a raw output (see the module docstring), minus those in its own input."""
    found: set[str] = set()
    for pattern in _PATTERNS:
        for m in pattern.finditer(raw):
            s = m.group(0).rstrip(".:")
            if len(s) >= 4 and s not in own_input:
                found.add(s)
                if len(found) >= MAX_EVIDENCE:
                    return found
    return found


def used_strings(strings: Iterable[str], later: Iterable[str]) -> set[str]:
    """Those of ``strings`` that occur in any of the ``later`` texts (the next inputs and messages)."""
    text = "\n".join(later)
    return {s for s in strings if s in text}


def fidelity(raw: str, compact: str, own_input: str, later: Iterable[str]) -> Fidelity:
    """Fidelity of ``compact`` as the stand-in for ``raw``, given the agent's ``later`` texts."""
    used = used_strings(evidence(raw, own_input), later)
    return Fidelity(len(used), sum(1 for s in used if s in compact))
