"""The five-hour forecast as a renewal process of API calls: when does the next call come, and how
many tokens does each one cost.

Why: within a five-hour block the question is not "what is the rate" but "does this session go on,
and for how many more calls". Both follow from what the usage rows hold:

- **Gaps between calls, by turn state.** A response that asked for tools (``turn == "tool"``) is
  followed by the tool's result and the next call within seconds or minutes: the agent is mid-turn. A
  response that ended its turn (``turn == "end"``: text only) waits for the user, who answers in
  minutes or has left for the day. So the gaps after each kind of response form their own
  distribution: the user's own gaps of that kind (all windows before ``at``) plus a weak generic prior
  (:data:`PRIOR_TURN_GAPS`, ``prior_strength`` pseudo-gaps); a response of unknown turn state (a
  source that does not say) uses every gap (:data:`PRIOR_GAPS` as its prior). The share of responses
  that end their turn (``p_end``) comes from the same history, shrunk toward :data:`PRIOR_END_SHARE`.
- **The current idle time** conditions the first draw: the next call comes after a gap, of the last
  response's kind, drawn from the gaps at least as long as the idle time so far (a survival curve).
  Ten minutes of silence after a tool call is a slow build; after an answer, it may be the end of the
  sitting. Later gaps are drawn by kind (``end`` with probability ``p_end``); a long gap ends a path's
  activity by carrying it past the end of the window.
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
from typing import Any

from outloop.agents.quota import Block, UsageRow

# A generic agent session (seconds between calls, weight): calls within a turn come seconds apart, the
# user answers within minutes, and about one gap in fifty is the end of a sitting (hours or days).
PRIOR_GAPS: tuple[tuple[float, float], ...] = (
    (3, 0.20), (8, 0.20), (20, 0.15), (45, 0.12), (90, 0.09), (180, 0.07), (420, 0.06), (900, 0.04),
    (1800, 0.03), (4 * 3600, 0.02), (24 * 3600, 0.02),
)
# After a response that asked for tools: the tool runs and the agent calls again within seconds (a build or
# a permission prompt takes minutes; a sitting rarely ends on a tool call). After a response that ended its
# turn: the user reads and answers within minutes, or has gone (about one answer in four ends the sitting).
PRIOR_TURN_GAPS: dict[str, tuple[tuple[float, float], ...]] = {
    "tool": ((3, 0.25), (8, 0.25), (20, 0.20), (45, 0.12), (90, 0.08), (180, 0.05), (420, 0.03), (1800, 0.01),
             (4 * 3600, 0.005), (24 * 3600, 0.005)),
    "end": ((20, 0.10), (60, 0.15), (180, 0.15), (420, 0.15), (900, 0.10), (1800, 0.08), (4 * 3600, 0.12),
            (24 * 3600, 0.15)),
}
PRIOR_END_SHARE = 0.1  # about one response in ten ends its turn (a turn of ten calls)
TURNS = ("tool", "end")


@dataclass(frozen=True)
class RenewalParams:
    prior_strength: float = 20.0  # pseudo-gaps the generic prior weighs against the user's own gaps
    recent_calls: int = 5
    paths: int = 2000
    max_calls: int = 4000  # per path: a bound on the work, far above a five-hour block's calls
    work: int = 500_000  # simulated calls over all paths: past it, stop at min_paths or more (bounds the time)
    min_paths: int = 200
    max_context: float = 200_000  # the model's context window: past it, a compaction brings the context back
    end_strength: float = 20.0  # pseudo-responses PRIOR_END_SHARE weighs against the user's own


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


def _weighted(own: Sequence[float], prior: Sequence[tuple[float, float]], strength: float) -> GapModel:
    """Own gaps weighted 1 and the prior's gaps weighted ``strength`` in all, as a :class:`GapModel`."""
    share = sum(w for _, w in prior)
    weighted = [(g, 1.0) for g in own] + [(g, strength * w / share) for g, w in prior]
    weighted.sort()
    cum, acc = [], 0.0
    for _, w in weighted:
        acc += w
        cum.append(acc)
    return GapModel(tuple(g for g, _ in weighted), tuple(cum))


def _gaps(rows: Sequence[UsageRow]) -> list[tuple[str | None, float]]:
    """(turn state of the earlier row, seconds) of every pair of consecutive rows in time order."""
    ordered = sorted(rows, key=lambda r: r.ts)
    return [(a.turn, (b.ts - a.ts).total_seconds()) for a, b in zip(ordered, ordered[1:], strict=False)]


def gap_model(rows: Sequence[UsageRow], prior_strength: float) -> GapModel:
    """Every gap between consecutive rows (time order) weighted 1, and :data:`PRIOR_GAPS` weighted
    ``prior_strength``: the model of a gap after a response whose turn state is unknown."""
    return _weighted([g for _, g in _gaps(rows)], PRIOR_GAPS, prior_strength)


@dataclass(frozen=True)
class TurnModel:
    """Gap models by the turn state of the response before the gap, and the share of responses that end
    their turn. ``by_turn`` is empty when no row says its turn state: every gap then comes from ``all``."""

    all: GapModel
    by_turn: dict[str, GapModel]
    p_end: float

    def of(self, turn: str | None) -> GapModel:
        return self.by_turn.get(turn or "", self.all)

    @classmethod
    def untyped(cls, gaps: GapModel) -> TurnModel:
        return cls(gaps, {}, 0.0)


def turn_model(rows: Sequence[UsageRow], prior_strength: float, end_strength: float) -> TurnModel:
    """The gaps after each kind of response (see module doc), each with its prior, and ``p_end``."""
    gaps = _gaps(rows)
    pooled = _weighted([g for _, g in gaps], PRIOR_GAPS, prior_strength)
    counts = {t: [g for k, g in gaps if k == t] for t in TURNS}
    if not any(r.turn in TURNS for r in rows):
        return TurnModel.untyped(pooled)
    by_turn = {t: _weighted(counts[t], PRIOR_TURN_GAPS[t], prior_strength) for t in TURNS}
    ends, typed = len(counts["end"]), len(counts["end"]) + len(counts["tool"])
    p_end = (ends + end_strength * PRIOR_END_SHARE) / (typed + end_strength)
    return TurnModel(pooled, by_turn, p_end)


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


def simulate(rng: random.Random, gaps: GapModel | TurnModel, idle_s: float, left_s: float, per_call: float,
             growth: float, used: int, limit: int | None, p: RenewalParams,
             turn: str | None = None) -> tuple[list[float], list[float | None]]:
    """Final totals and first limit crossings (seconds from ``at``; None: never) of ``p.paths`` paths, fewer
    (``p.min_paths`` at least) once they hold more than ``p.work`` calls in all: a heavy user's window is
    forecast in bounded time. ``turn`` is the last response's turn state: its kind of gap comes first; when
    it is known, each simulated call ends its turn with probability ``p_end`` and its gap is drawn from that
    kind, else every gap comes from the pooled model. Paths are simulated in batches (see :func:`_batch`),
    from a generator seeded by ``rng``: the same ``rng`` gives the same paths."""
    import numpy as np

    model = gaps if isinstance(gaps, TurnModel) else TurnModel.untyped(gaps)
    typed = bool(model.by_turn) and turn in model.by_turn
    tool = _Table(model.of("tool" if typed else None))
    kinds = _Kinds(tool, _Table(model.of("end")) if typed else tool, model.p_end if typed else 0.0)
    gen = np.random.default_rng(rng.getrandbits(64))
    first = model.of(turn if typed else None)
    finals: list[float] = []
    crossings: list[float | None] = []
    work = 0
    while len(finals) < p.paths and (work < p.work or len(finals) < p.min_paths):
        # the first batch measures the calls a path holds; the next one fills what is left of the work bound
        per_path = work / len(finals) if finals else None
        room = p.min_paths if per_path is None else (p.work - work) / per_path if per_path else p.paths
        n = max(min(p.paths - len(finals), max(int(room), p.min_paths - len(finals), 1)), 1)
        t = _first_times(gen, first, idle_s, left_s, n)
        batch_finals, batch_crossed, calls = _batch(gen, kinds, t, left_s, per_call, growth, used, limit, p)
        finals += batch_finals
        crossings += batch_crossed
        work += calls
    return finals, crossings


class _Table:
    """A gap model as arrays, for drawing many gaps at once: the inverse of its weighted cumulative curve."""

    def __init__(self, model: GapModel) -> None:
        import numpy as np

        self.values, self.cum, self.total = np.asarray(model.gaps), np.asarray(model.cum), model.total

    def draw(self, u: Any) -> Any:
        import numpy as np

        return self.values[np.minimum(np.searchsorted(self.cum, u * self.total), len(self.values) - 1)]


@dataclass(frozen=True)
class _Kinds:
    """The two gap tables a simulated call draws from (``p_end``: the chance of ``end``'s)."""

    tool: _Table
    end: _Table
    p_end: float


def _first_times(gen: Any, model: GapModel, idle_s: float, left_s: float, n: int) -> Any:
    """Seconds from ``at`` to each path's first call: a gap of at least ``idle_s`` (the survival curve) minus
    the idle time; past ``left_s`` when no gap that long was ever seen."""
    import numpy as np

    first = bisect.bisect_left(model.gaps, idle_s)
    if first >= len(model.gaps):
        return np.full(n, left_s + 1.0)
    below = model.cum[first - 1] if first else 0.0
    u = (below + gen.random(n) * (model.total - below)) / model.total
    return _Table(model).draw(u) - idle_s


def _batch(gen: Any, kinds: _Kinds, t: Any, left_s: float, per_call: float, growth: float, used: int,
           limit: int | None, p: RenewalParams) -> tuple[list[float], list[float | None], int]:
    """Simulate paths whose first calls come at ``t``, all at once: each round draws the next ``k`` gaps of
    every path still active, takes their call times as running sums, and keeps the calls that fall in the
    window (a prefix of each row); a path whose ``k`` calls all fell in goes on to the next round, with
    ``k`` doubling up to 1,024. Call ``c`` of a path costs ``per_call + (growth * c) % span``: the context
    grows by ``growth`` a call, and a compaction at ``max_context`` brings it back."""
    import numpy as np

    n = len(t)
    total = np.full(n, float(used))
    calls = np.zeros(n, dtype=np.int64)
    crossed = np.full(n, 0.0 if limit is not None and used >= limit else np.nan)
    span = max(p.max_context - per_call, 0.0)
    active = np.nonzero(t <= left_s)[0]
    k = 32
    while active.size:
        m = active.size
        gaps = kinds.tool.draw(gen.random((m, k)))
        if kinds.p_end:
            ends = gen.random((m, k)) < kinds.p_end
            gaps[ends] = kinds.end.draw(gen.random(int(ends.sum())))
        steps = np.cumsum(gaps, axis=1)
        times = t[active, None] + np.concatenate([np.zeros((m, 1)), steps[:, :-1]], axis=1)
        number = calls[active, None] + np.arange(1, k + 1)
        valid = (times <= left_s) & (number <= p.max_calls)
        cost = per_call + (growth * number) % span if span else np.full((m, k), per_call)
        running = total[active, None] + np.cumsum(np.where(valid, cost, 0.0), axis=1)
        if limit is not None:
            hit = valid & (running >= limit)
            fresh = np.isnan(crossed[active]) & hit.any(axis=1)
            rows = np.nonzero(fresh)[0]
            crossed[active[rows]] = times[rows, hit[rows].argmax(axis=1)]
        kept = valid.sum(axis=1)
        total[active] = running[:, -1]
        calls[active] += kept
        t[active] = np.where(kept == k, times[:, -1] + gaps[:, -1], np.inf)
        going = (kept == k) & (t[active] <= left_s) & (calls[active] < p.max_calls)
        active = active[going]
        k = min(k * 2, 1024)
    return total.tolist(), [None if np.isnan(c) else float(c) for c in crossed], int(calls.sum())


def seed(window: Block, at: datetime, used: int) -> str:
    return f"renewal:{window.start.isoformat()}:{at.isoformat()}:{used}"
