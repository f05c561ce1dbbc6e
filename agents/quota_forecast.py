"""Forecast of a quota window: projected usage at the window's end, time to a limit, and a p10-p90
interval, from simulated paths of an on/off activity model fitted by empirical Bayes.

A five-hour window that holds calls is forecast instead by the renewal model of
:mod:`agents.quota_renewal` (gaps between calls, tokens per call), which knows a session's idle time and
context size; this module's bin model serves the seven-day and monthly windows and a five-hour window
with no call yet (``ModelParams.renewal = None`` uses it everywhere).

Why not a straight line: real usage comes in sessions that stop. ccusage's projection (tokens so far +
current rate x time left) assumes the agent keeps going until the window ends; it overshoots every
block whose session ended, and "no more usage" undershoots every one that goes on. The model here
learns, from the user's own past windows, how activity continues:

- Time is cut into bins aligned on the window's start (5 min for ``five_hour``, 1 h for
  ``seven_day``, 1 day for ``month``). A bin is *active* when it holds usage.
- ``P(active | idle streak s)``: the chance that the next bin is active after ``s`` idle bins
  (``s = 0``: the last bin was active), counted over past windows (each up to its end, so the
  stops are counted) and the current one, shrunk toward a prior (Beta, ``prior_strength`` pseudo-bins).
- Tokens of an active bin: the current window's mean active bin, shrunk toward the past windows' mean
  (``rate_strength`` pseudo-bins), with the spread of past active bins (ratios to their window's mean).
- ``paths`` paths are simulated from ``at`` to the window's end; the median is ``projected_tokens``,
  p10 and p90 the interval; time to a limit is the median first crossing (None when most paths stay
  below it).

Everything is a function of (rows, at): only rows up to ``at`` are used, so a forecast can be
backtested. The random generator is seeded from ``at``: the same input gives the same forecast.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from outloop.agents.quota import SPANS, Block, UsageRow, WindowKind, blocks, empty_window, window_at
from outloop.agents.quota_renewal import RenewalParams, context_growth, seed, simulate, tokens_per_call, turn_model

BIN: dict[str, timedelta] = {"five_hour": timedelta(minutes=5), "seven_day": timedelta(hours=1),
                             "month": timedelta(days=1)}
MAX_STREAK = 12  # idle streaks longer than this share one estimate


@dataclass(frozen=True)
class ModelParams:
    """Priors and simulation size. The prior continuation curve (``prior_active``, by idle streak)
    says: a session that was active in the last bin goes on with probability ~0.8, and the chance of
    coming back decays with the idle time; ``prior_strength`` is how many bins of evidence it weighs."""

    prior_active: tuple[float, ...] = (0.75, 0.25, 0.15, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03, 0.03, 0.02, 0.005)
    prior_strength: float = 6.0
    rate_strength: float = 3.0
    recent_bins: int = 6
    paths: int = 1000
    low_q: float = 0.1
    high_q: float = 0.9
    renewal: RenewalParams | None = RenewalParams()  # five-hour windows: calls as a renewal process


@dataclass(frozen=True)
class Forecast:
    window: str
    start: datetime
    end: datetime
    at: datetime
    used_tokens: int
    projected_tokens: int
    p10: int
    p90: int
    mean_tokens: int
    limit_tokens: int | None = None
    time_to_limit_s: float | None = None  # median time from `at` to the limit; None: most paths never reach it
    p_exceed: float | None = None  # share of paths that pass the limit before the window's end
    basis: str = "estimate"
    model: dict[str, float | str] = field(default_factory=dict)
    # the predictive distribution of the final total: its 0th, 1st, ..., 100th percentiles (for calibration
    # checks: ``cdf``); not part of ``as_dict``
    percentiles: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def cdf(self, value: float) -> tuple[float, float]:
        """(P(final < value), P(final <= value)) under the forecast, from its percentiles; the two differ
        where the distribution has an atom (the paths that stop where the usage is now)."""
        pts = self.percentiles
        if not pts:
            return (0.0, 0.0)
        return (bisect.bisect_left(pts, value) / len(pts), bisect.bisect_right(pts, value) / len(pts))

    def as_dict(self) -> dict[str, object]:
        return {"window": self.window, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "at": self.at.isoformat(), "used_tokens": self.used_tokens,
                "projected_tokens": self.projected_tokens, "p10": self.p10, "p90": self.p90,
                "mean_tokens": self.mean_tokens, "limit_tokens": self.limit_tokens,
                "time_to_limit_s": self.time_to_limit_s, "p_exceed": self.p_exceed, "basis": self.basis,
                "model": self.model}


def _bins(rows: Sequence[UsageRow], start: datetime, until: datetime, width: timedelta) -> list[int]:
    """Token totals per bin of ``width`` from ``start`` up to ``until`` (the last bin may be partial)."""
    n = max(math.ceil((until - start) / width), 1) if until >= start else 0
    out = [0] * n
    for r in rows:
        if start <= r.ts <= until:  # a row at `until` itself is in (the last bin)
            out[min(int((r.ts - start) / width), n - 1)] += r.total
    return out


def _count_transitions(bins: Sequence[int], hits: list[float], tries: list[float]) -> None:
    streak = None  # no transition is counted before the first active bin
    for tokens in bins:
        if streak is not None:
            s = min(streak, MAX_STREAK)
            tries[s] += 1
            if tokens:
                hits[s] += 1
        streak = 0 if tokens else (None if streak is None else streak + 1)


def _history(kind: WindowKind, rows: Sequence[UsageRow], current: Block) -> list[list[int]]:
    """Bins of every past window of ``kind`` that ended before the current one started."""
    past = [r for r in rows if r.ts < current.start]
    span = SPANS.get(kind)
    if span is None:  # months: every past calendar month
        out, seen = [], sorted({(r.ts.year, r.ts.month) for r in past})
        for y, m in seen:
            b = empty_window("month", past[0].ts.replace(year=y, month=m, day=1))
            out.append(_bins([r for r in past if b.start <= r.ts < b.end], b.start, b.end, BIN[kind]))
        return out
    return [_bins(b.rows, b.start, min(b.end, current.start), BIN[kind]) for b in blocks(past, span)]


def _ape_optimal(sorted_values: Sequence[float]) -> float:
    """The point that minimises the expected absolute percentage error over the paths: the median
    weighted by 1/final (an overshoot of a small final costs more than an undershoot of a large one).
    A final of 0 (no usage at all in a window not yet opened) has no percentage error: when at least
    half the paths end there, the point is 0 (the plain median), else the weighted median of the others."""
    if sorted_values and _quantile(sorted_values, 0.5) <= 0:
        return 0.0
    weights = [1.0 / v if v > 0 else 0.0 for v in sorted_values]
    half, acc = sum(weights) / 2, 0.0
    for value, w in zip(sorted_values, weights, strict=True):
        acc += w
        if acc >= half and w:
            return value
    return _quantile(sorted_values, 0.5)


def _percentiles(sorted_values: Sequence[float]) -> tuple[float, ...]:
    return tuple(_quantile(sorted_values, k / 100) for k in range(101)) if sorted_values else ()


def _mass(sorted_values: Sequence[float], low: float, high: float) -> float:
    """The share of the paths inside [low, high]: the probability the forecast gives its own interval (more
    than ``high_q - low_q`` when an atom sits on a bound, as the paths that stop where the usage is now do)."""
    if not sorted_values:
        return 0.0
    inside = bisect.bisect_right(sorted_values, high) - bisect.bisect_left(sorted_values, low)
    return inside / len(sorted_values)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _fit(history: list[list[int]], observed: list[int], p: ModelParams) -> tuple[list[float], float, list[float]]:
    """(P(active | streak), tokens per active bin, spread ratios) by empirical Bayes."""
    hits, tries = [0.0] * (MAX_STREAK + 1), [0.0] * (MAX_STREAK + 1)
    for bins in [*history, observed]:
        _count_transitions(bins, hits, tries)
    prior = list(p.prior_active) + [p.prior_active[-1]] * (MAX_STREAK + 1 - len(p.prior_active))
    cont = [(hits[s] + p.prior_strength * prior[s]) / (tries[s] + p.prior_strength) for s in range(MAX_STREAK + 1)]
    past_active = [t for bins in history for t in bins if t]
    ratios: list[float] = []
    for bins in history:
        act = [t for t in bins if t]
        if act:
            mean = sum(act) / len(act)
            ratios += [t / mean for t in act]
    cur = [t for t in observed if t][-p.recent_bins:]  # recent active bins: the context grows in a session
    ratios += [t / (sum(cur) / len(cur)) for t in cur] if cur else []
    prior_rate = sum(past_active) / len(past_active) if past_active else (sum(cur) / len(cur) if cur else 0.0)
    rate = (sum(cur) + p.rate_strength * prior_rate) / (len(cur) + p.rate_strength)
    return cont, rate, ratios or [1.0]


def _streak(observed: Sequence[int]) -> int | None:
    """Idle bins since the last active one (0: the last bin was active); None: nothing yet."""
    for back, tokens in enumerate(reversed(observed)):
        if tokens:
            return back
    return None


def forecast(kind: WindowKind, rows: Sequence[UsageRow], at: datetime, *, limit_tokens: int | None = None,
             params: ModelParams | None = None) -> Forecast:
    """The forecast of the ``kind`` window holding ``at`` from the rows up to ``at`` (see module doc)."""
    p = params or ModelParams()
    seen = sorted((r for r in rows if r.ts <= at), key=lambda r: r.ts)
    window = window_at(kind, seen, at) or empty_window(kind, at)
    if kind == "five_hour" and window.rows and p.renewal is not None:
        return _renewal_forecast(kind, window, seen, at, limit_tokens, p.renewal, p)
    width = BIN[kind]
    observed = _bins(window.rows, window.start, at, width)
    used = sum(observed)
    history = _history(kind, seen, window)
    cont, rate, ratios = _fit(history, observed, p)
    streak = _streak(observed)
    if streak is None:  # nothing in this window yet: start as after a long idle streak
        streak = MAX_STREAK
    remaining = max(math.ceil((window.end - at) / width), 0)
    first_fraction = 1.0
    if observed and remaining:
        elapsed_in_bin = (at - window.start) - width * (len(observed) - 1)
        first_fraction = max(0.0, 1.0 - elapsed_in_bin / width) if elapsed_in_bin < width else 1.0
    rng = random.Random(f"{kind}:{at.isoformat()}:{used}")
    finals, crossings = _simulate(rng, p.paths, remaining, streak, cont, rate, ratios, first_fraction,
                                  used, limit_tokens)
    finals.sort()
    model: dict[str, float | str] = {"tokens_per_active_bin": round(rate, 1), "p_continue": round(cont[0], 3),
             "bin_seconds": width.total_seconds(), "history_windows": float(len(history))}
    offset_s = (1.0 - first_fraction) * width.total_seconds()  # part of the first simulated bin already past
    return _result(kind, window, at, used, finals, crossings, limit_tokens, width, offset_s, p, model)


def _simulate(rng: random.Random, paths: int, remaining: int, streak: int, cont: list[float], rate: float,
              ratios: list[float], first_fraction: float, used: int,
              limit: int | None) -> tuple[list[float], list[int | None]]:
    finals: list[float] = []
    crossings: list[int | None] = []
    for _ in range(paths):
        total, s, crossed = float(used), streak, None
        for i in range(remaining):
            chance = cont[min(s, MAX_STREAK)] * (first_fraction if i == 0 else 1.0)
            if rng.random() < chance:
                total += rate * rng.choice(ratios)
                s = 0
            else:
                s += 1
            if limit is not None and crossed is None and total >= limit:
                crossed = i + 1
        finals.append(total)
        crossings.append(crossed if limit is None or used < limit else 0)
    return finals, crossings


def _result(kind: WindowKind, window: Block, at: datetime, used: int, finals: list[float],
            crossings: list[int | None], limit: int | None, width: timedelta, offset_s: float, p: ModelParams,
            model: dict[str, float | str]) -> Forecast:
    ttl = p_exceed = None
    if limit is not None:
        hit = sorted(c for c in crossings if c is not None)
        p_exceed = round(len(hit) / max(len(crossings), 1), 3)
        if hit and len(hit) * 2 >= len(crossings):  # the median path crosses: its crossing time
            median_bin = sorted(c if c is not None else 10**9 for c in crossings)[(len(crossings) - 1) // 2]
            ttl = max(median_bin * width.total_seconds() - offset_s, 0.0) if median_bin else 0.0
    low, high = _quantile(finals, p.low_q), _quantile(finals, p.high_q)
    model = {**model, "interval_mass": round(_mass(finals, low, high), 3)}
    return Forecast(kind, window.start, window.end, at, used, round(min(max(_ape_optimal(finals), low), high)),
                    round(low), round(high),
                    round(sum(finals) / max(len(finals), 1)), limit, ttl, p_exceed, "estimate", model,
                    _percentiles(finals))


def _renewal_forecast(kind: WindowKind, window: Block, seen: Sequence[UsageRow], at: datetime,
                      limit: int | None, r: RenewalParams, p: ModelParams) -> Forecast:
    """A five-hour window with calls in it: the renewal model of ``agents.quota_renewal``."""
    used = sum(row.total for row in window.rows)
    gaps = turn_model(seen, r.prior_strength, r.end_strength)
    last = window.rows[-1]
    idle_s = (at - last.ts).total_seconds()
    left_s = max((window.end - at).total_seconds(), 0.0)
    per_call = tokens_per_call(window, r.recent_calls)
    growth = context_growth(window, r.recent_calls)
    finals, crossings = simulate(random.Random(seed(window, at, used)), gaps, idle_s, left_s, per_call, growth,
                                 used, limit, r, last.turn)
    finals.sort()
    ttl = p_exceed = None
    if limit is not None:
        p_exceed = round(sum(c is not None for c in crossings) / max(len(crossings), 1), 3)
        ordered = sorted(c if c is not None else float("inf") for c in crossings)
        median = ordered[(len(ordered) - 1) // 2] if ordered else float("inf")
        ttl = median if median != float("inf") else None
    low, high = _quantile(finals, p.low_q), _quantile(finals, p.high_q)
    first = gaps.of(last.turn)
    p_resume = 1 - first.survival(idle_s + left_s) / max(first.survival(idle_s), 1e-12)
    model: dict[str, float | str] = {"tokens_per_call": round(per_call, 1), "growth_per_call": round(growth, 1),
             "p_resume": round(p_resume, 3), "idle_s": round(idle_s, 1), "gaps": float(len(seen) - 1),
             "last_turn": last.turn or "unknown", "p_end": round(gaps.p_end, 3),
             "interval_mass": round(_mass(finals, low, high), 3)}
    return Forecast(kind, window.start, window.end, at, used, round(min(max(_ape_optimal(finals), low), high)),
                    round(low), round(high),
                    round(sum(finals) / max(len(finals), 1)), limit, ttl, p_exceed, "estimate", model,
                    _percentiles(finals))
