"""Quota windows and burn rates over usage rows, as plain functions with time passed in.

A usage row is one API response (the ``usage`` table): its time and its four token kinds kept apart
(input, output, cache writes, cache reads) plus its cost. Windows:

- ``five_hour``: a *block* as ccusage defines it. A block starts at the hour of its first event and
  lasts 5 h; an event past the block's end, or more than 5 h after the previous event, starts a new
  one. Subscription plans meter a rolling 5-hour window that starts with the first request, which
  this follows.
- ``seven_day``: the same rule with 7 days (the weekly limit's window).
- ``month``: the calendar month (UTC) holding the time asked about (API plans: monthly tokens/spend).

Timeline of a five-hour block (``|`` events, ``[`` start at the hour, ``]`` end)::

    12:00 [  12:20 |  |   |       13:50 |           ... 17:00 ]   18:10 [ |  (a new block)

Burn rates are tokens per hour over the part of the window that has passed (``at - start``) and over
the last ``recent`` minutes; token kinds stay separate in :class:`Tokens`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

WindowKind = Literal["five_hour", "seven_day", "month"]
WINDOW_KINDS: tuple[WindowKind, ...] = ("five_hour", "seven_day", "month")
SPANS: dict[str, timedelta] = {"five_hour": timedelta(hours=5), "seven_day": timedelta(days=7)}


class UsageRow(NamedTuple):
    """One API response: time, the four token kinds, cost (None when unpriced), model, and its turn state:
    ``"tool"`` when the response asked for tools (the agent goes on once they ran), ``"end"`` when it only
    answered (the turn ended: the next call waits for the user), None when the source does not say."""

    ts: datetime
    input: int
    output: int
    cache_write: int
    cache_read: int
    cost_usd: float | None = None
    model: str | None = None
    turn: str | None = None

    @property
    def total(self) -> int:
        """All four kinds, as ccusage counts a block's tokens."""
        return self.input + self.output + self.cache_write + self.cache_read


@dataclass(frozen=True)
class Tokens:
    """Token sums by kind, and cost."""

    input: int = 0
    output: int = 0
    cache_write: int = 0
    cache_read: int = 0
    cost_usd: float = 0.0
    requests: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_write + self.cache_read

    @classmethod
    def of(cls, rows: Iterable[UsageRow]) -> Tokens:
        i = o = w = r = n = 0
        cost = 0.0
        for row in rows:
            i, o, w, r, n = i + row.input, o + row.output, w + row.cache_write, r + row.cache_read, n + 1
            cost += row.cost_usd or 0.0
        return cls(i, o, w, r, round(cost, 6), n)

    def as_dict(self) -> dict[str, float | int]:
        return {"input": self.input, "output": self.output, "cache_write": self.cache_write,
                "cache_read": self.cache_read, "total": self.total, "cost_usd": self.cost_usd,
                "requests": self.requests}


@dataclass(frozen=True)
class Block:
    """A window instance: [start, end) and the rows in it (time order)."""

    start: datetime
    end: datetime
    rows: tuple[UsageRow, ...]

    @property
    def total(self) -> int:
        return sum(r.total for r in self.rows)


def floor_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def month_bounds(at: datetime) -> tuple[datetime, datetime]:
    """[first instant of at's UTC month, first instant of the next)."""
    at = at.astimezone(UTC)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def blocks(rows: Sequence[UsageRow], span: timedelta = SPANS["five_hour"]) -> list[Block]:
    """ccusage's session blocks of ``span`` over rows sorted by time (see the module docstring)."""
    out: list[Block] = []
    current: list[UsageRow] = []
    start = last = None
    for row in sorted(rows, key=lambda r: r.ts):
        if start is None or last is None or row.ts >= start + span or row.ts - last > span:
            if start is not None:
                out.append(Block(start, start + span, tuple(current)))
            start, current = floor_hour(row.ts), []
        current.append(row)
        last = row.ts
    if start is not None:
        out.append(Block(start, start + span, tuple(current)))
    return out


def window_at(kind: WindowKind, rows: Sequence[UsageRow], at: datetime) -> Block | None:
    """The window of ``kind`` that holds ``at``, built from the rows up to ``at`` only, with those
    rows; None for a block-style window when no block is open at ``at`` (the next request opens one)."""
    seen = [r for r in rows if r.ts <= at]
    if kind == "month":
        start, end = month_bounds(at)
        return Block(start, end, tuple(sorted((r for r in seen if r.ts >= start), key=lambda r: r.ts)))
    found = blocks(seen, SPANS[kind])
    if not found:
        return None
    last = found[-1]
    if at >= last.end or at - last.rows[-1].ts > SPANS[kind]:
        return None
    return last


def empty_window(kind: WindowKind, at: datetime) -> Block:
    """The window a request at ``at`` would open (used when none is open)."""
    if kind == "month":
        start, end = month_bounds(at)
        return Block(start, end, ())
    start = floor_hour(at)
    return Block(start, start + SPANS[kind], ())


@dataclass(frozen=True)
class Burn:
    """Burn rates of one window at one time, tokens per hour (total and by kind over the elapsed part)."""

    window: str
    start: datetime
    end: datetime
    at: datetime
    used: Tokens
    per_hour: float  # total tokens / elapsed hours since the window's start
    recent_per_hour: float  # total tokens in the last `recent` / its length
    cost_per_hour: float

    def as_dict(self) -> dict[str, object]:
        return {"window": self.window, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "at": self.at.isoformat(), "used": self.used.as_dict(), "tokens_per_hour": round(self.per_hour, 1),
                "recent_tokens_per_hour": round(self.recent_per_hour, 1),
                "cost_per_hour": round(self.cost_per_hour, 4)}


def burn(kind: WindowKind, window: Block, at: datetime, recent: timedelta = timedelta(minutes=60)) -> Burn:
    """Burn rates of ``window`` at ``at``: since its start, and over the last ``recent``."""
    rows = [r for r in window.rows if r.ts <= at]
    used = Tokens.of(rows)
    hours = max((min(at, window.end) - window.start).total_seconds() / 3600, 1 / 60)
    since = at - recent
    recent_total = sum(r.total for r in rows if r.ts > since)
    return Burn(kind, window.start, window.end, at, used, used.total / hours,
                recent_total / (recent.total_seconds() / 3600), used.cost_usd / hours)


def daily_rates(rows: Sequence[UsageRow], at: datetime, days: int = 14, min_days: int = 3) -> tuple[float, float]:
    """(tokens in the 24 h before ``at``, median of the daily totals of the ``days`` days before that
    counting only days with usage): "today" against "the usual", for the abnormal-burn rule. With fewer
    than ``min_days`` such days there is no usual day yet (0.0)."""
    today = sum(r.total for r in rows if at - timedelta(days=1) < r.ts <= at)
    totals = []
    for d in range(1, days + 1):
        lo, hi = at - timedelta(days=d + 1), at - timedelta(days=d)
        t = sum(r.total for r in rows if lo < r.ts <= hi)
        if t:
            totals.append(t)
    totals.sort()
    usual = float(totals[len(totals) // 2]) if len(totals) >= min_days else 0.0
    return float(today), usual


@dataclass(frozen=True)
class MinuteUse:
    """API per-minute counts over the 60 s before ``at``: requests, input tokens as the API's ITPM
    counts them (input + cache writes; cache reads do not count on current models), output tokens."""

    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_read_tokens_not_counted": self.cache_read_tokens}


def per_minute(rows: Sequence[UsageRow], at: datetime) -> MinuteUse:
    last = [r for r in rows if at - timedelta(minutes=1) < r.ts <= at]
    return MinuteUse(len(last), sum(r.input + r.cache_write for r in last), sum(r.output for r in last),
                     sum(r.cache_read for r in last))
