"""Backtest of the window forecasts against three baselines, on usage rows.

For every five-hour block (ccusage's definition, :func:`agents.quota.blocks`) the forecast is made at
25%, 50% and 75% of the block, from the rows up to that time only, of the block's final total
(input + output + cache writes + cache reads). A point counts when at least ``min_events`` rows of the
block precede it ("enough data"). Compared in the same run:

- ``linear``: ccusage's projection: tokens so far + (tokens so far / minutes between the block's
  first and last row so far) x minutes left; tokens so far when that span is zero.
- ``persistence``: no more usage (tokens so far).
- ``mean_of_earlier``: the mean final total of the earlier blocks (tokens so far for the first block).

Figures: mean absolute percentage error (|forecast - final| / final) of each, and the coverage and the
median width (relative to the final total) of the p10-p90 interval. All are measurements on the rows
given; nothing is estimated.

Calibration with an atom: a five-hour total has one: every path that stops ends exactly at the tokens so
far. A closed interval whose lower bound sits on that atom holds more than 80% of the forecast's
probability (``stated``: the share of paths inside it, averaged over the points), so a calibrated forecast
covers more than 80% with it. Two figures say whether the forecast is calibrated all the same: coverage
against ``stated``, and the randomized-PIT coverage (Czado, Gneiting and Held, 2009: the probability
integral transform of a final that falls on an atom is spread uniformly over the atom's share) of the
central ``high_q - low_q``, whose nominal level is exact for any distribution; its expectation over the
uniform draw is used, so the figure is deterministic.

The same backtest runs for the other windows (``kind``): ``seven_day`` windows (the same block rule
with 7 days) and calendar ``month`` windows (every month holding usage; the "plan's target" of the
monthly forecast is an error within 10%). A forecast only ever sees the rows up to its time, so
earlier windows inform later ones and never the other way round (a time-ordered backtest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from outloop.agents.quota import SPANS, Block, UsageRow, WindowKind, blocks, month_bounds
from outloop.agents.quota_forecast import ModelParams, forecast

FRACTIONS = (0.25, 0.5, 0.75)
METHODS = ("model", "linear", "persistence", "mean_of_earlier")


@dataclass(frozen=True)
class Point:
    block_start: datetime
    fraction: float
    at: datetime
    so_far: int
    final: int
    predictions: dict[str, float]
    p10: int
    p90: int
    stated: float = 0.0  # the share of the forecast's paths inside [p10, p90]
    pit: tuple[float, float] = (0.0, 0.0)  # the forecast's (P(final < actual), P(final <= actual))

    @property
    def covered(self) -> bool:
        return self.p10 <= self.final <= self.p90

    def pit_covered(self, low: float, high: float) -> float:
        """The probability that the randomized PIT of the final falls in [low, high]."""
        below, upto = self.pit
        if upto - below <= 1e-12:
            return 1.0 if low <= below <= high else 0.0
        return max(min(upto, high) - max(below, low), 0.0) / (upto - below)

    def as_dict(self) -> dict[str, object]:
        return {"block_start": self.block_start.isoformat(), "fraction": self.fraction, "at": self.at.isoformat(),
                "so_far": self.so_far, "final": self.final, "p10": self.p10, "p90": self.p90,
                "predictions": {k: round(v) for k, v in self.predictions.items()}, "stated": round(self.stated, 3),
                "pit": [round(self.pit[0], 3), round(self.pit[1], 3)]}


@dataclass(frozen=True)
class Backtest:
    points: list[Point]
    blocks: int
    window: str = "five_hour"
    mape: dict[str, float] = field(default_factory=dict)
    mape_by_fraction: dict[str, dict[str, float]] = field(default_factory=dict)
    coverage: float = 0.0
    nominal: float = 0.8
    median_width: float = 0.0  # (p90 - p10) / final, median over points
    stated: float = 0.0  # the share of paths inside [p10, p90], mean over points (see module doc)
    pit_coverage: float = 0.0  # randomized-PIT coverage of the central `nominal` (see module doc)

    @property
    def best_baseline(self) -> str:
        return min((m for m in METHODS if m != "model"), key=lambda m: self.mape.get(m, float("inf")))

    @property
    def ratio_to_best(self) -> float:
        best = self.mape.get(self.best_baseline, 0.0)
        return self.mape["model"] / best if best else float("inf")

    def as_dict(self) -> dict[str, object]:
        return {"window": self.window, "blocks": self.blocks, "points": len(self.points), "mape": self.mape,
                "mape_by_fraction": self.mape_by_fraction, "best_baseline": self.best_baseline,
                "ratio_to_best_baseline": round(self.ratio_to_best, 3), "interval": "p10-p90",
                "coverage": round(self.coverage, 3), "nominal_coverage": self.nominal,
                "stated_coverage": round(self.stated, 3), "pit_coverage": round(self.pit_coverage, 3),
                "median_width_over_final": round(self.median_width, 3),
                "detail": [p.as_dict() for p in self.points]}


def linear_projection(block: Block, at: datetime) -> float:
    """ccusage: tokens so far + tokens per minute (first to last row so far) x minutes left."""
    rows = [r for r in block.rows if r.ts <= at]
    so_far = sum(r.total for r in rows)
    minutes = (rows[-1].ts - rows[0].ts).total_seconds() / 60 if rows else 0.0
    if minutes <= 0:
        return float(so_far)
    return so_far + so_far / minutes * max((block.end - at).total_seconds() / 60, 0.0)


def _mape(points: Sequence[Point], method: str) -> float:
    errors = [abs(p.predictions[method] - p.final) / p.final for p in points if p.final > 0]
    return round(sum(errors) / len(errors), 4) if errors else 0.0


def windows_of(kind: WindowKind, ordered: Sequence[UsageRow]) -> list[Block]:
    """Every window of ``kind`` holding rows: blocks of its span, or calendar months."""
    if kind != "month":
        return blocks(ordered, SPANS[kind])
    out: list[Block] = []
    for row in ordered:
        if not out or row.ts >= out[-1].end:
            start, end = month_bounds(row.ts)
            out.append(Block(start, end, ()))
        out[-1] = Block(out[-1].start, out[-1].end, (*out[-1].rows, row))
    return out


def run_backtest(rows: Sequence[UsageRow], *, min_events: int = 2, params: ModelParams | None = None,
                 kind: WindowKind = "five_hour", fractions: Sequence[float] = FRACTIONS) -> Backtest:
    """The backtest over all windows of ``kind`` of ``rows`` (see the module docstring)."""
    ordered = sorted(rows, key=lambda r: r.ts)
    found = windows_of(kind, ordered)
    points: list[Point] = []
    finals: list[int] = []
    for block in found:
        final = block.total
        for frac in fractions:
            at = block.start + (block.end - block.start) * frac
            before = [r for r in block.rows if r.ts <= at]
            if len(before) < min_events:
                continue
            so_far = sum(r.total for r in before)
            fc = forecast(kind, ordered, at, params=params)
            preds = {"model": float(fc.projected_tokens), "linear": linear_projection(block, at),
                     "persistence": float(so_far),
                     "mean_of_earlier": sum(finals) / len(finals) if finals else float(so_far)}
            points.append(Point(block.start, frac, at, so_far, final, preds, fc.p10, fc.p90,
                                float(fc.model["interval_mass"]), fc.cdf(final)))
        finals.append(final)
    widths = sorted((p.p90 - p.p10) / p.final for p in points if p.final > 0)
    mp = params or ModelParams()
    n = max(len(points), 1)
    return Backtest(
        points, len(found), kind, {m: _mape(points, m) for m in METHODS},
        {str(f): {m: _mape([p for p in points if p.fraction == f], m) for m in METHODS} for f in fractions},
        sum(p.covered for p in points) / n, round(mp.high_q - mp.low_q, 3),
        widths[len(widths) // 2] if widths else 0.0, sum(p.stated for p in points) / n,
        sum(p.pit_covered(mp.low_q, mp.high_q) for p in points) / n)

