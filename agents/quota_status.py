"""The quota status at one time: every window's use, burn, forecast and the throttle decision.

:func:`assess` is what ``outloop quota`` prints and what the quota snapshots store; it combines the
pure parts (windows, forecast, risk) and takes the rows, the official signals and the time as inputs.
An official figure (Claude Code's status line ``rate_limits``) wins over an estimate, and every figure
says which it is (``basis``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from outloop.agents.quota import (
    WINDOW_KINDS,
    Block,
    UsageRow,
    WindowKind,
    burn,
    daily_rates,
    empty_window,
    per_minute,
    window_at,
)
from outloop.agents.quota_forecast import Forecast, ModelParams, forecast
from outloop.agents.quota_risk import QuotaConfig, ThrottleDecision, WindowUse, decide


@dataclass(frozen=True)
class Official:
    """One window's official figures, from the status line or rate-limit headers."""

    used_percentage: float
    resets_at: datetime | None
    seen_at: datetime
    source: str = "status_line"  # status_line | rate_limit_stop (agents.quota_signals)


OFFICIAL_MAX_AGE_S = 15 * 60  # an official figure older than this no longer counts


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / (1000 if value > 1e11 else 1), UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def official_from(rows: Iterable[Sequence[object]], at: datetime) -> dict[str, Official]:
    """The latest official figure of each window from (seen at, ``rate_limits`` as JSON text or object)
    pairs, newest first, seen up to ``at`` and at most ``OFFICIAL_MAX_AGE_S`` before it."""
    found: dict[str, Official] = {}
    for received, limits in rows:
        seen = _time(received)
        try:
            data = json.loads(limits) if isinstance(limits, str | bytes) else limits
        except ValueError:
            continue
        if seen is None or not isinstance(data, dict) or not 0 <= (at - seen).total_seconds() <= OFFICIAL_MAX_AGE_S:
            continue
        for kind in ("five_hour", "seven_day"):
            entry = data.get(kind)
            if kind in found or not isinstance(entry, dict):
                continue
            pct = entry.get("used_percentage")
            if isinstance(pct, int | float) and not isinstance(pct, bool) and 0 <= pct <= 1000:
                found[kind] = Official(float(pct), _time(entry.get("resets_at")), seen)
    return found


@dataclass(frozen=True)
class QuotaStatus:
    at: datetime
    windows: list[dict[str, object]]
    decision: ThrottleDecision
    per_minute: dict[str, object]

    def as_dict(self) -> dict[str, object]:
        return {"at": self.at.isoformat(), "windows": self.windows, "per_minute": self.per_minute,
                "decision": self.decision.as_dict()}


def assess(rows: Sequence[UsageRow], at: datetime, config: QuotaConfig,
           official: Mapping[str, Official] | None = None, *, params: ModelParams | None = None,
           kinds: Sequence[WindowKind] = WINDOW_KINDS, forecasts: bool = True) -> QuotaStatus:
    """Use, burn rates, forecast and risk of each window at ``at`` from the rows up to ``at``. Without
    ``forecasts`` nothing is simulated: each window's forecast is its use so far (the decision and the
    burn figures, which do not read the forecast, are the same)."""
    seen = [r for r in rows if r.ts <= at]
    official = official or {}
    uses: list[WindowUse] = []
    windows: list[dict[str, object]] = []
    for kind in kinds:
        window = window_at(kind, seen, at) or empty_window(kind, at)
        limit = config.limit_tokens(kind)
        fc = (forecast(kind, seen, at, limit_tokens=limit, params=params) if forecasts
              else _used(kind, window, at, limit))
        off = official.get(kind)
        use = WindowUse(kind, fc.used_tokens, limit, off.used_percentage if off else None,
                        off.resets_at if off else None)
        uses.append(use)
        entry = burn(kind, window, at).as_dict()
        entry.update({"limit_tokens": limit, "percent": None if use.percent is None else round(use.percent, 1),
                      "basis": use.basis, "forecast": _forecast_view(fc, off)})
        if off:
            entry["official"] = {"used_percentage": off.used_percentage, "seen_at": off.seen_at.isoformat(),
                                 "resets_at": off.resets_at.isoformat() if off.resets_at else None,
                                 "source": off.source}
        windows.append(entry)
    if config.month_usd:
        month = window_at("month", seen, at) or empty_window("month", at)
        cost = sum(r.cost_usd or 0.0 for r in month.rows)
        uses.append(WindowUse("month_usd", round(cost * 100), round(config.month_usd * 100)))
    minute = per_minute(seen, at)
    for name, used, limit in (("minute_requests", minute.requests, config.rpm),
                              ("minute_input_tokens", minute.input_tokens, config.itpm),
                              ("minute_output_tokens", minute.output_tokens, config.otpm)):
        if limit:
            uses.append(WindowUse(name, used, limit))
    minute_view: dict[str, object] = {**minute.as_dict(), "limits": {"rpm": config.rpm, "itpm": config.itpm,
                                                                      "otpm": config.otpm}}
    today, usual = daily_rates(seen, at)
    return QuotaStatus(at, windows, decide(uses, at, config, today=today, usual=usual), minute_view)


def _used(kind: WindowKind, window: Block, at: datetime, limit: int | None) -> Forecast:
    """A forecast that simulates nothing: the window's use up to ``at``, as every forecast counts it."""
    used = sum(r.total for r in window.rows if r.ts <= at)
    return Forecast(kind, window.start, window.end, at, used, used, used, used, used, limit, basis="used")


def _forecast_view(fc: Forecast, official: Official | None) -> dict[str, object]:
    """The forecast's figures; with an official percentage, the projection is also given in percent
    of the limit implied by it (used tokens / used share), marked as an estimate."""
    view = fc.as_dict()
    view["basis"] = "estimate"
    if official and official.used_percentage > 0 and fc.used_tokens > 0:
        implied = fc.used_tokens / (official.used_percentage / 100)
        view["implied_limit_tokens"] = round(implied)
        view["projected_percent"] = round(100 * fc.projected_tokens / implied, 1)
        view["p90_percent"] = round(100 * fc.p90 / implied, 1)
    return view
