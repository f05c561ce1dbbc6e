"""The quota status at one time: every window's use, burn, forecast and the throttle decision.

:func:`assess` is what ``outloop quota`` prints and what the quota snapshots store; it combines the
pure parts (windows, forecast, risk) and takes the rows, the official signals and the time as inputs.
An official figure (Claude Code's status line ``rate_limits``) wins over an estimate, and every figure
says which it is (``basis``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from outloop.agents.quota import WINDOW_KINDS, UsageRow, WindowKind, burn, daily_rates, empty_window, window_at
from outloop.agents.quota_forecast import Forecast, ModelParams, forecast
from outloop.agents.quota_risk import QuotaConfig, ThrottleDecision, WindowUse, decide


@dataclass(frozen=True)
class Official:
    """One window's official figures, from the status line or rate-limit headers."""

    used_percentage: float
    resets_at: datetime | None
    seen_at: datetime


@dataclass(frozen=True)
class QuotaStatus:
    at: datetime
    windows: list[dict[str, object]]
    decision: ThrottleDecision

    def as_dict(self) -> dict[str, object]:
        return {"at": self.at.isoformat(), "windows": self.windows, "decision": self.decision.as_dict()}


def assess(rows: Sequence[UsageRow], at: datetime, config: QuotaConfig,
           official: Mapping[str, Official] | None = None, *, params: ModelParams | None = None,
           kinds: Sequence[WindowKind] = WINDOW_KINDS) -> QuotaStatus:
    """Use, burn rates, forecast and risk of each window at ``at`` from the rows up to ``at``."""
    seen = [r for r in rows if r.ts <= at]
    official = official or {}
    uses: list[WindowUse] = []
    windows: list[dict[str, object]] = []
    for kind in kinds:
        window = window_at(kind, seen, at) or empty_window(kind, at)
        limit = config.limit_tokens(kind)
        fc = forecast(kind, seen, at, limit_tokens=limit, params=params)
        off = official.get(kind)
        use = WindowUse(kind, fc.used_tokens, limit, off.used_percentage if off else None,
                        off.resets_at if off else None)
        uses.append(use)
        entry = burn(kind, window, at).as_dict()
        entry.update({"limit_tokens": limit, "percent": None if use.percent is None else round(use.percent, 1),
                      "basis": use.basis, "forecast": _forecast_view(fc, off)})
        if off:
            entry["official"] = {"used_percentage": off.used_percentage, "seen_at": off.seen_at.isoformat(),
                                 "resets_at": off.resets_at.isoformat() if off.resets_at else None}
        windows.append(entry)
    if config.month_usd:
        month = window_at("month", seen, at) or empty_window("month", at)
        cost = sum(r.cost_usd or 0.0 for r in month.rows)
        uses.append(WindowUse("month_usd", round(cost * 100), round(config.month_usd * 100)))
    today, usual = daily_rates(seen, at)
    return QuotaStatus(at, windows, decide(uses, at, config, today=today, usual=usual))


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
