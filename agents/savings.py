"""Net savings of one routing decision, carry-weighted and priced. Pure: facts in, one row out.

What a compact result saves (the rule, documented in docs/routing-savings.md):
- A tool output enters the prompt of the first API call after it (a cache write) and is re-read, as a
  cache read, by every later call until a compaction: ``carry`` calls in all. Replacing ``raw`` tokens by
  ``compact`` tokens saves ``(raw - compact) * carry`` tokens, and in dollars ``(raw - compact)`` at the
  5-minute cache-write rate once plus at the cache-read rate ``carry - 1`` times, at the rates of the
  model of the call that first saw it.
- What outloop adds is charged: the compact text includes the runner's own lines (the log path, how to
  see more). When the compact result dropped something the agent went on to use (fidelity below 1), the
  agent is assumed to take one more turn to open the log: that turn reads the whole context at that
  point, and the raw output then enters the context anyway. So such a decision is charged the extra
  turn plus the compact text carried, and saves nothing.
- An output no later call saw (the session ended) saves nothing.
Token counts of text come from the calibrated :class:`Estimator`; these are estimates, and a row says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from outloop.agents.calibration import Estimator
from outloop.agents.fidelity import Fidelity
from outloop.agents.pricing import PriceTable
from outloop.agents.timeline import Timeline, ToolStep


@dataclass(frozen=True)
class Saving:
    raw_tokens: int
    compact_tokens: int
    carry_calls: int
    saved_once_tokens: int
    saved_carry_tokens: int
    charged_tokens: int
    net_tokens: int
    net_usd: float | None
    context_tokens: int
    model: str | None
    day: str | None
    lost: bool  # the compact result dropped something the agent used


def _rates(prices: PriceTable, model: str | None) -> tuple[float, float] | None:
    found = prices.lookup(model)
    if found is None:
        return None
    r = found[1].rates
    return r.cache_write_5m, r.cache_read


def saving(timeline: Timeline, step: ToolStep, compact: str | int, fid: Fidelity, estimator: Estimator,
           prices: PriceTable, raw_chars: int | None = None) -> Saving:
    """The net saving of printing ``compact`` instead of the step's recorded output (or instead of an
    output of ``raw_chars`` characters: only lengths count, so either may be given as one)."""
    raw = estimator.tokens(step.output or "" if raw_chars is None else raw_chars)
    small = estimator.tokens(compact)
    carry = timeline.carry(step)
    call = timeline.calls[step.seen_by] if step.seen_by is not None else None
    context = call.context_tokens if call else 0
    model = call.model if call else None
    day = call.timestamp[:10] if call and call.timestamp else None
    lost = fid.value is not None and fid.value < 1.0
    if carry == 0:
        return Saving(raw, small, 0, 0, 0, 0, 0, 0.0, context, model, day, lost)
    once = raw - small
    if lost:
        charged = context + small * carry
        saved = 0
        net = -charged
    else:
        charged = 0
        saved = once * carry
        net = saved
    rates = _rates(prices, model)
    usd = None
    if rates is not None:
        write, read = rates
        if lost:
            usd = -(context * read + small * (write + (carry - 1) * read)) / 1e6
        else:
            usd = once * (write + (carry - 1) * read) / 1e6
        usd = round(usd, 8)
    return Saving(raw, small, carry, once, saved, charged, net, usd, context, model, day, lost)
