"""Pattern materialization, inside the sink's write transaction, maintained incrementally.

Facts: an occurrence is the row of ``pattern_occurrences`` keyed by ``tool_use_id`` (one per tool
call), derived from the merged ``tool_calls`` row each time that row changes, so a redelivered or
replayed call rewrites the same occurrence (and an identical rewrite changes nothing at all). Its
``duration_ms`` is the call's run time (:func:`run_of`), never the wall-clock span, which may hold a
wait for the user's permission; the derived ``run_ms`` and ``duration_source`` are written back to
the call with its signature columns.

State: per-signature aggregates are kept up to date from the *delta* of occurrences each batch
changes - every occurrence a batch rewrites subtracts its old row's contribution and adds the new
one (:data:`FOLDS`):

* ``pattern_state`` (signature): counts, exact integer sums and sums of squares (HUGEINT), ok and
  failed counts, min/max values, first/last seen, distinct sessions;
* ``pattern_sessions`` (signature, session_id) -> n: ``pattern_state.sessions`` is the number of
  its rows (rows whose n falls to 0 are deleted);
* ``pattern_hours`` (signature, UTC hour) -> n: window counts are sums of at most 721 buckets;
* ``pattern_samples`` (signature, sample) -> n, first time: the first five distinct samples;
* ``pattern_session_spans`` (session_id) -> n, first/last occurrence time: bounds the sequence re-read.

Sums are subtractable; minima and maxima are not. After a delta, an extreme is recomputed from the
occurrences only for the keys where a removed value equalled the stored extreme and no added value
reached it (if one did, the added value *is* the new extreme): a rewrite that keeps its value never
triggers it, and a new call never does. So every state row equals what a from-scratch aggregate over
``pattern_occurrences`` gives (``tests/unit/test_incremental_patterns.py`` checks that after random
batches, redeliveries and syn merges).

``operation_patterns`` rows are then computed for the signatures a batch changed (all of them in a
full refresh) from that state, with the confidence of :func:`agents.patterns.confidence`, exactly as
the from-scratch :data:`AGGREGATE` (kept as the definition, for tests and benchmarks) would. Window
counts (1 h, 24 h, 7 d, 30 d) count the occurrences with ``ts > W - window``, W the event-time
watermark = the latest occurrence time (``max(pattern_state.last_seen)``): whole hours after the
boundary hour come from ``pattern_hours``, the boundary hour itself from an exact count over the
occurrences of that one hour (a ``ts`` range: row-group min/max pruning). A full refresh runs
whenever a batch carries a flush marker and otherwise at most once a minute, which keeps the windows
of quiet patterns current.

Keyed access: the rows of a batch are read, deleted and updated through ``IN (?, ...)`` lists of at
most :data:`CHUNK` keys, which DuckDB answers from the primary-key index instead of a scan, so the
cost of a batch does not grow with the tables. ``syn:<call_key>`` rows merged away in a batch are
found from the batch's call keys (their ids are ``syn:`` + key), never by scanning.

Sequences: the n-grams of every touched session are mined again from its ordered occurrences with
:class:`agents.sequences.SequenceMiner` and replace the session's rows of ``session_sequences``;
``sequence_patterns`` (a view) counts them by distinct sessions. Occurrences without any time (hook
captures carry none) have no order and stay out of sequences.

Why here and not in a Faust Table: on the embedded broker a restart forgets every changelog, and a
Table updated per event costs ~300 us; the database is the one durable, idempotent store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import lru_cache
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from outloop.agents.patterns import (
    WINDOWS,
    ConfidenceWeights,
    PatternStats,
    StatusRules,
    Welford,
    confidence,
    dominant_effect,
    effect_counts,
    status_of,
)
from outloop.agents.sequences import SequenceConfig, SequenceMiner
from outloop.agents.signatures import SIGNATURE_VERSION, Signature, SignatureCache, redact, signature_of

TS = pa.timestamp("us", tz="UTC")
_NAIVE = pa.timestamp("us")  # UTC wall time: how Python reads times back here (see _utc_list)
OCC_SCHEMA = pa.schema([
    ("signature", pa.string()), ("tool_use_id", pa.string()), ("session_id", pa.string()), ("ts", TS),
    ("category", pa.string()), ("tool", pa.string()), ("target", pa.string()),
    ("side_effect", pa.string()), ("status", pa.string()), ("output_tokens", pa.int64()),
    ("duration_ms", pa.float64()), ("sample", pa.string()), ("signature_version", pa.int32()),
])
OCC_COLUMNS = ", ".join(OCC_SCHEMA.names)
EFFECTS = "['read-only', 'writes files', 'network', 'unknown', 'destructive']"
EFFECT_RANK = f"list_position({EFFECTS}, side_effect)"
MICROS = "round(duration_ms * 1000)::HUGEINT"  # durations as exact integers (microseconds)
HOUR = "date_trunc('hour', timezone('UTC', ts))"  # the UTC hour of an occurrence (TIMESTAMP)
CHUNK = 2000  # keys per IN list: DuckDB answers an IN list this short from the primary-key index
KEYED_MAX = 20_000  # beyond this many keys one scan (a semi-join) is cheaper than index lookups
SCAN_ROWS_PER_KEY = 200  # an index lookup costs about a scan of this many rows (measured: ~19 us a key, ~0.1 us a row)
_CACHE = SignatureCache(maxsize=16384)


@lru_cache(maxsize=16384)
def _sample(text: str) -> str:
    return redact(text)[:500]


_SIGNED_TEXT_MAX = 4096  # longer tool inputs (file contents) are not kept in the memo below


@lru_cache(maxsize=8192)
def _signature_of_text(tool_name: str, tool_input: str | None) -> Signature:
    return signature_of(tool_name, orjson.loads(tool_input) if tool_input else None, cache=_CACHE)


def _signature(tool_name: str, tool_input: str | None) -> Signature:
    """The signature of a stored tool call (``tool_input`` as its canonical JSON text), memoized by that
    text: a new call's signature is needed twice (its row, its occurrence), and most calls repeat."""
    if tool_input is not None and len(tool_input) > _SIGNED_TEXT_MAX:
        return signature_of(tool_name, orjson.loads(tool_input), cache=_CACHE)
    return _signature_of_text(tool_name, tool_input)


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a registered view, in a ``finally``: inside a transaction a failed statement aborted,
    unregistering fails too and would replace the real error (an out-of-memory the writer must see to
    grow its limit, a refusal it must turn into a dead letter) with "transaction is aborted". A view
    left registered is replaced by the next register of its name."""
    with suppress(duckdb.Error):
        con.unregister(name)


def _ids_table(ids: Iterable[str]) -> pa.Table:
    return pa.table({"id": pa.array(sorted(set(ids)), type=pa.string())})


def _estimated_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    rows = con.execute("SELECT estimated_size FROM duckdb_tables() WHERE table_name = ? AND database_name = "
                       "current_database() AND schema_name = current_schema()", [table]).fetchall()
    return int(rows[0][0] or 0) if rows else 0  # fetched to the end: a pending result blocks register()


def _keyed(con: duckdb.DuckDBPyConnection, sql: str, keys: Iterable[str], table: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` on ``table``, whose ``{keys}`` stands for the set ``keys``, and return its rows:
    as ``IN (?, ...)`` lists of at most CHUNK keys, which DuckDB answers from the primary-key index
    (cost grows with the keys, not with the table), or as one semi-join over a registered table (a
    scan: cost grows with the table) where that is cheaper - beyond KEYED_MAX keys, or beyond one key
    per SCAN_ROWS_PER_KEY rows of the table. Measured on 150,000 tool calls, the lookups of a batch's
    5,000 calls and occurrences: 414 ms by index, 65 ms by scan."""
    ordered = sorted(set(keys))
    if not ordered:
        return []
    if len(ordered) > KEYED_MAX or len(ordered) * SCAN_ROWS_PER_KEY >= _estimated_rows(con, table):
        con.register("pat_keys", _ids_table(ordered))
        try:
            return con.execute(sql.format(keys="SELECT id FROM pat_keys")).fetchall()
        finally:
            _unregister(con, "pat_keys")
    out: list[tuple[Any, ...]] = []
    for i in range(0, len(ordered), CHUNK):
        part = ordered[i:i + CHUNK]
        out += con.execute(sql.format(keys=", ".join("?" * len(part))), part).fetchall()
    return out


# ---- folds: per-key state maintained from occurrence deltas -------------------------------------

@dataclass(frozen=True)
class Fold:
    """A state table maintained from signed occurrence rows (w = +1 added, -1 removed): ``sums`` are
    added up (the first is the row count ``n``; a row whose n falls to 0 is deleted), ``extremes`` are
    min/max kept exact by :func:`_apply_fold`. Keys and values are SQL expressions over an occurrence."""

    table: str
    keys: tuple[tuple[str, str], ...]
    sums: tuple[tuple[str, str], ...]
    extremes: tuple[tuple[str, str, str], ...] = ()  # (column, expression, 'min' | 'max')
    where: str = "true"

    @property
    def key_names(self) -> list[str]:
        return [k for k, _ in self.keys]

    def aggregate(self, source: str, weighted: bool) -> str:
        """SELECT of the fold's columns grouped by its keys over ``source`` (signed rows when
        ``weighted``: sums, and the extremes of the added and of the removed rows apart)."""
        cols = [f"{e} AS {k}" for k, e in self.keys]
        if weighted:
            cols += [f"coalesce(sum(w * ({e})), 0) AS {c}" for c, e in self.sums]
            for c, e, agg in self.extremes:
                cols += [f"{agg}({e}) FILTER (WHERE w > 0) AS add_{c}", f"{agg}({e}) FILTER (WHERE w < 0) AS rem_{c}"]
        else:
            cols += [f"coalesce(sum({e}), 0) AS {c}" for c, e in self.sums]
            cols += [f"{agg}({e}) AS {c}" for c, e, agg in self.extremes]
        return f"SELECT {', '.join(cols)} FROM {source} WHERE {self.where} GROUP BY ALL"


STATE = Fold(
    "pattern_state", (("signature", "signature"),),
    sums=(("n", "1"), ("tokens_n", "(output_tokens IS NOT NULL)::BIGINT"), ("tokens_sum", "output_tokens::HUGEINT"),
          ("tokens_sq", "output_tokens::HUGEINT * output_tokens"), ("duration_n", "(duration_ms IS NOT NULL)::BIGINT"),
          ("duration_sum", MICROS), ("duration_sq", f"{MICROS} * {MICROS}"), ("ok", "(status = 'ok')::BIGINT"),
          ("failed", "(status IN ('error', 'interrupted'))::BIGINT")),
    extremes=(("category", "category", "min"), ("tool", "tool", "min"), ("target", "target", "min"),
              ("effect_rank", EFFECT_RANK, "max"), ("first_seen", "ts", "min"), ("last_seen", "ts", "max"),
              ("tokens_min", "output_tokens", "min"), ("tokens_max", "output_tokens", "max"),
              ("duration_min", "duration_ms", "min"), ("duration_max", "duration_ms", "max"),
              ("version_min", "signature_version", "min")))
SESSIONS = Fold("pattern_sessions", (("signature", "signature"), ("session_id", "session_id")), (("n", "1"),))
HOURS = Fold("pattern_hours", (("signature", "signature"), ("hour", HOUR)), (("n", "1"),), where="ts IS NOT NULL")
SAMPLES = Fold("pattern_samples", (("signature", "signature"), ("sample", "sample")), (("n", "1"),),
               (("first_at", "coalesce(ts, TIMESTAMPTZ '9999-01-01')", "min"),), where="sample IS NOT NULL")
SPANS = Fold("pattern_session_spans", (("session_id", "session_id"),), (("n", "1"),),
             (("first_ts", "ts", "min"), ("last_ts", "ts", "max")), where="ts IS NOT NULL")
EFFECT_COUNTS = Fold("pattern_effects", (("signature", "signature"), ("side_effect", "side_effect")), (("n", "1"),))
FOLDS = (STATE, SESSIONS, HOURS, SAMPLES, SPANS, EFFECT_COUNTS)


_TIME_EXTREMES = frozenset({"first_seen", "last_seen", "first_at", "first_ts", "last_ts"})


def _naive(expr: str, column: str) -> str:
    """``expr`` as Python reads it back: the time extremes as naive UTC datetimes (an aware one costs
    5-6 us a value to localize, and only equality between them matters here)."""
    return f"timezone('UTC', {expr})" if column in _TIME_EXTREMES else expr


def _pylist(column: pa.ChunkedArray) -> list[Any]:
    """A column as Python values, UTC times as naive datetimes (as :func:`_naive` reads them back)."""
    if pa.types.is_timestamp(column.type) and column.type.tz is not None:
        return column.cast(_NAIVE).to_pylist()
    return column.to_pylist()


def _apply_fold(con: duckdb.DuckDBPyConnection, fold: Fold, extra: dict[tuple[Any, ...], int] | None = None
                ) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Apply the signed rows of ``pat_delta`` to ``fold.table``. ``extra`` adds one more summed
    column (``pattern_state.sessions``). Returns, per key whose count changed, (old n, new n)."""
    keys, sums, ext, agg, upsert = _delta_sql(con, fold, extra)
    unchanged = " AND ".join([f"{c} = 0" for c in sums] + [f"add_{c} IS NOT DISTINCT FROM rem_{c}" for c in ext])
    t = fold.table
    try:  # the keys that change, once, as Arrow: cheaper than a temporary table to create, filter and drop
        changed = con.sql(f"SELECT * FROM ({agg}) WHERE NOT ({unchanged})").to_arrow_table()
    finally:
        if extra:
            _unregister(con, "pat_extra")
    if not changed.num_rows:
        return {}
    read = [_pylist(changed.column(c)) for c in keys + ["n"] + [f"add_{c}" for c in ext] + [f"rem_{c}" for c in ext]]
    delta = {tuple(r[:len(keys)]): r[len(keys):] for r in zip(*read, strict=True)}
    con.register("pat_d", changed)
    try:
        after = con.execute(upsert.format(source="pat_d") + " RETURNING "
                            + ", ".join(keys + ["n"] + [_naive(c, c) for c in ext])).fetchall()
    finally:
        _unregister(con, "pat_d")
    counts: dict[tuple[Any, ...], tuple[int, int]] = {}
    stale: list[tuple[Any, ...]] = []
    for row in after:
        key, n, stored = tuple(row[:len(keys)]), int(row[len(keys)]), row[len(keys) + 1:]
        dn, adds, rems = delta[key][0], delta[key][1:1 + len(ext)], delta[key][1 + len(ext):]
        if n < 0:
            raise RuntimeError(f"{t}: negative count for {key}")  # a delta removed what was never added
        counts[key] = (n - int(dn), n)
        # the stored extreme is exact unless a removed value was it and no added value reached it
        if n and any(r is not None and r == s and a != s for a, r, s in zip(adds, rems, stored, strict=True)):
            stale.append(key)
    if stale:
        _recompute_extremes(con, fold, stale)
    if any(n == 0 for _, n in counts.values()):
        con.execute(f"DELETE FROM {t} WHERE n = 0")
    return counts


def _delta_sql(con: duckdb.DuckDBPyConnection, fold: Fold, extra: dict[tuple[Any, ...], int] | None
               ) -> tuple[list[str], list[str], list[str], str, str]:
    """What both ways of applying ``pat_delta`` to ``fold.table`` share: its key, summed and extreme
    columns, the weighted aggregate of the delta (with ``extra`` joined in as ``sessions``, registered
    as ``pat_extra``: the caller unregisters it), and the upsert of aggregate rows from ``{source}``
    (sums added, extremes merged with least/greatest)."""
    keys = fold.key_names
    sums = [c for c, _ in fold.sums] + (["sessions"] if extra is not None else [])
    ext = [c for c, _, _ in fold.extremes]
    agg = fold.aggregate("pat_delta", weighted=True)
    if extra:
        con.register("pat_extra", pa.table({"k": pa.array([k[0] for k in extra], type=pa.string()),
                                            "v": pa.array(list(extra.values()), type=pa.int64())}))
        agg = f"SELECT a.*, coalesce(e.v, 0) AS sessions FROM ({agg}) a LEFT JOIN pat_extra e ON a.{keys[0]} = e.k"
    elif extra is not None:
        agg = f"SELECT *, 0::BIGINT AS sessions FROM ({agg})"
    t = fold.table
    sets = [f"{c} = {t}.{c} + EXCLUDED.{c}" for c in sums]
    sets += [f"{c} = {'least' if how == 'min' else 'greatest'}({t}.{c}, EXCLUDED.{c})" for c, _, how in fold.extremes]
    upsert = (f"INSERT INTO {t} ({', '.join(keys + sums + ext)}) "
              f"SELECT {', '.join(keys + sums + [f'add_{c}' for c in ext])} FROM {{source}} "
              f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(sets)}")
    return keys, sums, ext, agg, upsert


def _add_fold(con: duckdb.DuckDBPyConnection, fold: Fold, extra: dict[tuple[Any, ...], int] | None = None) -> None:
    """:func:`_apply_fold` when every row of ``pat_delta`` is added (a batch of new calls, nothing
    rewritten): one statement, nothing read back into Python. Nothing it does can need what
    :func:`_apply_fold` reads back for: with no row removed no count falls (none reaches 0 to be
    deleted) and no extreme goes stale (the added values are merged with least/greatest)."""
    _, _, _, agg, upsert = _delta_sql(con, fold, extra)
    try:
        con.execute(upsert.format(source=f"({agg})"))
    finally:
        if extra:
            _unregister(con, "pat_extra")


def _recompute_extremes(con: duckdb.DuckDBPyConnection, fold: Fold, keys: list[tuple[Any, ...]]) -> None:
    """The extremes of ``keys`` from their occurrences (one scan; only when a removed row held one)."""
    names = fold.key_names
    con.register("pat_rk", pa.table({k: pa.array([key[i] for key in keys], type=pa.string())
                                     for i, k in enumerate(names)}))
    try:
        fresh = ", ".join(f"{agg}({e}) AS {c}" for c, e, agg in fold.extremes)
        con.execute(
            f"UPDATE {fold.table} SET {', '.join(f'{c} = r.{c}' for c, _, _ in fold.extremes)} FROM ("
            f"SELECT {', '.join(f'o.{k}' for k in names)}, {fresh} FROM pattern_occurrences o "
            f"JOIN pat_rk USING ({', '.join(names)}) WHERE {fold.where} GROUP BY ALL) r "
            f"WHERE {' AND '.join(f'{fold.table}.{k} = r.{k}' for k in names)}")
    finally:
        _unregister(con, "pat_rk")


def apply_delta(con: duckdb.DuckDBPyConnection, removed: Sequence[tuple[Any, ...]],
                added: Sequence[tuple[Any, ...]]) -> None:
    """Subtract the ``removed`` occurrence rows and add the ``added`` ones (OCC_SCHEMA order) to every
    state table."""
    if not removed and not added:
        return
    rows = [(-1, r) for r in removed] + [(1, r) for r in added]
    cols = {"w": pa.array([w for w, _ in rows], type=pa.int32())}
    for i, field in enumerate(OCC_SCHEMA):
        cols[field.name] = pa.array([r[i] for _, r in rows], type=field.type)
    con.register("pat_delta", pa.table(cols))
    apply = _apply_fold if removed else _add_fold  # only additions (new calls): nothing to read back
    try:
        sessions: dict[tuple[Any, ...], int] = defaultdict(int)
        for (sig, _), (old, new) in _apply_fold(con, SESSIONS).items():  # the new (signature, session) pairs
            sessions[(sig,)] += (new > 0) - (old > 0)
        apply(con, STATE, {k: v for k, v in sessions.items() if v})
        for fold in (HOURS, SAMPLES, SPANS, EFFECT_COUNTS):
            apply(con, fold)
    finally:
        _unregister(con, "pat_delta")


def rebuild_state(con: duckdb.DuckDBPyConnection) -> None:
    """Every state table from scratch, from ``pattern_occurrences`` (the definition the incremental
    maintenance must always equal)."""
    for fold in FOLDS:
        con.execute(f"DELETE FROM {fold.table}")
        names = fold.key_names + [c for c, _ in fold.sums] + [c for c, _, _ in fold.extremes]
        con.execute(f"INSERT INTO {fold.table} ({', '.join(names)}) "
                    f"{fold.aggregate('pattern_occurrences', weighted=False)}")
    con.execute("UPDATE pattern_state SET sessions = s.k FROM (SELECT signature, count(*) AS k FROM "
                "pattern_sessions GROUP BY signature) s WHERE pattern_state.signature = s.signature")


# ---- occurrences --------------------------------------------------------------------------------

# Occurrence rows in Python carry ``ts`` as a naive UTC datetime (Arrow and DuckDB read it as UTC):
# converting an aware one costs 5-6 us a value (time-zone localization), a naive one a tenth of that.
# A call row: what the occurrence is made of (0-8), the derived columns as stored (9-14: run_ms,
# signature, category, side_effect, signature_version, duration_source) and what the run time is
# derived from (15-20, see agents.toolcalls.run_time; hook times as epoch microseconds).
CALL_COLUMNS = ("id, session_id, tool_name, tool_input, command, file_path, status, "
                "timezone('UTC', coalesce(started_at, ended_at)), output_tokens_est, "
                "run_ms, signature, category, side_effect, signature_version, duration_source, "
                "source, ended_at IS NOT NULL, reported_ms, epoch_us(hook_pre_at), epoch_us(hook_post_at), "
                "permission_asked")
_CALL = f"SELECT {CALL_COLUMNS} FROM tool_calls WHERE id IN ({{keys}})"
_OCC_NAIVE = ", ".join("timezone('UTC', ts)" if c == "ts" else c for c in OCC_SCHEMA.names)
_OCC = f"SELECT {_OCC_NAIVE} FROM pattern_occurrences WHERE tool_use_id IN ({{keys}})"


def run_of(row: tuple[Any, ...]) -> tuple[float | None, str | None]:
    """(run_ms, duration_source) of a :data:`CALL_COLUMNS` row: :func:`agents.toolcalls.run_time` on
    the stored fields (the same arithmetic: microseconds / 10**6 * 1000 is timedelta.total_seconds()
    * 1000). Pattern durations are these run times, never the wall-clock ``duration_ms``."""
    source, ended, reported, pre, post, asked = row[15:21]
    if reported is not None:
        return float(reported), "tool-reported"
    if pre is not None and post is not None:
        return (None, "hook-wallclock") if asked else (max(0.0, (post - pre) / 1_000_000 * 1000.0), "hook")
    if ended and "transcript" in (source or "").split("+"):
        return None, "transcript-wallclock"
    return None, None


def _occurrence(row: tuple[Any, ...]) -> tuple[Any, ...]:
    tid, session, tool_name, tool_input, command, file_path, status, ts, tokens = row[:9]
    sig = _signature(tool_name, tool_input)
    return (sig.signature, tid, session, ts, sig.category, sig.tool, sig.target, sig.side_effect, status, tokens,
            run_of(row)[0], _sample(command or file_path or tool_name), sig.version)


def signature_columns(rows: pa.Table) -> pa.Table:
    """``rows`` (tool calls as staged) with the signature columns the stored row carries (NULL without a
    tool name), computed as :func:`occurrences_for` does: new tool calls go in with them."""
    sigs = [None if name is None else _signature(name, ti)
            for name, ti in zip(rows.column("tool_name").to_pylist(), rows.column("tool_input").to_pylist(),
                                strict=True)]
    for name, typ, get in SIGNATURE_COLUMNS:
        rows = rows.append_column(name, pa.array([None if s is None else get(s) for s in sigs], type=typ))
    runs = [run_of(r) for r in _run_inputs(rows)]
    rows = rows.append_column("run_ms", pa.array([r[0] for r in runs], type=pa.float64()))
    return rows.append_column("duration_source", pa.array([r[1] for r in runs], type=pa.string()))


def _run_inputs(rows: pa.Table) -> list[tuple[Any, ...]]:
    """The run-time inputs of staged tool calls, at :data:`CALL_COLUMNS` positions 15-20 (the
    positions before them left empty)."""
    cols = [rows.column("source").to_pylist(), pc.is_valid(rows.column("ended_at")).to_pylist(),
            rows.column("reported_ms").to_pylist(), rows.column("hook_pre_at").cast(pa.int64()).to_pylist(),
            rows.column("hook_post_at").cast(pa.int64()).to_pylist(), rows.column("permission_asked").to_pylist()]
    return [(None,) * 15 + r for r in zip(*cols, strict=True)]


SIGNATURE_COLUMNS = (("signature", pa.string(), lambda s: s.signature), ("category", pa.string(), lambda s: s.category),
                     ("side_effect", pa.string(), lambda s: s.side_effect),
                     ("signature_version", pa.int32(), lambda s: s.version))


def _utc_list(times: pa.Array | pa.ChunkedArray) -> list[datetime | None]:
    """A UTC timestamp column as aware datetimes, 3x faster than ``to_pylist`` (which localizes each
    one through the time zone database: 5 us a value)."""
    return [None if t is None else t.replace(tzinfo=UTC) for t in times.cast(_NAIVE).to_pylist()]


def _fresh_calls(rows: pa.Table) -> dict[str, tuple[Any, ...]]:
    """The :data:`_CALL` rows of tool calls just put in by a plain insert, from the batch itself."""
    cols = {c: rows.column(c).to_pylist() for c in (
        "id", "session_id", "tool_name", "tool_input", "command", "file_path", "status", "output_tokens_est",
        "run_ms", "signature", "category", "side_effect", "signature_version", "duration_source")}
    ts = pc.coalesce(rows.column("started_at"), rows.column("ended_at")).cast(_NAIVE).to_pylist()  # see _CALL
    runs = _run_inputs(rows)
    out = {}
    for i, tid in enumerate(cols["id"]):
        out[tid] = (tid, cols["session_id"][i], cols["tool_name"][i], cols["tool_input"][i], cols["command"][i],
                    cols["file_path"][i], cols["status"][i], ts[i], cols["output_tokens_est"][i],
                    cols["run_ms"][i], cols["signature"][i], cols["category"][i], cols["side_effect"][i],
                    cols["signature_version"][i], cols["duration_source"][i], *runs[i][15:])
    return out


def occurrences_for(con: duckdb.DuckDBPyConnection, ids: Iterable[str], gone_ids: Iterable[str] = (),
                    fresh: dict[str, tuple[Any, ...]] | None = None) -> tuple[set[str], set[str]]:
    """Rewrite the occurrences (and the signature columns) of the tool calls ``ids``, drop those of
    ``gone_ids`` (rows merged away), and apply the difference to the state tables. An occurrence
    whose row is unchanged is left alone. Returns the signatures and sessions that changed.

    ``fresh``: rows among ``ids`` that did not exist before this transaction and are stored exactly
    as given (a plain insert, untouched since, signature columns included): they are neither read
    back nor looked up among the occurrences (a new tool call has none)."""
    ids = set(ids)
    fresh = fresh or {}
    known = ids - fresh.keys()
    calls = {r[0]: r for r in _keyed(con, _CALL, known, "tool_calls")}
    calls.update((tid, row) for tid, row in fresh.items() if tid in ids)
    old = {r[1]: r for r in _keyed(con, _OCC, known | set(gone_ids), "pattern_occurrences")}
    new = {tid: _occurrence(r) for tid, r in calls.items() if r[2] is not None}
    removed = [row for tid, row in old.items() if new.get(tid) != row]
    added = [row for tid, row in new.items() if old.get(tid) != row]
    if removed:
        _keyed(con, "DELETE FROM pattern_occurrences WHERE tool_use_id IN ({keys})", [r[1] for r in removed],
               "pattern_occurrences")
    if added:
        con.register("pat_occ", pa.table({f.name: pa.array([r[i] for r in added], type=f.type)
                                          for i, f in enumerate(OCC_SCHEMA)}))
        try:
            con.execute(f"INSERT INTO pattern_occurrences ({OCC_COLUMNS}) SELECT {OCC_COLUMNS} FROM pat_occ")
        finally:
            _unregister(con, "pat_occ")
    derived = [(tid, o[0], o[4], o[7], o[12]) for tid, o in new.items()  # signature columns that changed
               if tuple(calls[tid][10:14]) != (o[0], o[4], o[7], o[12])]
    if derived:
        con.register("pat_sig", pa.table({
            "id": pa.array([d[0] for d in derived], type=pa.string()),
            "signature": pa.array([d[1] for d in derived], type=pa.string()),
            "category": pa.array([d[2] for d in derived], type=pa.string()),
            "side_effect": pa.array([d[3] for d in derived], type=pa.string()),
            "signature_version": pa.array([d[4] for d in derived], type=pa.int32())}))
        try:
            _keyed(con, "UPDATE tool_calls SET signature = u.signature, category = u.category, "
                        "side_effect = u.side_effect, signature_version = u.signature_version FROM pat_sig u "
                        "WHERE tool_calls.id = u.id AND tool_calls.id IN ({keys})", [d[0] for d in derived],
                   "tool_calls")
        finally:
            _unregister(con, "pat_sig")
    _store_runs(con, calls)
    apply_delta(con, removed, added)
    changed = removed + added
    return {r[0] for r in changed}, {r[2] for r in changed}


def _store_runs(con: duckdb.DuckDBPyConnection, calls: dict[str, tuple[Any, ...]]) -> None:
    """Write the run time and its source (:func:`run_of`) of the calls whose stored ones differ."""
    runs = [(tid, *run_of(r)) for tid, r in calls.items() if (r[9], r[14]) != run_of(r)]
    if not runs:
        return
    con.register("pat_run", pa.table({"id": pa.array([r[0] for r in runs], type=pa.string()),
                                      "run_ms": pa.array([r[1] for r in runs], type=pa.float64()),
                                      "duration_source": pa.array([r[2] for r in runs], type=pa.string())}))
    try:
        _keyed(con, "UPDATE tool_calls SET run_ms = u.run_ms, duration_source = u.duration_source FROM pat_run u "
                    "WHERE tool_calls.id = u.id AND tool_calls.id IN ({keys})", [r[0] for r in runs], "tool_calls")
    finally:
        _unregister(con, "pat_run")


AGGREGATE = """
WITH wm AS (SELECT max(ts) AS w FROM pattern_occurrences),
occ AS (SELECT * FROM pattern_occurrences WHERE {where}),
firsts AS (SELECT signature, sample, min(coalesce(ts, TIMESTAMPTZ '9999-01-01')) AS t
           FROM occ GROUP BY signature, sample),
samples AS (SELECT signature, list(sample ORDER BY t, sample)[1:5] AS samples FROM firsts GROUP BY signature),
effects AS (SELECT signature, map(list(side_effect), list(n)) AS effects
            FROM (SELECT signature, side_effect, count(*) AS n FROM occ GROUP BY ALL) GROUP BY signature)
SELECT o.signature, min(category), min(tool), min(target), any_value(e.effects),
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
FROM occ o CROSS JOIN wm LEFT JOIN samples s USING (signature) LEFT JOIN effects e USING (signature)
GROUP BY o.signature
"""
"""The from-scratch definition of a pattern's aggregates (one GROUP BY over every occurrence of the
signatures ``where`` selects). The sink no longer runs it: :func:`pattern_aggregates` gives the same
tuples from the incremental state; tests and ``bench/bench_query.py`` compare the two."""

PATTERN_COLUMNS = (
    "signature", "category", "tool", "target", "side_effect", "occurrence_count", "session_count",
    "count_1h", "count_24h", "count_7d", "count_30d", "windows_as_of", "first_seen", "last_seen",
    "confidence_score", "status", "tokens_total", "avg_output_tokens", "success_rate", "ok_count",
    "failed_count", "avg_duration_ms", "samples", "confidence_breakdown", "signature_version",
    "side_effects", "side_effect_share",
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
    (sig, category, tool, target, effects, occurrences, sessions, c1h, c24h, c7d, c30d, as_of, first, last,
     tokens_total, tn, tsum, tsq, tlo, thi, dn, dsum, dsq, dlo, dhi, ok, failed, samples, version) = agg
    tokens, duration = _welford(tn, tsum, tsq, tlo, thi), _welford(dn, dsum, dsq, dlo, dhi, scale=1000)
    effects = effect_counts(effects or {})  # {class: occurrences}: each command keeps its own class
    effect, share = dominant_effect(effects)
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
        "side_effects": orjson.dumps(effects).decode(), "side_effect_share": share,
    }


def window_bounds(watermark: datetime) -> list[tuple[datetime, datetime]]:
    """Per window (1 h, 24 h, 7 d, 30 d): the boundary B = watermark - window (an occurrence counts
    when ts > B) and the UTC hour holding B (buckets after it count whole; inside it, occurrences are
    counted one by one)."""
    out = []
    for width in WINDOWS.values():
        if width % timedelta(hours=1):
            raise ValueError("window counts from hourly buckets need whole-hour windows")
        b = (watermark - width).astimezone(UTC)
        out.append((b, b.replace(minute=0, second=0, microsecond=0)))
    return out


def window_counts(con: duckdb.DuckDBPyConnection, watermark: datetime | None, only: str = ""
                  ) -> dict[str, list[int]]:
    """count(ts > watermark - window) per signature and window, exactly: the ``pattern_hours`` buckets
    after the boundary hour, plus the occurrences inside the boundary hour with ts > boundary (a
    one-hour ``ts`` range, which row-group min/max statistics prune). ``only`` restricts the
    signatures (an SQL condition on ``signature``)."""
    out: dict[str, list[int]] = {}
    if watermark is None:
        return out
    bounds = window_bounds(watermark)
    hours = [hb.replace(tzinfo=None) for _, hb in bounds]  # pattern_hours.hour is a UTC TIMESTAMP
    sums = ", ".join("coalesce(sum(n) FILTER (WHERE hour > ?), 0)" for _ in bounds)
    for sig, *counts in con.execute(
            f"SELECT signature, {sums} FROM pattern_hours WHERE hour > ? {only} GROUP BY signature",
            [*hours, min(hours)]).fetchall():
        out[sig] = [int(c) for c in counts]
    part = " UNION ALL ".join(f"SELECT signature, {i} AS k FROM pattern_occurrences WHERE ts > ? AND ts < ? {only}"
                              for i in range(len(bounds)))
    params = [v for b, hb in bounds for v in (b, hb + timedelta(hours=1))]
    for sig, k, n in con.execute(f"SELECT signature, k, count(*) FROM ({part}) GROUP BY ALL", params).fetchall():
        out.setdefault(sig, [0] * len(bounds))[k] += int(n)
    return out


def pattern_aggregates(con: duckdb.DuckDBPyConnection, signatures: set[str] | None) -> list[tuple[Any, ...]]:
    """The AGGREGATE tuples of ``signatures`` (None: all), from the incremental state."""
    only = "" if signatures is None else "AND signature IN (SELECT s FROM pat_sigs)"
    if signatures is not None:
        con.register("pat_sigs", pa.table({"s": pa.array(sorted(signatures), type=pa.string())}))
    try:
        watermark = con.execute("SELECT max(last_seen) FROM pattern_state").fetchall()[0][0]
        state = con.execute(
            "SELECT signature, category, tool, target, NULL, n, sessions, first_seen, "
            "last_seen, tokens_sum, tokens_n, tokens_sum, tokens_sq, tokens_min, tokens_max, duration_n, "
            "duration_sum, duration_sq, duration_min, duration_max, ok, failed, version_min "
            f"FROM pattern_state WHERE true {only}").fetchall()
        windows = window_counts(con, watermark, only)
        samples = dict(con.execute(
            "SELECT signature, list(sample ORDER BY first_at, sample)[1:5] FROM pattern_samples "
            f"WHERE true {only} GROUP BY signature").fetchall())
        effects: dict[str, dict[str, int]] = defaultdict(dict)
        for sig, effect, n in con.execute(f"SELECT signature, side_effect, n FROM pattern_effects WHERE true {only}"
                                          ).fetchall():
            effects[sig][effect] = int(n)
    finally:
        if signatures is not None:
            _unregister(con, "pat_sigs")
    zero = [0] * len(WINDOWS)
    return [(*s[:4], effects.get(s[0], {}), *s[5:7], *windows.get(s[0], zero), watermark, *s[7:22],
             samples.get(s[0]), s[22]) for s in state]


def refresh_patterns(con: duckdb.DuckDBPyConnection, signatures: set[str] | None,
                     weights: ConfidenceWeights | None = None, rules: StatusRules | None = None) -> int:
    """Recompute ``operation_patterns`` for ``signatures`` (None: all) from the incremental state.
    Returns rows written."""
    weights, rules = weights or ConfidenceWeights(), rules or StatusRules()
    if signatures is None:
        con.execute("DELETE FROM operation_patterns")
    else:
        if not signatures:
            return 0
        con.register("pat_sigs", pa.table({"s": pa.array(sorted(signatures), type=pa.string())}))
        try:
            con.execute("DELETE FROM operation_patterns WHERE signature IN (SELECT s FROM pat_sigs)")
        finally:
            _unregister(con, "pat_sigs")
    rows = [pattern_row(a, weights, rules) for a in pattern_aggregates(con, signatures)]
    if rows:
        table = pa.Table.from_pylist(rows)
        con.register("pat_rows", table)
        try:
            cols = ", ".join(PATTERN_COLUMNS)
            con.execute(f"INSERT INTO operation_patterns ({cols}) SELECT {cols} FROM pat_rows")
        finally:
            _unregister(con, "pat_rows")
    return len(rows)


SEQUENCE_CHUNK = 20_000  # occurrences turned into Python objects at a time, and n-gram rows per insert


def refresh_sequences(con: duckdb.DuckDBPyConnection, sessions: set[str],
                      config: SequenceConfig | None = None) -> int:
    """Mine the n-grams of ``sessions`` again. Their occurrences are read within the sessions' time
    span (``pattern_session_spans``), a ``ts`` range that row-group statistics prune, not the table.

    Memory stays bounded whatever the number of dirty sessions: the occurrences come back as one
    Arrow table (~100 bytes a row instead of ~450 as Python tuples) and are walked SEQUENCE_CHUNK
    rows at a time; the n-grams go in every SEQUENCE_CHUNK rows. Same rows as mining them at once:
    sessions come in order, and a session's miner carries over a chunk boundary."""
    if not sessions:
        return 0
    config = config or SequenceConfig()
    con.register("pat_sessions", pa.table({"s": pa.array(sorted(sessions), type=pa.string())}))
    try:
        con.execute("DELETE FROM session_sequences WHERE session_id IN (SELECT s FROM pat_sessions)")
        span = con.execute("SELECT min(first_ts), max(last_ts) FROM pattern_session_spans "
                           "WHERE session_id IN (SELECT s FROM pat_sessions)").fetchall()[0]
        occ = None if span[0] is None else con.sql(
            "SELECT session_id, tool_use_id, signature, ts, status FROM pattern_occurrences "
            "WHERE ts >= ? AND ts <= ? AND session_id IN (SELECT s FROM pat_sessions) "
            "ORDER BY session_id, ts, tool_use_id", params=[span[0], span[1]]).to_arrow_table()
    finally:
        _unregister(con, "pat_sessions")
    out: list[dict[str, Any]] = []
    written = 0
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

    def insert() -> int:
        if not out:
            return 0
        con.register("pat_seq", pa.Table.from_pylist(out))
        try:
            con.execute("INSERT INTO session_sequences SELECT session_id, level, ngram, n, occurrences, "
                        "first_seen, last_seen FROM pat_seq")
        finally:
            _unregister(con, "pat_seq")
        n = len(out)
        out.clear()
        return n

    for start in range(0, 0 if occ is None else occ.num_rows, SEQUENCE_CHUNK):
        part = occ.slice(start, SEQUENCE_CHUNK)  # type: ignore[union-attr]
        columns = [_utc_list(part.column(i)) if i == 3 else part.column(i).to_pylist() for i in range(5)]
        for session, tid, sig, ts, status in zip(*columns, strict=True):
            if session != current:
                flush(current)
                current, miner = session, SequenceMiner(config)
            miner.add(session, tid, sig, ts, success=None if status == "started" else status == "ok")
        if len(out) >= SEQUENCE_CHUNK:
            written += insert()
    flush(current)
    return written + insert()


_STALE = "tool_name IS NOT NULL AND (signature_version IS NULL OR signature_version <> ?)"


def stale_signature_ids(con: duckdb.DuckDBPyConnection, limit: int) -> list[str]:
    """Up to ``limit`` tool calls whose signature was computed by an older rule version (or never):
    recompute them."""
    rows = con.execute(f"SELECT id FROM tool_calls WHERE {_STALE} LIMIT ?", [SIGNATURE_VERSION, limit]).fetchall()
    return [r[0] for r in rows]


def stale_signature_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute(f"SELECT count(*) FROM tool_calls WHERE {_STALE}", [SIGNATURE_VERSION]).fetchall()[0][0])


def materialize(con: duckdb.DuckDBPyConnection, tool_call_ids: Iterable[str], call_keys: Iterable[str],
                fresh: pa.Table | None = None) -> None:
    """Rewrite the occurrences a written batch implies, update the state tables, and mark the changed
    signatures and sessions dirty, in the batch's transaction (so a crash never loses what a refresh
    still owes).

    A ``syn:<call_key>`` row (a hook call without tool_use_id) is merged into the real row carrying
    its call key and deleted by the upsert of the batch that brings either of them; its id is known
    from the batch's call keys (``syn:`` + key), so its occurrence is dropped by key. When the real
    row came in an earlier batch, it changed without being in this one: it is looked up by call key,
    only for the syn rows of this batch that are gone (a stored syn row means no real row with its
    key existed, so a merge in a later batch always involves a real row of that batch).

    ``fresh``: the tool calls the batch put in with a plain insert, signature columns included (see
    ``sinks.upsert.apply``). Those without a call key are stored exactly so (no syn row merges into
    them) and skip the read-back (:func:`occurrences_for`)."""
    ids = set(tool_call_ids)
    syn = {f"syn:{k}" for k in call_keys} - ids
    if not ids and not syn:
        return
    written_syn = {i for i in ids if i.startswith("syn:")}
    merged = written_syn - {r[0] for r in _keyed(con, "SELECT id FROM tool_calls WHERE id IN ({keys})", written_syn,
                                                  "tool_calls")}
    if merged:  # the real rows those syn rows were merged into changed too
        keys = {m[4:] for m in merged}
        ids |= {r[0] for r in _keyed(
            con, "SELECT id FROM tool_calls WHERE id NOT LIKE 'syn:%' AND call_key IN ({keys})", keys, "tool_calls")}
    untouched = None
    if fresh is not None:
        untouched = _fresh_calls(fresh.filter(pc.is_null(fresh.column("call_key"))))
    signatures, sessions = occurrences_for(con, ids, syn, untouched)
    dirty = [("signature", s) for s in sorted(signatures)] + [("session", s) for s in sorted(sessions)]
    if dirty:
        con.register("pat_dirty", pa.table({"kind": [k for k, _ in dirty], "key": [v for _, v in dirty]}))
        try:
            con.execute("INSERT INTO pattern_dirty SELECT kind, key FROM pat_dirty ON CONFLICT DO NOTHING")
        finally:
            _unregister(con, "pat_dirty")


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
