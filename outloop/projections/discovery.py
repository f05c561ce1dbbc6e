"""Discovery materialization, run by the one owner of the database (the sink, or the CLI when no worker holds
the file): candidates measured from the stored facts, ranked by the pure :mod:`agents.discovery`, stored in
``recommendations`` (one row per stable id) with every occurrence behind a figure in
``recommendation_occurrences``.

The window ends at the data's watermark ``W`` (the latest event time of a tool call or API response), never
at the clock: replaying the same input writes the same rows. How each kind is measured:

- **tool** (operation_patterns, confidence and count thresholds, no active rule): per occurrence, the
  output's tokens and carry from ``context_outputs`` (the sink's estimator, carried until compaction, as the
  savings log counts them) x ``reduction_share``, priced once as a 5-minute cache write and ``carry - 1``
  times as a cache read at the model of the session's first API call at or after the occurrence;
- **macro** (sequence_patterns, 2-4 signatures): per occurrence, the API responses that issued steps 2..n
  (``api_messages.tool_use_ids``) apart from the one that issued step 1: their tokens and priced cost
  (``usage.cost_usd``) are the turns one deterministic call saves;
- **context**: cache breaks by cause (``cache_breaks.extra_cost_usd``, the cost over a warm cache), files
  read and never used in several sessions (``file_reads``: tokens once as a write, the rest of the carry as
  reads, at the session's most used model), and a project's memory files (``context_overhead``:
  ``overhead_share`` of their tokens, once as a write and as a read by every later call of each session);
- **rule**: an accepted recommendation whose rule is active (advise or enforce) and realises less than its
  projection (``cost_savings_log``, measured decisions) or measures a low fidelity.
"""

from __future__ import annotations

import fnmatch
import json
from collections import defaultdict
from datetime import datetime
from typing import Any

import duckdb

from outloop.agents.discovery import (
    Candidate,
    DiscoveryConfig,
    Occurrence,
    Recommendation,
    find_sequence,
    rank,
    sequence_tokens,
    underdelivers,
    window,
)
from outloop.agents.pricing import PriceTable

BASIS = ("estimate: savings projected from measured occurrences in the window (event time); tool savings assume "
         "reduction_share of the carried output; build costs are configured defaults")


def watermark(con: duckdb.DuckDBPyConnection) -> datetime | None:
    row = con.execute('SELECT greatest((SELECT max(ts) FROM pattern_occurrences), '
                      '(SELECT max("timestamp") FROM usage))').fetchone()
    return row[0] if row else None


def _active_rules(con: duckdb.DuckDBPyConnection) -> list[tuple[str, list[str], list[str]]]:
    rows = con.execute("SELECT name, signatures, categories FROM routing_rules "
                       "WHERE mode IN ('advise', 'enforce')").fetchall()
    return [(n, json.loads(s) if s else [], json.loads(c) if c else []) for n, s, c in rows]


def _covered(signature: str, rules: list[tuple[str, list[str], list[str]]]) -> str | None:
    category = signature.split(":", 1)[0]
    for name, globs, categories in rules:
        if category in categories or any(fnmatch.fnmatchcase(signature, g) for g in globs):
            return name
    return None


_TOOL_OCC = """
SELECT o.signature, o.tool_use_id, o.session_id, o.ts, c.tokens, c.carry, u.model, t.tool_name
FROM pattern_occurrences o LEFT JOIN context_outputs c ON c.id = o.tool_use_id
LEFT JOIN tool_calls t ON t.id = o.tool_use_id
ASOF LEFT JOIN (SELECT session_id, "timestamp", model FROM usage WHERE "timestamp" IS NOT NULL) u
    ON u.session_id = o.session_id AND u."timestamp" >= o.ts
WHERE o.ts > ? AND o.ts <= ? AND o.signature IN (SELECT unnest(?::VARCHAR[]))
ORDER BY o.signature, o.ts, o.tool_use_id
"""


def tool_saving(tokens: int | None, carry: int | None, model: str | None, share: float,
                prices: PriceTable) -> tuple[int | None, float | None]:
    """(tokens, USD) one occurrence would have saved: ``share`` of its output, carried ``carry`` calls."""
    if tokens is None or carry is None:
        return None, None
    once = round(share * tokens)
    if carry == 0:
        return 0, 0.0
    found = prices.lookup(model)
    usd = None if found is None else once * (found[1].rates.cache_write_5m
                                             + (carry - 1) * found[1].rates.cache_read) / 1e6
    return once * carry, usd


def tool_candidates(con: duckdb.DuckDBPyConnection, cfg: DiscoveryConfig, start: datetime, end: datetime,
                    prices: PriceTable) -> list[Candidate]:
    rules = _active_rules(con)
    pats = con.execute("SELECT signature, category, side_effect, confidence_score, occurrence_count, session_count, "
                       "samples, success_rate FROM operation_patterns WHERE confidence_score >= ? "
                       "AND count_30d IS NOT NULL AND occurrence_count >= ? AND side_effect <> 'destructive'",
                       [cfg.min_confidence, cfg.min_occurrences]).fetchall()
    pats = [p for p in pats if p[1] not in cfg.tool_exclude_categories and _covered(p[0], rules) is None]
    occ: dict[str, list[Occurrence]] = defaultdict(list)
    tools: dict[str, set[str]] = defaultdict(set)
    for sig, tid, session, ts, tokens, carry, model, tool_name in con.execute(
            _TOOL_OCC, [start, end, [p[0] for p in pats]]).fetchall():
        saved, usd = tool_saving(tokens, carry, model, cfg.reduction_share, prices)
        occ[sig].append(Occurrence(tid, session, ts, saved, usd))
        tools[sig].add(tool_name or "?")
    out = []
    for sig, _category, effect, conf, total, sessions, samples, success in pats:
        if sig not in occ:
            continue
        ev = {"signature": sig, "tools": sorted(tools[sig]), "side_effect": effect, "confidence": conf,
              "all_time_occurrences": total, "all_time_sessions": sessions, "success_rate": success,
              "samples": json.loads(samples) if isinstance(samples, str) else samples or []}
        out.append(Candidate("tool", sig, f"A deterministic tool for `{sig}`", tuple(occ[sig]),
                             *_tool_advice(sig, tools[sig]), ev))
    return out


def _tool_advice(sig: str, tools: set[str]) -> tuple[str, tuple[str, ...]]:
    """The suggested change and acceptance criteria of a tool opportunity: a runner family behind a routing
    rule for shell commands; for other tools (web search, MCP), a deterministic answer or a trimmed result."""
    if tools == {"Bash"}:
        return (f"Route `{sig}` through `outloop run` with a runner family that prints a compact result (failures, "
                "counts, the log's path) instead of the whole output, behind a routing rule in shadow mode first.",
                (f"A routing rule matches `{sig}` and its sample commands (examples in the rule file).",
                 "In shadow mode, its measured fidelity is at least 0.9 over 20 decisions before it is promoted.",
                 "`outloop savings --by rule` shows a positive net saving for the rule."))
    names = ", ".join(sorted(tools))
    return (f"Answer `{sig}` ({names}) deterministically where its result is known - identical calls within a "
            "session answered from the first one - and trim what it returns to the parts agents use (see `outloop "
            "context profiles` for this signature).",
            (f"Repeated identical `{sig}` calls in a session are answered without a new call.",
             "The trimmed result keeps every part later used by the agent (fidelity 1.0 on the samples).",
             "The context profile of the signature shows fewer loaded tokens per call."))


_CALLS = """
SELECT o.session_id, o.tool_use_id, o.signature, o.status, o.ts, m.mid
FROM pattern_occurrences o LEFT JOIN (
    SELECT id AS mid, unnest(CAST(tool_use_ids AS VARCHAR[])) AS tid FROM api_messages) m ON m.tid = o.tool_use_id
WHERE o.ts > ? AND o.ts <= ? ORDER BY o.session_id, o.ts, o.tool_use_id
"""


def turns_saved(messages: list[str | None], cost: dict[str, tuple[int, float | None]]
                ) -> tuple[int | None, float | None]:
    """(tokens, USD) of the API responses that issued steps 2..n of one occurrence (``messages``: the response
    of each step), apart from the one that issued step 1: what one call for the whole sequence saves. None
    when a step's response or its usage is unknown (USD also when its model has no price)."""
    first, rest = messages[0], set(messages[1:]) - {messages[0]}
    if first is None or None in rest:
        return None, None
    known = [cost[m] for m in rest if m is not None and m in cost]
    if len(known) != len(rest):
        return None, None
    prices = [usd for _, usd in known]
    return sum(t for t, _ in known), None if None in prices else float(sum(p for p in prices if p is not None))


def macro_candidates(con: duckdb.DuckDBPyConnection, cfg: DiscoveryConfig, start: datetime,
                     end: datetime) -> list[Candidate]:
    grams = [tuple(g.split(" -> ")) for (g,) in con.execute(
        "SELECT ngram FROM sequence_patterns WHERE level = 'signature' AND n BETWEEN 2 AND 4 "
        "AND session_count >= ? AND occurrence_count >= ? ORDER BY ngram",
        [cfg.min_sessions, cfg.min_occurrences]).fetchall()]
    if not grams:
        return []
    sessions: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    meta: dict[str, tuple[datetime, str | None]] = {}
    for session, tid, sig, status, ts, mid in con.execute(_CALLS, [start, end]).fetchall():
        sessions[session].append((tid, sig, status))
        meta[tid] = (ts, mid)
    cost: dict[str, tuple[int, float | None]] = {r[0]: (int(r[1]), r[2]) for r in con.execute(
        "SELECT id, input_tokens + output_tokens + cache_read_input_tokens + cache_creation_input_tokens, cost_usd "
        "FROM usage WHERE \"timestamp\" > ? AND \"timestamp\" <= ?", [start, end]).fetchall()}
    tokens = {s: sequence_tokens(calls) for s, calls in sessions.items()}
    sample = {sig: json.loads(sm)[0] for sig, sm in con.execute(  # one redacted sample command per step
        "SELECT signature, samples FROM operation_patterns WHERE json_array_length(samples) > 0").fetchall()}
    out = []
    for gram in grams:
        occ = []
        for session, toks in tokens.items():
            for tids in find_sequence(toks, gram):
                tok, usd = turns_saved([meta[t][1] for t in tids], cost)
                occ.append(Occurrence(tids[0], session, meta[tids[0]][0], tok, usd))
        if occ:
            text = " -> ".join(gram)
            samples = [sample[s.rstrip("!")] for s in gram if s.rstrip("!") in sample]
            out.append(Candidate(
                "macro", text, f"One call for the sequence {text}", tuple(occ),
                f"Provide one deterministic command (a script or an `outloop` macro) that runs the {len(gram)} steps "
                f"{text} in order and prints one compact result, so the agent spends one turn instead of "
                f"{len(gram)}.",
                ("The macro runs the steps in the same order, stops at the first failure and says which step failed.",
                 "Its output keeps every line the agent used from the separate steps (fidelity 1.0 on the samples).",
                 "After adoption, the sequence's occurrences per 30 days fall and the saved turns show in the usage."),
                {"sequence": list(gram), "samples": samples}))
    return out


_CAUSE_FIX = {
    "idle": ("Keep the cache warm across idle gaps: compact or end the session before a long pause, or write the "
             "long-lived prefix with the 1-hour cache lifetime where the gaps are regular."),
    "model_switch": "Stay on one model within a session (a model switch rewrites the whole cached context).",
    "compaction": ("Compact less often, or earlier while the context is still small (a compaction rewrites the "
                   "cached context)."),
}


def cache_candidates(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> list[Candidate]:
    by_cause: dict[str, list[Occurrence]] = defaultdict(list)
    for uid, session, at, cause, tokens, extra in con.execute(
            'SELECT usage_id, session_id, "at", cause, tokens, extra_cost_usd FROM cache_breaks '
            'WHERE "at" > ? AND "at" <= ? ORDER BY "at", usage_id', [start, end]).fetchall():
        by_cause[cause].append(Occurrence(uid, session, at, int(tokens), None if extra is None else float(extra)))
    return [Candidate(
        "context", f"cache-break:{cause}", f"Recurring cache breaks ({cause})", tuple(occ),
        _CAUSE_FIX.get(cause, f"Find what breaks the cache ({cause}) and avoid it."),
        (f"Cache breaks caused by {cause} per 30 days fall (see `outloop context`, cache breaks).",
         "The cost over a warm cache of the remaining breaks is reported by `outloop discover` again."),
        {"cause": cause}) for cause, occ in sorted(by_cause.items())]


_UNUSED = """
WITH model AS (SELECT session_id, mode(model) AS model FROM usage GROUP BY session_id)
SELECT f.file_path, f.session_id, e.window_end, f.tokens, f.carry_tokens, m.model
FROM file_reads f JOIN context_efficiency e USING (session_id) LEFT JOIN model m USING (session_id)
WHERE NOT f.used AND NOT f.edited AND e.window_end > ? AND e.window_end <= ?
ORDER BY f.file_path, e.window_end, f.session_id
"""


def unused_file_candidates(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime,
                           prices: PriceTable) -> list[Candidate]:
    occ: dict[str, list[Occurrence]] = defaultdict(list)
    for path, session, at, tokens, carry_tokens, model in con.execute(_UNUSED, [start, end]).fetchall():
        found = prices.lookup(model)
        usd = None if found is None else (tokens * found[1].rates.cache_write_5m
                                          + max(0, carry_tokens - tokens) * found[1].rates.cache_read) / 1e6
        occ[path].append(Occurrence(f"{session}:{path}", session, at, int(carry_tokens), usd))
    return [Candidate(
        "context", f"unused-read:{path}", f"`{path}` is read in many sessions and never used", tuple(o),
        "Stop loading this file by default: drop it from the instructions that make agents read it, or give the "
        "agent a short summary (its outline, the part it needs) instead of the whole file.",
        ("Sessions that read the file without using it fall (see `outloop context`, file reads).",
         "No session that needs the file loses it: reads followed by an edit or a mention still happen."),
        {"file_path": path, "sessions": sorted({x.session_id for x in o})}) for path, o in sorted(occ.items())]


_MEMORY = """
WITH model AS (SELECT session_id, mode(model) AS model FROM usage GROUP BY session_id)
SELECT o.cwd, o.session_id, e.window_end, o.memory_tokens, o.memory_files, e.api_calls, m.model
FROM context_overhead o JOIN context_efficiency e USING (session_id) LEFT JOIN model m USING (session_id)
WHERE o.memory_tokens > 0 AND o.cwd IS NOT NULL AND e.api_calls > 0 AND e.window_end > ? AND e.window_end <= ?
ORDER BY o.cwd, e.window_end, o.session_id
"""


def memory_candidates(con: duckdb.DuckDBPyConnection, cfg: DiscoveryConfig, start: datetime, end: datetime,
                      prices: PriceTable) -> list[Candidate]:
    """Memory files re-read by every API call of a project's sessions (``context_overhead``, measured where
    the project folder was at hand): ``overhead_share`` of their tokens, written once per session and read
    by every later call."""
    occ: dict[str, list[Occurrence]] = defaultdict(list)
    files: dict[str, Any] = {}
    for cwd, session, at, tokens, listed, calls, model in con.execute(_MEMORY, [start, end]).fetchall():
        trimmed = round(cfg.overhead_share * tokens)
        found = prices.lookup(model)
        usd = None if found is None else trimmed * (found[1].rates.cache_write_5m
                                                    + (calls - 1) * found[1].rates.cache_read) / 1e6
        occ[cwd].append(Occurrence(session, session, at, trimmed * calls, usd))
        files[cwd] = json.loads(listed) if isinstance(listed, str) else listed or []
    return [Candidate(
        "context", f"memory:{cwd}", f"Memory files re-read by every call in `{cwd}`", tuple(o),
        "Trim the memory files every session of this project loads (CLAUDE.md and the like): keep the rules agents "
        "need on every call, move the rest to files read on demand. Each token removed is saved on every API call.",
        ("The memory files' estimated tokens fall (see `context_overhead.memory_tokens`).",
         "Sessions keep following the rules that stay (no rise in errors or re-done edits)."),
        {"cwd": cwd, "memory_files": files[cwd], "overhead_share": cfg.overhead_share})
        for cwd, o in sorted(occ.items())]


def rule_candidates(con: duckdb.DuckDBPyConnection, cfg: DiscoveryConfig, start: datetime,
                    end: datetime) -> list[Candidate]:
    accepted = con.execute(
        "SELECT rec_id, rule, projected_monthly_usd FROM (SELECT *, row_number() OVER (PARTITION BY rec_id ORDER BY "
        "\"at\" DESC, id DESC) AS k FROM recommendation_feedback WHERE action IN ('accept', 'reject')) "
        "WHERE k = 1 AND action = 'accept' AND rule IS NOT NULL ORDER BY rule").fetchall()
    active = {name for name, _s, _c in _active_rules(con)}
    out = []
    for rec, rule, projected in accepted:
        if rule not in active or not projected:
            continue
        rows = con.execute("SELECT decision_id, session_id, decided_at, net_tokens, net_usd, fidelity, fidelity_used "
                           "FROM cost_savings_log WHERE rule = ? AND basis = 'measured' AND decided_at > ? "
                           "AND decided_at <= ? ORDER BY decided_at, decision_id", [rule, start, end]).fetchall()
        if not rows:
            continue
        scale = 30.0 / cfg.window_days
        realised = sum(r[4] or 0.0 for r in rows) * scale
        weight = sum(r[6] or 0 for r in rows if r[5] is not None)
        fidelity = sum(r[5] * (r[6] or 0) for r in rows if r[5] is not None) / weight if weight else None
        why = underdelivers(float(projected), realised, fidelity, cfg)
        if why is None:
            continue
        per = float(projected) / (len(rows) * scale)  # the projected saving of one decision
        occ = tuple(Occurrence(d, s, at, None, per - (usd or 0.0)) for d, s, at, _t, usd, _f, _u in rows)
        out.append(Candidate(
            "rule", rule, f"Routing rule `{rule}` under-delivers", occ,
            f"Review rule `{rule}`: {why}. Narrow its signatures, fix its summariser where fidelity is lost, or demote "
            "it to shadow.",
            ("The rule's measured fidelity is at least the configured minimum over its next 20 decisions.",
             "Its realised savings per 30 days reach the configured share of the projection."),
            {"rule": rule, "recommendation": rec, "projected_monthly_usd": projected,
             "realised_monthly_usd": round(realised, 4), "fidelity": fidelity, "why": why}))
    return out


def analyse(con: duckdb.DuckDBPyConnection, cfg: DiscoveryConfig, prices: PriceTable
            ) -> tuple[datetime | None, list[Recommendation]]:
    """The ranked recommendations at the data's watermark (nothing before any event)."""
    end = watermark(con)
    if end is None:
        return None, []
    start, end = window(end, cfg)
    cands = (tool_candidates(con, cfg, start, end, prices) + macro_candidates(con, cfg, start, end)
             + cache_candidates(con, start, end) + unused_file_candidates(con, start, end, prices)
             + memory_candidates(con, cfg, start, end, prices)
             + rule_candidates(con, cfg, start, end))
    return end, rank(cands, end, cfg)
