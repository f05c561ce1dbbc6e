"""Characters per token of tool output, calibrated against the real growth of the context between API
calls, instead of a fixed 4 (real tool output runs well under 4 characters per token).

Between two consecutive calls of one context with no compaction between them, the prompt grows by the
previous call's output plus what came back since (mostly tool results). Where tool results dominate
what was added (at least ``MIN_CHARS`` characters, and at least ``DOMINANCE`` of the growth once the
previous output is taken off), ``chars / (growth - previous output tokens)`` is one observation of the
ratio; the estimate is their median, which one odd interval (a thinking block dropped from the
context, a cache miss) cannot move. Pure: timelines in, an estimator out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from outloop.agents.timeline import Timeline

DEFAULT_CHARS_PER_TOKEN = 4.0  # what the pipeline's estimate_tokens assumes; the fallback without data
MIN_CHARS = 2_000
MIN_OBSERVATIONS = 5
RATIO_RANGE = (1.0, 8.0)  # an observation outside this is not an interval of tool output


@dataclass(frozen=True)
class Estimator:
    """Token estimate of a text: ``ceil(chars / chars_per_token)``. ``observations`` is how many
    intervals calibrated it (0: the default, not calibrated); ``error_pct`` is the median absolute
    error of its estimates on those intervals, and ``default_error_pct`` that of chars/4."""

    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    observations: int = 0
    error_pct: float | None = None
    default_error_pct: float | None = None

    def tokens(self, text: str | int) -> int:
        chars = text if isinstance(text, int) else len(text)
        return math.ceil(chars / self.chars_per_token) if chars > 0 else 0

    @property
    def calibrated(self) -> bool:
        return self.observations >= MIN_OBSERVATIONS


def intervals(timeline: Timeline) -> Iterable[tuple[int, int]]:
    """(tool-result chars added, tokens the context grew by net of the previous output) per usable interval."""
    calls = timeline.calls
    for i in range(1, len(calls)):
        chars = timeline.added_chars.get(i, 0)
        if chars < MIN_CHARS or i in timeline.compactions or calls[i].model != calls[i - 1].model:
            continue
        grown = calls[i].context_tokens - calls[i - 1].context_tokens - calls[i - 1].usage["output_tokens"]
        if grown <= 0:
            continue
        ratio = chars / grown
        if RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]:
            yield chars, grown


def calibrate(timelines: Iterable[Timeline]) -> Estimator:
    """The estimator fitted on every usable interval of ``timelines`` (the default when too few)."""
    obs = [pair for t in timelines for pair in intervals(t)]
    if len(obs) < MIN_OBSERVATIONS:
        return Estimator(observations=len(obs))
    cpt = statistics.median(chars / grown for chars, grown in obs)

    def err(rate: float) -> float:
        return round(100 * statistics.median(abs(chars / rate - grown) / grown for chars, grown in obs), 1)

    return Estimator(round(cpt, 3), len(obs), err(cpt), err(DEFAULT_CHARS_PER_TOKEN))
