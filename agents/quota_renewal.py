"""The five-hour forecast as a renewal process of API calls: when does the next call come, and how
many tokens does each one cost.

Why: within a five-hour block the question is not "what is the rate" but "does this session go on,
and for how many more calls". Both follow from two things the usage rows hold:

- **Gaps between calls.** Every gap between two consecutive calls before ``at`` (the user's own
  history, all windows) plus a weak generic prior (:data:`PRIOR_GAPS`, ``prior_strength`` pseudo-gaps)
  forms the gap distribution. The current idle time conditions the first draw: the next call comes
  after a gap drawn from the gaps at least as long as the idle time so far (a survival curve), so a long
  silence makes a stop likely only when the user's long silences usually were stops. Later gaps are
  drawn from the whole distribution; a long gap ends a path's activity by carrying it past the end.
- **Tokens per call.** A call re-reads the conversation (cache reads dominate), so its cost is about
  the current context size: the median total of the window's last ``recent_calls`` calls, growing each
  call by the window's average growth (:func:`context_growth`); at the model's context window
  (``max_context``) a compaction brings it back to where it started, as Claude Code's auto-compaction does.

``paths`` paths are simulated from ``at`` to the window's end. The point forecast minimises the
expected absolute percentage error over the paths (the 1/final-weighted median); p10 and p90 come
from the same paths. All of it is a function of (rows, at) and seeded from them: the same input gives
the same forecast.
"""

from __future__ import annotations

import bisect
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from outloop.agents.quota import Block, UsageRow

# A generic agent session (seconds between calls, weight): calls within a turn come seconds apart, the
# user answers within minutes, and about one gap in fifty is the end of a sitting (hours or days).
PRIOR_GAPS: tuple[tuple[float, float], ...] = (
    (3, 0.20), (8, 0.20), (20, 0.15), (45, 0.12), (90, 0.09), (180, 0.07), (420, 0.06), (900, 0.04),
    (1800, 0.03), (4 * 3600, 0.02), (24 * 3600, 0.02),
)


@dataclass(frozen=True)
class RenewalParams:
    prior_strength: float = 20.0  # pseudo-gaps the generic prior weighs against the user's own gaps
    recent_calls: int = 5
    paths: int = 2000
    max_calls: int = 4000  # per path: a bound on the work, far above a five-hour block's calls
    work: int = 500_000  # simulated calls over all paths: past it, stop at min_paths or more (bounds the time)
    min_paths: int = 200
    max_context: float = 200_000  # the model's context window: past it, a compaction brings the context back


@dataclass(frozen=True)
class GapModel:
    """Gaps (seconds, ascending) with cumulative weights, for weighted draws and conditional draws."""

    gaps: tuple[float, ...]
    cum: tuple[float, ...]

    @property
    def total(self) -> float:
        return self.cum[-1] if self.cum else 0.0

    def draw(self, rng: random.Random, at_least: float = 0.0) -> float | None:
        """A gap drawn with its weight among those of ``at_least`` seconds or more; None when there is none
        (a gap equal to the idle time so far is still possible: its call would come now)."""
        first = bisect.bisect_left(self.gaps, at_least)
        if first >= len(self.gaps):
            return None
        below = self.cum[first - 1] if first else 0.0
        u = below + rng.random() * (self.total - below)
        return self.gaps[min(bisect.bisect_left(self.cum, u), len(self.gaps) - 1)]

    def survival(self, seconds: float) -> float:
        """The weight share of gaps of ``seconds`` or more (the survival curve at ``seconds``)."""
        first = bisect.bisect_left(self.gaps, seconds)
        below = self.cum[first - 1] if first else 0.0
        return (self.total - below) / self.total if self.total else 0.0


def gap_model(rows: Sequence[UsageRow], prior_strength: float) -> GapModel:
    """The gaps between consecutive rows (time order) weighted 1, and the prior's weighted ``prior_strength``."""
    times = sorted(r.ts for r in rows)
    weighted = [((b - a).total_seconds(), 1.0) for a, b in zip(times, times[1:], strict=False)]
    share = sum(w for _, w in PRIOR_GAPS)
    weighted += [(g, prior_strength * w / share) for g, w in PRIOR_GAPS]
    weighted.sort()
    cum, acc = [], 0.0
    for _, w in weighted:
        acc += w
        cum.append(acc)
    return GapModel(tuple(g for g, _ in weighted), tuple(cum))


def tokens_per_call(window: Block, recent: int) -> float:
    """The median total of the window's last ``recent`` calls: about the current context size."""
    last = [r.total for r in window.rows[-recent:]]
    return float(statistics.median(last)) if last else 0.0


def context_growth(window: Block, recent: int) -> float:
    """Tokens a call adds to the next one's context, on average over the window: the rise of the median
    context (input + cache write + cache read) from its first ``recent`` calls to its last ones, per call
    in between; 0 with fewer than ``2 * recent`` calls or a shrinking context (a compaction, a new session)."""
    ctx = [r.input + r.cache_write + r.cache_read for r in window.rows]
    if len(ctx) < 2 * recent:
        return 0.0
    rise = statistics.median(ctx[-recent:]) - statistics.median(ctx[:recent])
    return max(rise / (len(ctx) - recent), 0.0)


def simulate(rng: random.Random, gaps: GapModel, idle_s: float, left_s: float, per_call: float, growth: float,
             used: int, limit: int | None, p: RenewalParams) -> tuple[list[float], list[float | None]]:
    """Final totals and first limit crossings (seconds from ``at``; None: never) of ``p.paths`` paths, fewer
    (``p.min_paths`` at least) when they hold more than ``p.work`` calls in all: a heavy user's window is
    forecast in bounded time. The inner loop is the whole cost, hence its local names and inlined draw."""
    finals: list[float] = []
    crossings: list[float | None] = []
    values, cum, total_w = gaps.gaps, gaps.cum, gaps.total
    last, rand, find = len(values) - 1, rng.random, bisect.bisect_left
    span = max(p.max_context - per_call, 0.0)  # context to grow before a compaction brings it back
    work = 0
    while len(finals) < p.paths and (work < p.work or len(finals) < p.min_paths):
        total, crossed = float(used), (0.0 if limit is not None and used >= limit else None)
        first = gaps.draw(rng, idle_s)
        t = first - idle_s if first is not None else left_s + 1
        calls = 0
        while t <= left_s and calls < p.max_calls:
            calls += 1
            total += per_call + (growth * calls) % span if span else per_call
            if crossed is None and limit is not None and total >= limit:
                crossed = t
            t += values[min(find(cum, rand() * total_w), last)]
        work += calls
        finals.append(total)
        crossings.append(crossed)
    return finals, crossings


def seed(window: Block, at: datetime, used: int) -> str:
    return f"renewal:{window.start.isoformat()}:{at.isoformat()}:{used}"
