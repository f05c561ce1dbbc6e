"""``outloop replay --route-mode shadow``: the files' Claude Code transcripts as timelines, every tool
call decided by the router and every routed output rendered by the runner's summarisers, and the
routing section of the summary (see :mod:`outloop.agents.shadow`).

Each distinct API response counts once across the files (a session can arrive as a transcript and as a
hook log's ``chat.json``, and successive ``chat.json`` captures repeat earlier responses): a response
already counted in an earlier file is left out of the totals, and the tool calls it issued are not
decided again. Sub-agent transcripts are contexts of their own, counted in their session.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from outloop.agents.calibration import calibrate
from outloop.agents.pricing import PriceTable
from outloop.agents.shadow import Routed, ShadowDecision, route_timeline, section
from outloop.agents.timeline import Timeline, ToolStep, build_timeline
from outloop.schemas.events import Envelope, EventType, RoutingDecision, RoutingSaving
from outloop.streams.importers import ImportStats, make_envelope
from outloop.streams.importers.detect import SKIP, collect_files, detect
from outloop.streams.importers.transcripts import read_jsonl


def _records(path: Path, fmt: str, doc: Any, stats: ImportStats) -> Iterable[Any]:
    return doc if fmt == "transcript-array" else read_jsonl(path, stats)


def load_timelines(paths: list[Path]) -> tuple[list[Timeline], int]:
    """Timelines of every Claude Code transcript under ``paths`` (in import order), and how many other
    importable files (hook logs, trajectories) the routing section does not cover."""
    stats = ImportStats()
    timelines: list[Timeline] = []
    others = 0
    for path in collect_files(paths, stats):
        fmt, doc = detect(path)
        if fmt == SKIP:
            continue
        if fmt not in ("transcript", "transcript-array"):
            others += fmt == "trajectory"
            continue
        t = build_timeline(_records(path, fmt, doc, stats), str(path))
        if t.calls or t.steps:
            timelines.append(t)
    return timelines, others


def _distinct(timelines: list[Timeline]) -> list[set[int]]:
    """Per timeline, the indexes of its calls already counted in an earlier timeline."""
    seen: set[str] = set()
    out = []
    for t in timelines:
        dup = {i for i, c in enumerate(t.calls) if c.key in seen}
        seen.update(c.key for c in t.calls)
        out.append(dup)
    return out


def render(decision: ShadowDecision, step: ToolStep) -> str | None:
    """What the agent would have read instead of the recorded output under ``decision`` (enforced)."""
    from outloop.runner.recorded import printed_for

    output = step.output or ""
    if decision.action == "rewrite":
        command = step.tool_input.get("command")
        if not isinstance(command, str):
            return None
        return printed_for(command, output, step.exit_code or 0, decision.family, decision.rule)
    if decision.action == "deny":
        return decision.reason  # the repeat's output is replaced by the denial's reason
    if decision.action == "advise":
        return output + "\n" + (decision.context or "")  # advice adds to what the agent reads
    return None


def shadow_section(paths: list[Path], rules: Any, patterns: dict[str, int], prices: PriceTable,
                   sizes: dict[str, float] | None = None) -> tuple[dict[str, Any], list[Routed]]:
    """The routing section for the files under ``paths`` and the routed decisions behind it, decided
    with ``rules`` and the pattern confidences ``patterns`` (signature -> 0-100)."""
    from outloop.router.shadow import shadow_decider

    decide = shadow_decider(rules, patterns, sizes)  # every rule as if enforced, the session's memory rebuilt
    timelines, others = load_timelines(paths)
    skips = _distinct(timelines)
    estimator = calibrate(timelines)
    totals: dict[str, dict[str, float]] = {}
    routed: list[Routed] = []
    ops: dict[str, Any] = {}  # filled from every replayed source by operations_decided
    unpriced = 0
    for t, skip in zip(timelines, skips, strict=True):
        agg = totals.setdefault(t.session_id, {"tokens": 0, "usd": 0.0})
        for i, call in enumerate(t.calls):
            if i in skip:
                continue
            agg["tokens"] += call.total_tokens
            cost = prices.cost_usd(call.usage_record())
            if cost is None:
                unpriced += 1
            agg["usd"] += cost or 0.0
        routed.extend(route_timeline(t, decide, render, estimator, prices, skip))
    out = section(timelines, routed, totals, estimator, ops)
    out["unpriced_responses"] = unpriced
    out["trajectories_not_covered"] = others
    return out, routed


def decision_records(routed: list[Routed]) -> list[Envelope]:
    """The ``routing.decision`` events of shadow decisions, with their fidelity and saving. Ids are
    stable for a tool call and apart from the live router's (``replay:`` in the digested key)."""
    from outloop.router.state import decision_id

    out = []
    for r in routed:
        d, sv = r.decision, r.saving
        did = decision_id(r.session_id, f"replay:{r.tool_use_id}", 0)
        data = {"decision_id": did, "tool_use_id": r.tool_use_id, "session_id": r.session_id, "tool_name": "Bash",
                "command": None, "signature": d.signature, "category": d.category, "rule": d.rule,
                "rule_version": d.rule_version, "kind": d.kind if d.kind in ("structured", "generic") else None,
                "family": d.family, "mode": "shadow", "action": d.action, "answered": False, "reason": d.reason,
                "decided_at": r.decided_at, "fidelity": r.fidelity.value, "fidelity_used": r.fidelity.used,
                "raw_tokens": sv.raw_tokens, "compact_tokens": sv.compact_tokens, "carry_calls": sv.carry_calls,
                "saved_once_tokens": sv.saved_once_tokens, "net_tokens": sv.net_tokens, "net_usd": sv.net_usd,
                "context_tokens": sv.context_tokens, "model": sv.model, "basis": "estimate"}
        out.append(make_envelope(RoutingDecision.model_validate(data), id=did, type=EventType.ROUTING_DECISION,
                                 source="replay", subject=r.session_id, time=None))
    return out


def saving_records(routed: list[Routed]) -> list[Envelope]:
    """The ``routing.saving`` events of shadow decisions (``cost_savings_log`` rows, ``basis``
    estimate), one per decision, keyed like :func:`decision_records`."""
    from outloop.router.state import decision_id

    out = []
    for r in routed:
        d, sv = r.decision, r.saving
        did = decision_id(r.session_id, f"replay:{r.tool_use_id}", 0)
        data = {"decision_id": did, "tool_use_id": r.tool_use_id, "session_id": r.session_id, "rule": d.rule,
                "rule_version": d.rule_version, "kind": d.kind, "family": d.family, "category": d.category,
                "signature": d.signature, "mode": "shadow", "action": d.action, "basis": "estimate",
                "model": sv.model, "raw_tokens": sv.raw_tokens, "compact_tokens": sv.compact_tokens,
                "carry_calls": sv.carry_calls, "saved_once_tokens": sv.saved_once_tokens,
                "saved_carry_tokens": sv.saved_carry_tokens, "charged_tokens": sv.charged_tokens,
                "net_tokens": sv.net_tokens, "net_usd": sv.net_usd, "context_tokens": sv.context_tokens,
                "fidelity": r.fidelity.value, "fidelity_used": r.fidelity.used, "decided_at": r.decided_at}
        out.append(make_envelope(RoutingSaving.model_validate(data), id=f"saving:{did}", type=EventType.ROUTING_SAVING,
                                 source="replay", subject=r.session_id, time=None))
    return out


def operations_decided(calls: list[tuple[str, str]], rules: Any, patterns: dict[str, int],
                       sizes: dict[str, float] | None = None) -> dict[str, Any]:
    """Of the replayed test and build commands (every source: transcripts, hook logs, trajectories),
    how many the router would hand to a structured family summariser, to the generic one, or pass."""
    from outloop.router.decide import decide
    from outloop.router.shadow import enforced

    rules = enforced(rules)
    counts: dict[str, Any] = {"test_build_operations": len(calls), "structured_decisions": 0,
                              "generic_decisions": 0, "passed": 0}
    for command, _category in calls:
        d = decide("Bash", {"command": command}, None, None, rules, patterns, 0.0, sizes=sizes)
        if d.action != "rewrite":
            counts["passed"] += 1
        else:
            counts["structured_decisions" if d.kind == "structured" else "generic_decisions"] += 1
    n = counts["test_build_operations"]
    counts["structured_share_pct"] = round(100 * counts["structured_decisions"] / n, 1) if n else None
    return counts
