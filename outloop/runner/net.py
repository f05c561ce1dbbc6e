"""Whether the runner prints a command's output unchanged or its compact result: a routed command must
never cost the agent tokens. Pure functions and their settings; stdlib only and cheap to import (it is on
the path of every run).

The two texts compared are what the agent would read either way:

- the *passthrough*: the command's whole output as the agent's own Bash tool would return it (Claude Code
  cuts an output longer than ``BASH_MAX_OUTPUT_LENGTH`` characters, 30,000 by default, to its first and
  last halves), printed byte for byte with nothing added;
- the *compact* text: the family's summary plus the runner's footer (the log's path, how to see more).

Both are counted with the project's token estimate (``ceil(characters / characters per token)``, as
``agents.calibration.Estimator.tokens``; ``OUTLOOP_CHARS_PER_TOKEN``, default 4). The compact text is
printed only when it saves more than ``OUTLOOP_RUN_MIN_SAVING_TOKENS`` (default 0) tokens; otherwise the
output goes through unchanged, so routing saves that command nothing and costs it nothing. The runner
(``run.finish``) asks only about an output past its thresholds (``OUTLOOP_RUN_MAX_LINES``/``_TOKENS``):
one that ended within them is short and printed as is, without importing a summariser; shadow replay
renders recorded outputs through the same code (``recorded.printed_for``).
"""

from __future__ import annotations

import os

DEFAULT_CHARS_PER_TOKEN = 4.0  # agents.calibration.DEFAULT_CHARS_PER_TOKEN (not imported: stdlib only)
DEFAULT_MIN_SAVING_TOKENS = 0
AGENT_LIMIT = 30_000  # Claude Code's Bash output limit in characters (agents.enforced.AGENT_LIMIT)


class Settings:
    """The decision's settings, read from the environment (a bad value gives the default)."""

    __slots__ = ("chars_per_token", "min_saving", "agent_limit")

    def __init__(self, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN,
                 min_saving: int = DEFAULT_MIN_SAVING_TOKENS, agent_limit: int = AGENT_LIMIT) -> None:
        self.chars_per_token, self.min_saving, self.agent_limit = chars_per_token, min_saving, agent_limit

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str]) -> Settings:
        return cls(_float(env, "OUTLOOP_CHARS_PER_TOKEN", DEFAULT_CHARS_PER_TOKEN, 1.0, 8.0),
                   int(_float(env, "OUTLOOP_RUN_MIN_SAVING_TOKENS", DEFAULT_MIN_SAVING_TOKENS, 0, 1e9)),
                   int(_float(env, "BASH_MAX_OUTPUT_LENGTH", AGENT_LIMIT, 1, 1e12)))


def _float(env: dict[str, str] | os._Environ[str], name: str, default: float, low: float, high: float) -> float:
    try:
        value = float(env.get(name, "") or default)
    except ValueError:
        return default
    return value if low <= value <= high else default


def tokens(chars: int, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    """Estimated tokens of a text of ``chars`` characters (``Estimator.tokens``: 0 for an empty text)."""
    if chars <= 0:
        return 0
    whole = chars / chars_per_token
    n = int(whole)
    return n if n == whole else n + 1


def agent_chars(total_chars: int, limit: int = AGENT_LIMIT) -> int:
    """Characters the agent's Bash tool returns for an output of ``total_chars``: all of them within
    ``limit``, else the first and last ``limit // 2`` joined by a newline (``agents.enforced.agent_view``)."""
    return total_chars if total_chars <= limit else 2 * (limit // 2) + 1


def passthrough(raw_tokens: int, compact_tokens: int, min_saving: int = DEFAULT_MIN_SAVING_TOKENS) -> bool:
    """Whether to print the output unchanged: the compact text does not save more than ``min_saving``
    tokens over it (equal sizes, or a compact text larger than the output, pass it through)."""
    return raw_tokens - compact_tokens <= min_saving


def surely_short(raw_tokens: int, footer_tokens: int, min_saving: int = DEFAULT_MIN_SAVING_TOKENS) -> bool:
    """Whether the output passes through whatever its summary: the compact text is at least its footer,
    so an output no longer than the footer (plus ``min_saving``) is known short without summarising it
    (the summariser's import alone costs about two interpreter starts)."""
    return passthrough(raw_tokens, footer_tokens, min_saving)


def footer(log: str, raw_lines: int, raw_bytes: int) -> str:
    """The two lines after every compact result: the log's path with the output's size, and how to see
    more. An output printed unchanged gets none."""
    return (f"[outloop] full output ({raw_lines} lines, {raw_bytes} bytes): {log}\n"
            "[outloop] see more: grep -n PATTERN LOG | head -50, or sed -n 'FROM,TOp' LOG (LOG: the path above)")
