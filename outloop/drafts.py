"""Issue drafts: one markdown file per recommendation, named by its stable id (``<id>.md``).

A draft holds the evidence (signature or sequence, redacted sample commands, counts, sessions, measured
tokens), the projected savings with their interval and how they were computed, a suggested change and
acceptance criteria. The text is a function of the stored row only (no clock), so writing the same
recommendations again changes no file, and changed figures rewrite the draft of the same id in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

MARKER = "<!-- outloop:recommendation {id} -->"
SECTIONS = ("## Summary", "## Evidence", "## Projected savings", "## Suggested change", "## Acceptance criteria",
            "## How the figures were computed")


# (tokens per occurrence, tokens per 30 days, how one occurrence's saving is measured), by kind or key prefix
_MEASURE = {
    "tool": ("Tokens saved per occurrence (its output x the reduction share, carried by the later API calls)",
             "tokens saved per 30 days",
             "Per occurrence: the output's estimated tokens (context_outputs) x the configured reduction share, "
             "priced once as a 5-minute cache write and once as a cache read for every later API call that carried "
             "it, at the model of the session's next API call (as the savings log prices a routing decision)."),
    "macro": ("Tokens saved per occurrence (the API calls of the turns saved, whole context)",
              "tokens saved per 30 days",
              "Per occurrence: the API responses that issued the later steps, apart from the one that issued the "
              "first (api_messages), with their tokens and priced cost (usage): the turns one call would save."),
    "cache-break": ("Tokens rewritten per break (the saving is their price as a write over a read, not the tokens)",
                    "tokens rewritten per 30 days",
                    "Per occurrence: the break's cost over a warm cache (cache_breaks.extra_cost_usd)."),
    "unused-read": ("Tokens carried per read (read once as a cache write, then re-read by later calls)",
                    "tokens carried per 30 days",
                    "Per occurrence: the file's tokens once as a cache write and the rest of its carry as cache "
                    "reads, at the session's most used model (file_reads)."),
    "memory": ("Tokens saved per session (the trimmed share of the memory files x its API calls)",
               "tokens saved per 30 days",
               "Per session: the configured share of its memory files' estimated tokens (context_overhead, measured "
               "where the project folder was at hand), once as a cache write and as a cache read by every later API "
               "call of the session."),
    "rule": ("Tokens per decision (not measured)", "tokens per 30 days",
             "Per decision: the saving projected when the rule was accepted, minus what the decision realised "
             "(cost_savings_log, measured decisions)."),
}


def _measure(rec: Mapping[str, Any]) -> tuple[str, str, str]:
    prefix = str(rec["key"]).split(":", 1)[0]
    return _MEASURE.get(prefix if rec["kind"] == "context" else rec["kind"], _MEASURE["tool"])


def _usd(value: Any) -> str:
    return "n/a" if value is None else f"${float(value):,.2f}"


def _num(value: Any, digits: int = 0) -> str:
    return "n/a" if value is None else f"{float(value):,.{digits}f}"


def _stamp(value: Any) -> str:
    """A time as ISO 8601, whether it comes as a datetime (the file) or as the text of one (the worker's JSON):
    the same draft either way."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _day(value: Any) -> str:
    return str(value)[:10] if value is not None else "n/a"


def _one_line(command: Any, limit: int = 160) -> str:
    """A sample command as one line of inline code: backticks replaced, newlines shown as ⏎, cut at ``limit``."""
    text = str(command).replace("`", "'").replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _evidence_lines(rec: Mapping[str, Any]) -> list[str]:
    ev = rec.get("evidence") or {}
    lines = [f"- Window: {_day(rec['window_start'])} to {_day(rec['window_end'])} (event time, "
             f"{_num(rec['config'].get('window_days') if rec.get('config') else 30)} days)",
             f"- Occurrences in the window: {rec['occurrences']} ({_num(rec['occurrences_30d'], 1)} per 30 days), "
             f"in {rec['sessions']} sessions; {rec['measured']} measured",
             f"- {_measure(rec)[0]}: {_num(rec['tokens_per_occurrence'])} on average "
             f"(p10 {_num(rec['tokens_p10'])}, p90 {_num(rec['tokens_p90'])})",
             f"- Saving per occurrence: {_usd(rec['usd_per_occurrence'])} on average"]
    if "signature" in ev:
        lines.insert(0, f"- Signature: `{ev['signature']}` (confidence {ev.get('confidence')}, side effect "
                        f"{ev.get('side_effect')}, {ev.get('all_time_occurrences')} occurrences in all)")
    if "sequence" in ev:
        lines.insert(0, "- Sequence: " + " -> ".join(f"`{s}`" for s in ev["sequence"]))
    for key, label in (("cause", "Cache-break cause"), ("file_path", "File"), ("cwd", "Project folder"),
                       ("rule", "Rule"), ("why", "Why")):
        if key in ev:
            lines.insert(0, f"- {label}: {ev[key]}")
    if ev.get("memory_files"):
        lines.append("- Memory files (estimated tokens, `@` imports not followed):")
    for f in ev.get("memory_files") or []:
        lines.append(f"  - `{f.get('path')}`: {_num(f.get('tokens'))} tokens")
    if ev.get("session_ids"):
        lines.append("- Sessions: " + ", ".join(f"`{s}`" for s in ev["session_ids"])
                     + (" (first 10)" if rec["sessions"] > 10 else ""))
    samples = ev.get("samples") or []
    if samples:
        lines.append("- Sample commands (secrets redacted):")
        lines += [f"  - `{_one_line(s)}`" for s in samples[:5]]
    return lines


def render(rec: Mapping[str, Any]) -> str:
    """The markdown of one recommendation's issue draft."""
    rid = rec["id"]
    payback = "never at this rate" if rec["payback_months"] is None else f"{_num(rec['payback_months'], 1)} months"
    roi = "n/a" if rec["roi_pct"] is None else f"{_num(rec['roi_pct'])}%"
    horizon = (rec.get("config") or {}).get("horizon_months", 12)
    parts = [
        MARKER.format(id=rid), f"# {rec['title']}", "",
        f"Kind: {rec['kind']} · Priority: {rec['priority']} · Id: `{rid}`", "",
        SECTIONS[0], "",
        f"outloop measured {rec['occurrences']} occurrences of this opportunity in {rec['sessions']} sessions over "
        f"the last window of event time. Acting on it is projected to save {_usd(rec['monthly_savings_usd'])} per "
        f"30 days (95% interval {_usd(rec['monthly_low_usd'])} to {_usd(rec['monthly_high_usd'])}), against a "
        f"build cost estimated at {_usd(rec['build_cost_usd'])}: payback {payback}, ROI {roi} over {horizon} months.",
        "", SECTIONS[1], "", *_evidence_lines(rec), "",
        SECTIONS[2], "",
        "| figure | value | basis |", "|---|---|---|",
        f"| monthly savings | {_usd(rec['monthly_savings_usd'])} | estimate from measured occurrences |",
        f"| 95% interval | {_usd(rec['monthly_low_usd'])} to {_usd(rec['monthly_high_usd'])} | spread of the "
        "per-occurrence savings |",
        f"| {_measure(rec)[1]} | {_num(rec['monthly_tokens'])} | estimate |",
        f"| build cost | {_usd(rec['build_cost_usd'])} | configured default for kind {rec['kind']} |",
        f"| payback | {payback} | build cost / monthly savings |",
        f"| ROI | {roi} | over {horizon} months |", "",
        SECTIONS[3], "", str(rec["suggestion"]), "",
        SECTIONS[4], "", *[f"- [ ] {c}" for c in rec.get("criteria") or []], "",
        SECTIONS[5], "", _measure(rec)[2], f"Basis: {rec.get('basis') or 'estimate'}.",
        f"Prices: table {rec.get('price_version')}. Data watermark: {_stamp(rec['as_of'])}. The occurrences behind "
        f"every figure: `outloop query \"SELECT * FROM recommendation_occurrences WHERE rec_id = '{rid}'\"`.", "",
    ]
    return "\n".join(parts)


@dataclass
class DraftResult:
    created: list[Path] = field(default_factory=list)
    updated: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {k: [str(p) for p in getattr(self, k)] for k in ("created", "updated", "unchanged")}


def write_drafts(recs: Iterable[Mapping[str, Any]], folder: Path) -> DraftResult:
    """Write or rewrite ``<id>.md`` for every recommendation; a file whose text is the same is left alone."""
    folder.mkdir(parents=True, exist_ok=True)
    result = DraftResult()
    for rec in recs:
        path = folder / f"{rec['id']}.md"
        text = render(rec)
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old == text:
            result.unchanged.append(path)
            continue
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        (result.created if old is None else result.updated).append(path)
    return result
