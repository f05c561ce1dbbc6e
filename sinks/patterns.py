"""Pattern materialization, inside the sink's write transaction.

Counts come from facts, never from increments: an occurrence is the row (signature, tool_use_id) of
``pattern_occurrences``, derived from the merged ``tool_calls`` row each time that row changes, so a
redelivered or replayed call rewrites the same occurrence. ``operation_patterns`` rows are then
recomputed as absolute aggregates over the occurrences of the signatures a batch touched, and the
confidence is computed by :func:`agents.patterns.confidence` (one formula, documented in
docs/signatures.md). Window counts (1 h, 24 h, 7 d, 30 d) are taken back from the event-time
watermark - the latest occurrence time in the database - so they do not depend on the wall clock;
a full refresh (every pattern) runs whenever a batch carries a flush marker and otherwise at most
once a minute, which keeps the windows of quiet patterns current.

Sequences: the n-grams of every touched session are mined again from its ordered occurrences with
:class:`agents.sequences.SequenceMiner` and replace the session's rows of ``session_sequences``;
``sequence_patterns`` (a view) counts them by distinct sessions. Occurrences without any time (hook
captures carry none) have no order and stay out of sequences.

Why here and not in a Faust Table: on the embedded broker a restart forgets every changelog, and a
Table updated per event costs ~300 us; the database is the one durable, idempotent store.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from fractions import Fraction
from functools import lru_cache
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from agents.patterns import ConfidenceWeights, PatternStats, StatusRules, Welford, confidence, status_of
from agents.sequences import SequenceConfig, SequenceMiner
from agents.signatures import SIGNATURE_VERSION, SignatureCache, redact, signature_of

TS = pa.timestamp("us", tz="UTC")
OCC_SCHEMA = pa.schema([
    ("signature", pa.string()), ("tool_use_id", pa.string()), ("session_id", pa.string()), ("ts", TS),
    ("category", pa.string()), ("tool", pa.string()), ("target", pa.string()),
    ("side_effect", pa.string()), ("status", pa.string()), ("output_tokens", pa.int64()),
    ("duration_ms", pa.float64()), ("sample", pa.string()), ("signature_version", pa.int32()),
])
EFFECT_RANK = "list_position(['read-only', 'writes files', 'network', 'unknown', 'destructive'], side_effect)"
_CACHE = SignatureCache(maxsize=16384)


@lru_cache(maxsize=16384)
def _sample(text: str) -> str:
    return redact(text)[:500]


def _ids_table(ids: Iterable[str]) -> pa.Table:
    return pa.table({"id": pa.array(sorted(set(ids)), type=pa.string())})


def occurrences_for(con: duckdb.DuckDBPyConnection, ids: Iterable[str]) -> tuple[set[str], set[str]]:
    """Rewrite the occurrences (and the signature columns) of the tool calls ``ids``; also drop the
    occurrences of ``syn:`` rows merged away. Returns the touched signatures and sessions."""
    con.register("pat_ids", _ids_table(ids))
    try:
        gone = con.execute(
            "DELETE FROM pattern_occurrences WHERE tool_use_id IN (SELECT id FROM pat_ids) OR ("
            "tool_use_id LIKE 'syn:%' AND tool_use_id NOT IN (SELECT id FROM tool_calls WHERE id LIKE 'syn:%')) "
            "RETURNING signature, session_id").fetchall()
        rows = con.execute(
            "SELECT id, session_id, tool_name, tool_input, command, file_path, status, "
            "coalesce(started_at, ended_at), output_tokens_est, duration_ms FROM tool_calls "
            "WHERE id IN (SELECT id FROM pat_ids) AND tool_name IS NOT NULL").fetchall()
    finally:
        con.unregister("pat_ids")
    cols: dict[str, list[Any]] = {name: [] for name in OCC_SCHEMA.names}
    for tid, session, tool_name, tool_input, command, file_path, status, ts, tokens, dur in rows:
        sig = signature_of(tool_name, orjson.loads(tool_input) if tool_input else None, cache=_CACHE)
        for name, value in (("signature", sig.signature), ("tool_use_id", tid), ("session_id", session),
                            ("ts", ts), ("category", sig.category), ("tool", sig.tool), ("target", sig.target),
                            ("side_effect", sig.side_effect), ("status", status), ("output_tokens", tokens),
                            ("duration_ms", dur), ("sample", _sample(command or file_path or tool_name)),
                            ("signature_version", sig.version)):
            cols[name].append(value)
    occ = pa.table(cols, schema=OCC_SCHEMA)
    if occ.num_rows:
        con.register("pat_occ", occ)
        try:
            con.execute("INSERT INTO pattern_occurrences SELECT * FROM pat_occ")
            con.execute("UPDATE tool_calls SET signature = o.signature, category = o.category, "
                        "side_effect = o.side_effect, signature_version = o.signature_version "
                        "FROM pat_occ o WHERE tool_calls.id = o.tool_use_id")
        finally:
            con.unregister("pat_occ")
    signatures = {s for s, _ in gone} | set(cols["signature"])
    sessions = {s for _, s in gone} | set(cols["session_id"])
    return signatures, sessions


AGGREGATE = f"""
WITH wm AS (SELECT max(ts) AS w FROM pattern_occurrences),
occ AS (SELECT * FROM pattern_occurrences WHERE {{where}}),
firsts AS (SELECT signature, sample, min(coalesce(ts, TIMESTAMPTZ '9999-01-01')) AS t
           FROM occ GROUP BY signature, sample),
samples AS (SELECT signature, list(sample ORDER BY t, sample)[1:5] AS samples FROM firsts GROUP BY signature)
SELECT o.signature, min(category), min(tool), min(target),
       (['read-only', 'writes files', 'network', 'unknown', 'destructive'])[max({EFFECT_RANK})],
       count(*), count(DISTINCT session_id),
       count(*) FILTER (WHERE ts > wm.w - INTERVAL 1 HOUR), count(*) FILTER (WHERE ts > wm.w - INTERVAL 24 HOUR),
       count(*) FILTER (WHERE ts > wm.w - INTERVAL 7 DAY), count(*) FILTER (WHERE ts > wm.w - INTERVAL 30 DAY),
       any_value(wm.w), min(ts), max(ts),
       coalesce(sum(output_tokens), 0), count(output_tokens), sum(output_tokens::HUGEINT),
       sum(output_tokens::HUGEINT * output_tokens), min(output_tokens), max(output_tokens),
       count(duration_ms), sum(round(duration_ms * 1000)::HUGEINT), sum(round(duration_ms * 1000)::HUGEINT
       * round(duration_ms * 1000)::HUGEINT), min(duration_ms), max(duration_ms),
       count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status IN ('error', 'interrupted')),
       any_value(s.samples), min(signature_version)
FROM occ o CROSS JOIN wm LEFT JOIN samples s USING (signature)
GROUP BY o.signature
"""

PATTERN_COLUMNS = (
    "signature", "category", "tool", "target", "side_effect", "occurrence_count", "session_count",
    "count_1h", "count_24h", "count_7d", "count_30d", "windows_as_of", "first_seen", "last_seen",
    "confidence_score", "status", "tokens_total", "avg_output_tokens", "success_rate", "ok_count",
    "failed_count", "avg_duration_ms", "samples", "confidence_breakdown", "signature_version",
)


def _welford(n: int, total: int | None, squares: int | None, lo: float | None, hi: float | None,
             scale: int = 1) -> Welford:
    """Mean and variance from exact integer sums (floating-point sums in a parallel aggregate vary
    with the order of addition, and a replay must reproduce every digit)."""
    if not n:
        return Welford()
    n, total, squares = int(n), int(total or 0), int(squares or 0)
    m2 = Fraction(squares) - Fraction(total * total, n)  # sum of squared deviations, exact
    return Welford(n=n, mean=total / n / scale, m2=float(m2) / (scale * scale),
                   lo=float(lo if lo is not None else 0.0), hi=float(hi if hi is not None else 0.0))


def pattern_row(agg: tuple[Any, ...], weights: ConfidenceWeights, rules: StatusRules) -> dict[str, Any]:
    (sig, category, tool, target, effect, occurrences, sessions, c1h, c24h, c7d, c30d, as_of, first, last,
     tokens_total, tn, tsum, tsq, tlo, thi, dn, dsum, dsq, dlo, dhi, ok, failed, samples, version) = agg
    tokens, duration = _welford(tn, tsum, tsq, tlo, thi), _welford(dn, dsum, dsq, dlo, dhi, scale=1000)
    stats = PatternStats(signature=sig, category=category, side_effect=effect, occurrences=int(occurrences),
                         distinct_sessions=int(sessions), output_tokens=int(tokens_total),
                         tokens=tokens, duration=duration,
                         ok=int(ok), failed=int(failed))
    score, breakdown = confidence(stats, weights)
    windows = {"1h": int(c1h), "24h": int(c24h), "7d": int(c7d), "30d": int(c30d)}
    breakdown["frequency"]["windows"] = windows
    breakdown["windows_as_of"] = as_of.isoformat() if isinstance(as_of, datetime) else None
    known = int(ok) + int(failed)
    return {
        "signature": sig, "category": category, "tool": tool, "target": target, "side_effect": effect,
        "occurrence_count": int(occurrences), "session_count": int(sessions), "count_1h": windows["1h"],
        "count_24h": windows["24h"], "count_7d": windows["7d"], "count_30d": windows["30d"],
        "windows_as_of": as_of, "first_seen": first, "last_seen": last, "confidence_score": score,
        "status": status_of(stats, score, rules), "tokens_total": int(tokens_total),
        "avg_output_tokens": tokens.mean if tn else None,
        "success_rate": int(ok) / known if known else None, "ok_count": int(ok), "failed_count": int(failed),
        "avg_duration_ms": duration.mean if dn else None,
        "samples": orjson.dumps(samples or []).decode(),
        "confidence_breakdown": orjson.dumps(breakdown).decode(), "signature_version": version,
    }


def refresh_patterns(con: duckdb.DuckDBPyConnection, signatures: set[str] | None,
                     weights: ConfidenceWeights | None = None, rules: StatusRules | None = None) -> int:
    """Recompute ``operation_patterns`` for ``signatures`` (None: all). Returns rows written."""
    weights, rules = weights or ConfidenceWeights(), rules or StatusRules()
    if signatures is None:
        con.execute("DELETE FROM operation_patterns")
        aggs = con.execute(AGGREGATE.format(where="true")).fetchall()
    else:
        if not signatures:
            return 0
        con.register("pat_sigs", pa.table({"s": pa.array(sorted(signatures), type=pa.string())}))
        try:
            con.execute("DELETE FROM operation_patterns WHERE signature IN (SELECT s FROM pat_sigs)")
            aggs = con.execute(AGGREGATE.format(where="signature IN (SELECT s FROM pat_sigs)")).fetchall()
        finally:
            con.unregister("pat_sigs")
    rows = [pattern_row(a, weights, rules) for a in aggs]
    if rows:
        table = pa.Table.from_pylist(rows)
        con.register("pat_rows", table)
        try:
            cols = ", ".join(PATTERN_COLUMNS)
            con.execute(f"INSERT INTO operation_patterns ({cols}) SELECT {cols} FROM pat_rows")
        finally:
            con.unregister("pat_rows")
    return len(rows)


def refresh_sequences(con: duckdb.DuckDBPyConnection, sessions: set[str],
                      config: SequenceConfig | None = None) -> int:
    if not sessions:
        return 0
    config = config or SequenceConfig()
    con.register("pat_sessions", pa.table({"s": pa.array(sorted(sessions), type=pa.string())}))
    try:
        con.execute("DELETE FROM session_sequences WHERE session_id IN (SELECT s FROM pat_sessions)")
        occ = con.execute(
            "SELECT session_id, tool_use_id, signature, ts, status FROM pattern_occurrences "
            "WHERE session_id IN (SELECT s FROM pat_sessions) AND ts IS NOT NULL "
            "ORDER BY session_id, ts, tool_use_id").fetchall()
    finally:
        con.unregister("pat_sessions")
    out: list[dict[str, Any]] = []
    current: str | None = None
    miner = SequenceMiner(config)

    def flush(session: str | None) -> None:
        if session is None:
            return
        for p in miner.patterns(min_sessions=1, limit=10**9):
            out.append({"session_id": session, "level": p.level, "ngram": p.text, "n": p.n,
                        "occurrences": p.occurrences,
                        "first_seen": datetime.fromtimestamp(p.first_seen_ms / 1000, tz=UTC),
                        "last_seen": datetime.fromtimestamp(p.last_seen_ms / 1000, tz=UTC)})

    for session, tid, sig, ts, status in occ:
        if session != current:
            flush(current)
            current, miner = session, SequenceMiner(config)
        miner.add(session, tid, sig, ts, success=None if status == "started" else status == "ok")
    flush(current)
    if out:
        con.register("pat_seq", pa.Table.from_pylist(out))
        try:
            con.execute("INSERT INTO session_sequences SELECT session_id, level, ngram, n, occurrences, "
                        "first_seen, last_seen FROM pat_seq")
        finally:
            con.unregister("pat_seq")
    return len(out)


def stale_signature_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Tool calls whose signature was computed by an older rule version (or never): recompute them."""
    rows = con.execute("SELECT id FROM tool_calls WHERE tool_name IS NOT NULL AND "
                       "(signature_version IS NULL OR signature_version <> ?)", [SIGNATURE_VERSION]).fetchall()
    return [r[0] for r in rows]



def materialize(con: duckdb.DuckDBPyConnection, tool_call_ids: Iterable[str], call_keys: Iterable[str]) -> None:
    """Rewrite the occurrences a written batch implies and mark their signatures and sessions dirty,
    in the batch's transaction (so a crash never loses what a refresh still owes)."""
    ids = set(tool_call_ids)
    keys = sorted(set(call_keys))
    if keys:  # real rows a syn row was merged into changed too
        con.register("pat_keys", pa.table({"k": pa.array(keys, type=pa.string())}))
        try:
            ids |= {r[0] for r in con.execute(
                "SELECT id FROM tool_calls WHERE call_key IN (SELECT k FROM pat_keys)").fetchall()}
        finally:
            con.unregister("pat_keys")
    if not ids:
        return
    signatures, sessions = occurrences_for(con, ids)
    dirty = [("signature", s) for s in sorted(signatures)] + [("session", s) for s in sorted(sessions)]
    if dirty:
        con.register("pat_dirty", pa.table({"kind": [k for k, _ in dirty], "key": [v for _, v in dirty]}))
        try:
            con.execute("INSERT INTO pattern_dirty SELECT kind, key FROM pat_dirty ON CONFLICT DO NOTHING")
        finally:
            con.unregister("pat_dirty")


def refresh(con: duckdb.DuckDBPyConnection, full: bool = False, sequences: bool = True) -> tuple[int, int]:
    """Recompute the dirty patterns (all of them when ``full``: window counts move with the watermark)
    and, with ``sequences``, the n-grams of every dirty session; clear what was refreshed.
    Returns (patterns, sequence rows) written."""
    signatures = {r[0] for r in con.execute("SELECT key FROM pattern_dirty WHERE kind = 'signature'").fetchall()}
    written = refresh_patterns(con, None if full else signatures), 0
    con.execute("DELETE FROM pattern_dirty WHERE kind = 'signature'")
    if sequences:
        sessions = {r[0] for r in con.execute("SELECT key FROM pattern_dirty WHERE kind = 'session'").fetchall()}
        written = written[0], refresh_sequences(con, sessions)
        con.execute("DELETE FROM pattern_dirty WHERE kind = 'session'")
    return written
