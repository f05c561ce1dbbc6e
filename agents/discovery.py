"""Discovery: what to automate or change next, ranked by measured ROI. Pure: facts in, ranked rows out.

A :class:`Candidate` is one opportunity (a repeated operation, a recurring sequence, a context cost, a rule
that under-delivers) with its occurrences inside the window of event time ``(end - window_days, end]``,
each carrying the saving it would have brought, measured from the stored outputs and usage (see
``outloop.projections.discovery`` for how each kind is measured). :func:`assess` turns it into a
:class:`Recommendation`:

- ``occurrences_30d`` = occurrences in the window x 30 / window_days (event time, never all-time);
- ``monthly_savings_usd`` = occurrences_30d x the mean saving of a measured occurrence, with a 95% interval
  from the spread of the per-occurrence savings (mean +- 1.96 standard errors; the rate taken as measured);
- ``build_cost_usd`` = build hours of the kind x the hourly rate (configurable defaults, an estimate);
- ``payback_months`` = build cost / monthly savings; ``roi_pct`` = 100 x (savings over the horizon - build
  cost) / build cost; priority ``high`` when ROI > high_roi_pct and payback < high_payback_months,
  ``medium`` when the build pays back within the horizon, else ``low``.

Thresholds and build hours are data (``agents/rules/discovery.toml``, with worked examples the tests check).
"""

from __future__ import annotations

import hashlib
import math
import statistics
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

DEFAULTS_PATH = Path(__file__).with_name("rules") / "discovery.toml"
KINDS = ("tool", "macro", "context", "rule")
Z95 = 1.96


@dataclass(frozen=True)
class DiscoveryConfig:
    window_days: float = 30.0
    min_occurrences: int = 5
    min_confidence: int = 70
    min_monthly_usd: float = 0.50
    min_monthly_usd_other: float = 0.05
    min_sessions: int = 2
    reduction_share: float = 0.6
    overhead_share: float = 0.5
    horizon_months: float = 12.0
    hourly_rate_usd: float = 100.0
    high_roi_pct: float = 200.0
    high_payback_months: float = 3.0
    underdeliver_share: float = 0.5
    min_fidelity: float = 0.9
    tool_exclude_categories: tuple[str, ...] = ("plan", "edit", "read", "delegate")
    build_hours: Mapping[str, float] = field(default_factory=lambda: {"tool": 4.0, "macro": 3.0, "context": 1.0,
                                                                       "rule": 2.0})

    def build_cost(self, kind: str) -> float:
        return round(self.build_hours.get(kind, 4.0) * self.hourly_rate_usd, 2)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["build_hours"] = dict(self.build_hours)
        return out


def _read(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def load_config(path: str | Path | None = None) -> DiscoveryConfig:
    """The built-in defaults, overridden by the keys of ``[thresholds]`` and ``[build_hours]`` in ``path``."""
    base = _read(DEFAULTS_PATH)
    cfg = _apply(DiscoveryConfig(), base)
    if path is not None:
        try:
            cfg = _apply(cfg, _read(Path(path)))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"bad discovery configuration {path}: {exc}") from exc
    return cfg


def _apply(cfg: DiscoveryConfig, doc: Mapping[str, Any]) -> DiscoveryConfig:
    known = {f.name: f for f in fields(DiscoveryConfig) if f.name != "build_hours"}
    values: dict[str, Any] = {}
    for key, value in dict(doc.get("thresholds", {})).items():
        if key not in known:
            raise ValueError(f"unknown discovery threshold {key!r}")
        values[key] = type(getattr(cfg, key))(value)
    hours = {**cfg.build_hours, **{k: float(v) for k, v in dict(doc.get("build_hours", {})).items()}}
    return replace(cfg, **values, build_hours=hours)


def examples() -> list[dict[str, Any]]:
    """The worked examples of the defaults file."""
    return list(_read(DEFAULTS_PATH).get("example", []))


def rec_id(kind: str, key: str) -> str:
    """The stable id of an opportunity: the same kind and key (signature, sequence, file, rule) always give
    the same id, whatever the figures; drafts and filed issues are matched by it."""
    return "rec-" + hashlib.sha256(f"{kind}\0{key}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Occurrence:
    """One occurrence in the window: when, in which session, and the tokens and dollars it would have saved
    (None when the stored facts cannot measure it: it counts in the rate, not in the mean)."""

    ref: str  # the fact it was measured from: a tool_use_id, a usage id, session:file, a decision id
    session_id: str
    at: datetime
    tokens: int | None
    usd: float | None


@dataclass(frozen=True)
class Candidate:
    kind: str
    key: str
    title: str
    occurrences: tuple[Occurrence, ...]
    suggestion: str
    criteria: tuple[str, ...]
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recommendation:
    id: str
    kind: str
    key: str
    title: str
    window_start: datetime
    window_end: datetime
    occurrences: int
    measured: int
    sessions: int
    occurrences_30d: float
    tokens_per_occurrence: float | None
    tokens_p10: int | None
    tokens_p90: int | None
    usd_per_occurrence: float | None
    monthly_tokens: int
    monthly_savings_usd: float
    monthly_low_usd: float
    monthly_high_usd: float
    build_cost_usd: float
    payback_months: float | None
    roi_pct: float | None
    priority: str
    suggestion: str
    criteria: tuple[str, ...]
    evidence: Mapping[str, Any]
    detail: tuple[Occurrence, ...] = ()  # the occurrences in the window, each traceable to its fact

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "detail"}
        out["criteria"] = list(self.criteria)
        out["evidence"] = dict(self.evidence)
        return out


def window(end: datetime, cfg: DiscoveryConfig) -> tuple[datetime, datetime]:
    """The window of event time ``(start, end]`` occurrences are counted in."""
    return end - timedelta(days=cfg.window_days), end


def _quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def roi_figures(monthly_usd: float, build_cost: float, cfg: DiscoveryConfig) -> tuple[float | None, float | None, str]:
    """(payback months, ROI %, priority) of a monthly saving against a build cost."""
    if monthly_usd <= 0:
        return None, -100.0 if build_cost > 0 else None, "low"
    payback = round(build_cost / monthly_usd, 4)
    roi = round(100.0 * (monthly_usd * cfg.horizon_months - build_cost) / build_cost, 1) if build_cost > 0 else None
    if (roi is None or roi > cfg.high_roi_pct) and payback < cfg.high_payback_months:
        return payback, roi, "high"
    return payback, roi, "medium" if payback <= cfg.horizon_months else "low"


def assess(c: Candidate, start: datetime, end: datetime, cfg: DiscoveryConfig) -> Recommendation:
    """The ROI of one candidate; only the occurrences inside ``(start, end]`` count."""
    inside = [o for o in c.occurrences if start < o.at <= end]
    usd = [o.usd for o in inside if o.usd is not None]
    tokens = [o.tokens for o in inside if o.tokens is not None]
    scale = 30.0 / cfg.window_days
    rate = len(inside) * scale
    mean = statistics.fmean(usd) if usd else 0.0
    spread = Z95 * statistics.stdev(usd) / math.sqrt(len(usd)) if len(usd) > 1 else 0.0
    monthly = round(rate * mean, 4)
    mean_tokens = statistics.fmean(tokens) if tokens else None
    build = cfg.build_cost(c.kind)
    payback, roi, priority = roi_figures(monthly, build, cfg)
    return Recommendation(
        id=rec_id(c.kind, c.key), kind=c.kind, key=c.key, title=c.title, window_start=start, window_end=end,
        occurrences=len(inside), measured=len(usd), sessions=len({o.session_id for o in inside}),
        occurrences_30d=round(rate, 2), tokens_per_occurrence=None if mean_tokens is None else round(mean_tokens, 1),
        tokens_p10=_quantile(tokens, 0.1) if tokens else None, tokens_p90=_quantile(tokens, 0.9) if tokens else None,
        usd_per_occurrence=round(mean, 6) if usd else None,
        monthly_tokens=round(rate * mean_tokens) if mean_tokens is not None else 0,
        monthly_savings_usd=monthly, monthly_low_usd=round(max(0.0, rate * (mean - spread)), 4),
        monthly_high_usd=round(rate * (mean + spread), 4), build_cost_usd=build, payback_months=payback,
        roi_pct=roi, priority=priority, suggestion=c.suggestion, criteria=c.criteria, evidence=c.evidence,
        detail=tuple(inside))


_PRIORITY = {"high": 0, "medium": 1, "low": 2}


def rank(candidates: Iterable[Candidate], end: datetime, cfg: DiscoveryConfig) -> list[Recommendation]:
    """Every candidate that passes the thresholds (occurrences in the window for repeated operations and
    sequences, sessions for the kinds that recur across sessions, monthly savings: ``min_monthly_usd`` for a
    tool, ``min_monthly_usd_other`` for the other kinds), best first: priority, then
    ROI, then monthly savings."""
    start, end = window(end, cfg)
    out = []
    for c in candidates:
        r = assess(c, start, end, cfg)
        if r.occurrences < (cfg.min_occurrences if c.kind in ("tool", "macro") else 1):
            continue
        if c.kind in ("macro", "context") and r.sessions < cfg.min_sessions:
            continue
        if r.monthly_savings_usd < (cfg.min_monthly_usd if c.kind == "tool" else cfg.min_monthly_usd_other):
            continue
        out.append(r)
    out.sort(key=lambda r: (_PRIORITY[r.priority], -(r.roi_pct or 0.0), -r.monthly_savings_usd, r.id))
    return out


def underdelivers(projected_monthly: float, realised_monthly: float, fidelity: float | None,
                  cfg: DiscoveryConfig) -> str | None:
    """Why an active rule under-delivers against the projection made when it was recommended, or None."""
    if projected_monthly > 0 and realised_monthly < cfg.underdeliver_share * projected_monthly:
        return (f"realised ${realised_monthly:.2f} per 30 days, under {cfg.underdeliver_share:.0%} of the "
                f"${projected_monthly:.2f} projected")
    if fidelity is not None and fidelity < cfg.min_fidelity:
        return f"measured fidelity {fidelity:.2f} is below {cfg.min_fidelity:.2f}"
    return None


def sequence_tokens(calls: Iterable[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """(token, tool_use_id of the run's first call) of a session's calls (tool_use_id, signature, status), in
    event-time order, as the sequence miner makes them: ``plan`` calls left out, a failed call marked ``!``,
    consecutive identical tokens collapsed into one."""
    out: list[tuple[str, str]] = []
    for tid, signature, status in calls:
        if signature.split(":", 1)[0] == "plan":
            continue
        token = signature + ("!" if status not in ("ok", "started") else "")
        if out and out[-1][0] == token:
            continue
        out.append((token, tid))
    return out


def find_sequence(tokens: list[tuple[str, str]], ngram: tuple[str, ...]) -> list[list[str]]:
    """The tool_use_ids that start each step of every occurrence of ``ngram`` in ``tokens``."""
    n = len(ngram)
    return [[tid for _, tid in tokens[i:i + n]] for i in range(len(tokens) - n + 1)
            if tuple(t for t, _ in tokens[i:i + n]) == ngram]
