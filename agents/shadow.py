"""Shadow routing of recorded sessions: decide every tool call as the router would, apply the real
summariser to each recorded output, and measure what enforcing the decisions would have saved, net.
Pure: timelines and the two functions in, decisions and the routing section out.

``decide(step, timeline)`` is the router's decision for a recorded tool call (None: pass), and
``render(decision, step)`` the text the runner would have printed for the step's recorded output (None:
nothing to compact). Every figure is an estimate (a counterfactual on recorded traffic), said so in the
section. What it counts and assumes: docs/routing-savings.md.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from outloop.agents.calibration import Estimator
from outloop.agents.fidelity import WINDOW, Fidelity, fidelity
from outloop.agents.pricing import PriceTable
from outloop.agents.savings import Saving, saving
from outloop.agents.timeline import Timeline, ToolStep


@dataclass(frozen=True)
class ShadowDecision:
    rule: str
    rule_version: str
    kind: str  # structured | generic | guard
    action: str  # rewrite | deny | advise
    signature: str
    category: str
    family: str | None = None
    reason: str = ""
    context: str | None = None  # the text an advice adds


@dataclass(frozen=True)
class Routed:
    session_id: str
    context_id: str
    tool_use_id: str
    decision: ShadowDecision
    fidelity: Fidelity
    saving: Saving
    decided_at: str  # when the agent issued the call (its API response's timestamp): replays decide alike

    def row(self) -> dict[str, Any]:
        out = {"session_id": self.session_id, "context_id": self.context_id, "tool_use_id": self.tool_use_id,
               **asdict(self.decision), "fidelity_used": self.fidelity.used, "fidelity_kept": self.fidelity.kept,
               **asdict(self.saving)}
        return out


Decide = Callable[[ToolStep, Timeline], ShadowDecision | None]
Render = Callable[[ShadowDecision, ToolStep], str | None]


def later_steps(timeline: Timeline, i: int, window: int = WINDOW) -> list[ToolStep]:
    """The agent's next ``window`` tool calls after the ``i``-th step (those issued by a later call or its own)."""
    steps = timeline.steps
    out: list[ToolStep] = []
    if window <= 0:
        return out
    for j in range(i + 1, len(steps)):
        s = steps[j]
        if s.issued_by >= steps[i].issued_by:
            out.append(s)
            if len(out) == window:
                break
    return out


def later_texts(timeline: Timeline, step: ToolStep, window: int = WINDOW, index: int | None = None) -> list[str]:
    """The agent's next ``window`` tool inputs after ``step`` and its messages up to the last of them
    (``index``: the step's place in ``timeline.steps`` when the caller knows it)."""
    i = timeline.steps.index(step) if index is None else index
    nxt = later_steps(timeline, i, window)
    texts = [orjson.dumps(s.tool_input).decode() for s in nxt]
    last = nxt[-1].issued_by if nxt else len(timeline.calls) - 1
    texts += [c.text for c in timeline.calls[step.issued_by:last + 1] if c.text]
    return texts


def route_timeline(timeline: Timeline, decide: Decide, render: Render, estimator: Estimator,
                   prices: PriceTable, skip_calls: set[int] = frozenset()) -> list[Routed]:  # type: ignore[assignment]
    """Every routed step of one timeline (steps issued by a call in ``skip_calls`` are left out)."""
    out: list[Routed] = []
    for i, step in enumerate(timeline.steps):
        if step.output is None or step.issued_by in skip_calls:
            continue
        decision = decide(step, timeline)
        if decision is None:
            continue
        compact = render(decision, step)
        if compact is None:
            continue
        own = orjson.dumps(step.tool_input).decode()
        # a denied identical repeat loses nothing: the same output is already in the context
        kept_text = step.output if decision.action == "deny" else compact
        fid = fidelity(step.output, kept_text, own, later_texts(timeline, step, index=i))
        at = timeline.calls[step.issued_by].timestamp or _first_time(timeline)
        out.append(Routed(timeline.session_id, timeline.context_id, step.tool_use_id, decision, fid,
                          saving(timeline, step, compact, fid, estimator, prices), at))
    return out


def _first_time(timeline: Timeline) -> str:
    """The earliest timestamp of the context, else the epoch (a transcript without timestamps)."""
    return min((c.timestamp for c in timeline.calls if c.timestamp), default="1970-01-01T00:00:00Z")


def _pct(part: float, whole: float) -> float | None:
    return round(100 * part / whole, 3) if whole else None


def _group(routed: Iterable[Routed], key: Callable[[Routed], str]) -> dict[str, dict[str, Any]]:
    acc: dict[str, dict[str, Any]] = defaultdict(lambda: {"decisions": 0, "net_tokens": 0, "net_usd": 0.0,
                                                          "fidelity_used": 0, "fidelity_kept": 0, "lost": 0})
    for r in routed:
        g = acc[key(r)]
        g["decisions"] += 1
        g["net_tokens"] += r.saving.net_tokens
        g["net_usd"] += r.saving.net_usd or 0.0
        g["fidelity_used"] += r.fidelity.used
        g["fidelity_kept"] += r.fidelity.kept
        g["lost"] += r.saving.lost
    for g in acc.values():
        g["net_usd"] = round(g["net_usd"], 4)
        g["fidelity"] = round(g["fidelity_kept"] / g["fidelity_used"], 4) if g["fidelity_used"] else None
    return dict(sorted(acc.items()))


def section(timelines: list[Timeline], routed: list[Routed], totals: dict[str, dict[str, float]],
            estimator: Estimator, ops: dict[str, int]) -> dict[str, Any]:
    """The ``routing`` section of the replay summary. ``totals`` maps session -> {"tokens", "usd"} of its
    distinct API calls; ``ops`` counts test/build operations seen and those with a structured decision."""
    tokens = sum(t["tokens"] for t in totals.values())
    usd = sum(t["usd"] for t in totals.values())
    by_session: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for r in routed:
        by_session[r.session_id][0] += r.saving.net_tokens
        by_session[r.session_id][1] += r.saving.net_usd or 0.0
    saved_t = sum(v[0] for v in by_session.values())
    saved_usd = sum(v[1] for v in by_session.values())
    top = max(by_session, key=lambda s: by_session[s][0], default=None)
    rest_t = tokens - (totals[top]["tokens"] if top else 0)
    rest_usd = usd - (totals[top]["usd"] if top else 0.0)
    per_session = [100 * by_session.get(s, [0, 0.0])[0] / v["tokens"] for s, v in totals.items() if v["tokens"]]
    return {
        "basis": "estimate: shadow decisions on recorded outputs (what enforce would have saved), net",
        "sessions": len(totals), "contexts": len(timelines), "decisions": len(routed),
        "total_tokens": int(tokens), "total_cost_usd": round(usd, 4),
        "net_tokens_saved": int(saved_t), "net_usd_saved": round(saved_usd, 4),
        "reduction_tokens_pct": _pct(saved_t, tokens), "reduction_cost_pct": _pct(saved_usd, usd),
        "largest_session": top,
        "reduction_tokens_pct_without_largest": _pct(saved_t - (by_session[top][0] if top else 0), rest_t),
        "reduction_cost_pct_without_largest": _pct(saved_usd - (by_session[top][1] if top else 0.0), rest_usd),
        "median_session_reduction_tokens_pct": round(statistics.median(per_session), 3) if per_session else None,
        "by_rule": _group(routed, lambda r: r.decision.rule),
        "by_category": _group(routed, lambda r: r.decision.category),
        "fidelity": {rule: g["fidelity"] for rule, g in _group(routed, lambda r: r.decision.rule).items()},
        "lost_decisions": sum(r.saving.lost for r in routed),
        "test_build_operations": ops,
        "estimator": {"chars_per_token": estimator.chars_per_token, "calibrated": estimator.calibrated,
                      "observations": estimator.observations, "error_pct": estimator.error_pct,
                      "chars_per_4_error_pct": estimator.default_error_pct},
    }
