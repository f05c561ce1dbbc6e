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

import orjson

from outloop.agents.calibration import calibrate
from outloop.agents.pricing import PriceTable
from outloop.agents.shadow import Decide, Render, Routed, route_timeline, section
from outloop.agents.timeline import Timeline, build_timeline
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import SKIP, collect_files, detect

TEST_BUILD = ("test", "build")


def _records(path: Path, fmt: str, doc: Any) -> Iterable[Any]:
    if fmt == "transcript-array":
        return doc
    out = []
    with path.open("rb") as fh:
        for line in fh:
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # damaged lines are counted by the import itself
    return out


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
        t = build_timeline(_records(path, fmt, doc), str(path))
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


def shadow_section(paths: list[Path], decide: Decide, render: Render, prices: PriceTable,
                   is_structured_family: Any = None) -> tuple[dict[str, Any], list[Routed]]:
    """The routing section for the files under ``paths`` and the routed decisions behind it."""
    timelines, others = load_timelines(paths)
    skips = _distinct(timelines)
    estimator = calibrate(timelines)
    totals: dict[str, dict[str, float]] = {}
    routed: list[Routed] = []
    ops: dict[str, Any] = {"test_build_operations": 0, "structured_decisions": 0}
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
        mine = route_timeline(t, decide, render, estimator, prices, skip)
        routed.extend(mine)
        for step in t.steps:
            if step.issued_by in skip or step.output is None:
                continue
            d = decide(step, t)
            category = d.category if d else _category(step)
            if category in TEST_BUILD:
                ops["test_build_operations"] += 1
                if d is not None and d.kind == "structured" and d.action == "rewrite":
                    ops["structured_decisions"] += 1
    ops["structured_share_pct"] = (round(100 * ops["structured_decisions"] / ops["test_build_operations"], 1)
                                   if ops["test_build_operations"] else None)
    out = section(timelines, routed, totals, estimator, ops)
    out["unpriced_responses"] = unpriced
    out["trajectories_not_covered"] = others
    return out, routed


def _category(step: Any) -> str:
    from outloop.agents.signatures import signature_of

    return signature_of(step.tool_name, step.tool_input).category
