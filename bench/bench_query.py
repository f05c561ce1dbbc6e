"""Query: the pattern queries and the sink's per-batch cost over 10 million tool calls, each beside
a reference measured in the same run.

The database is bulk-generated with Arrow into a file made by the project's own migrations up to
version 3 (the layout before incremental patterns): ``tool_calls`` (Bash calls over 10,000 sessions
and 5,000 distinct commands, Zipf-like frequencies) and ``pattern_occurrences`` filled consistently
(the signature, category, side effect and redacted sample of each command come from the project's
``signature_of`` / ``redact``); then migration 4 re-keys the occurrences and backfills the
incremental state (timed). Measured:

* the full refresh the sink runs at every flush marker and every minute (``refresh_patterns(None)``:
  state + hourly buckets + confidence + rewrite), its read part alone (``pattern_aggregates``), and
  the incremental refresh of 10 dirty signatures (the rarest, the most frequent);
* the from-scratch aggregate the refresh used to run (``sinks.patterns.AGGREGATE``, all signatures),
  for comparison;
* ``outloop patterns`` (``outloop.cli.PATTERNS_SQL``) and a GROUP BY signature over ``tool_calls``;
* the sink: 5,000 new tool calls through ``DuckSink.write_batch`` right after open (runs the full
  refresh), 5,000 more new calls as "started" views, then the same 5,000 completed (a rewrite of
  every occurrence: the delta path) - into this database beside the same writes into an empty one.

Reference for the queries: ``SELECT signature, count(*) FROM pattern_occurrences GROUP BY signature``.

    .venv/bin/python bench/bench_query.py [--quick] [--rows N] [--runs 5] [--keep FILE]
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb  # noqa: E402
import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from common import T0, commands, header, median, row  # noqa: E402

from outloop.agents.signatures import redact, signature_of  # noqa: E402
from outloop.projections.patterns import AGGREGATE, pattern_aggregates, refresh_patterns  # noqa: E402
from outloop.sinks.schema import migrate  # noqa: E402

SESSIONS, SIGNATURES, CHUNK = 10_000, 5_000, 1_000_000
TS = pa.timestamp("us", tz="UTC")
CUM_WEIGHTS = list(itertools.accumulate(1.0 / r for r in range(1, SIGNATURES + 1)))


def dictionaries() -> dict[str, pa.Array]:
    cmds = commands(SIGNATURES)
    sigs = [signature_of("Bash", {"command": c}) for c in cmds]
    return {
        "command": pa.array(cmds), "sample": pa.array([redact(c)[:500] for c in cmds]),
        "tool_input": pa.array([orjson.dumps({"command": c, "description": "run it"},
                                             option=orjson.OPT_SORT_KEYS).decode() for c in cmds]),
        "signature": pa.array([s.signature for s in sigs]), "category": pa.array([s.category for s in sigs]),
        "tool": pa.array([s.tool for s in sigs]), "target": pa.array([s.target for s in sigs]),
        "side_effect": pa.array([s.side_effect for s in sigs]),
        "session": pa.array([f"sess-{i:05d}" for i in range(SESSIONS)]),
    }


def _hash(idx: pa.Array, salt: int, mod: int) -> pa.Array:
    """A cheap deterministic pseudo-random integer in [0, mod) per index (Knuth multiplicative)."""
    mixed = pc.bit_wise_and(pc.multiply(pc.add(idx, salt), 2654435761), 0x7FFFFFFF)
    return pc.cast(pc.divide(pc.multiply(mixed, mod), 0x80000000), pa.int64())


def chunk(start: int, n: int, d: dict[str, pa.Array], rng: random.Random) -> tuple[pa.Table, pa.Table]:
    idx = pa.array(range(start, start + n), type=pa.int64())
    cmd = pa.array(rng.choices(range(SIGNATURES), cum_weights=CUM_WEIGHTS, k=n))  # Zipf-like
    session = pa.array(rng.choices(range(SESSIONS), k=n))
    ids = pc.binary_join_element_wise("toolu_", pc.cast(idx, pa.string()), "")
    started_us = pc.add(pc.multiply(idx, 500_000), int(T0.timestamp() * 1e6))  # a call every 0.5 s
    duration_us = pc.add(pc.multiply(_hash(idx, 1, 4000), 1000), _hash(idx, 2, 1000))
    duration = pc.divide(pc.cast(duration_us, pa.float64()), 1000.0)
    out_bytes = _hash(idx, 3, 20_000)
    tokens = pc.divide(pc.add(out_bytes, 3), 4)
    status = pc.if_else(pc.equal(_hash(idx, 4, 20), 0), "error", "ok")
    started = pc.cast(started_us, TS)
    ended = pc.cast(pc.add(started_us, duration_us), TS)
    take = {k: pc.take(d[k], cmd) for k in ("command", "tool_input", "signature", "category", "tool", "target",
                                            "side_effect", "sample")}
    sessions = pc.take(d["session"], session)
    null_s = pa.nulls(n, pa.string())
    version = pa.array([1] * n, type=pa.int32())
    calls = pa.table({
        "id": ids, "tool_use_id": ids, "call_key": null_s, "session_id": sessions,
        "tool_name": pa.array(["Bash"] * n), "command": take["command"], "file_path": null_s, "status": status,
        "started_at": started, "ended_at": ended, "duration_ms": duration,
        "input_bytes": pa.array([60] * n, type=pa.int64()), "output_bytes": out_bytes,
        "output_tokens_est": tokens, "source": pa.array(["hook"] * n), "tool_input": take["tool_input"],
        "signature": take["signature"], "category": take["category"], "side_effect": take["side_effect"],
        "signature_version": version,
    })
    occ = pa.table({
        "signature": take["signature"], "tool_use_id": ids, "session_id": sessions, "ts": started,
        "category": take["category"], "tool": take["tool"], "target": take["target"],
        "side_effect": take["side_effect"], "status": status, "output_tokens": tokens,
        "duration_ms": duration, "sample": take["sample"], "signature_version": version,
    })
    return calls, occ


def generate(path: Path, rows: int) -> tuple[float, float]:
    """Fill a version-3 database, then migrate it (re-key + backfill). Returns (fill s, migration s)."""
    t0 = time.perf_counter()
    con = duckdb.connect(str(path))
    try:
        migrate(con, upto=3)
        d, rng = dictionaries(), random.Random(7)
        for start in range(0, rows, CHUNK):
            calls, occ = chunk(start, min(CHUNK, rows - start), d, rng)
            for table, data in (("tool_calls", calls), ("pattern_occurrences", occ)):
                con.register("gen", data)
                cols = ", ".join(f'"{c}"' for c in data.column_names)
                con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM gen")
                con.unregister("gen")
        con.execute("CHECKPOINT")
        filled = time.perf_counter()
        migrate(con)
        con.execute("CHECKPOINT")
        migrated = time.perf_counter()
        con.execute("BEGIN TRANSACTION")
        refresh_patterns(con, None)
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return filled - t0, migrated - filled


def timed(fn: Callable[[], object], runs: int, warm: bool = True) -> list[float]:
    if warm:
        fn()  # the first read of a fresh connection loads the blocks
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def call_value(i: int, cmds: list[str], done: bool) -> bytes:
    """Tool call ``i`` as the sessions agent emits it: "started" (PreToolUse only) or completed."""
    from outloop.schemas.events import ToolCall

    t = T0 + timedelta(seconds=i)
    cmd = cmds[i % len(cmds)]
    extra = dict(status="ok", ended_at=t + timedelta(milliseconds=850), duration_ms=850.0, output_bytes=540,
                 output_tokens_est=135) if done else dict(status="started")
    return ToolCall(id=f"toolu_{i:09d}", tool_use_id=f"toolu_{i:09d}", call_key=None, session_id=f"sess-{i % 1000:04d}",
                    tool_name="Bash", tool_input={"command": cmd, "description": "run it"}, command=cmd,
                    started_at=t, input_bytes=60, source="hook", **extra).model_dump_json().encode()


def sink_write(path: Path, start: int) -> tuple[float, float, float]:
    """Three batches of 5,000 tool calls on a freshly opened sink: new completed calls (the first
    batch after open also runs the full pattern refresh, as after every worker start); new calls as
    "started" views; the same calls completed (every occurrence rewritten). The last two run the
    per-second incremental refresh when it is due (REFRESH_S)."""
    from outloop.projections import open_sink

    cmds = commands(500)
    plan = [(start, True), (start + 5000, False), (start + 5000, True)]
    out = []
    sink = open_sink(path)
    try:
        for b, (first, done) in enumerate(plan):
            msgs = [("bench.tool-calls", 0, b * 5000 + i, b"k", call_value(first + i, cmds, done))
                    for i in range(5000)]
            t0 = time.perf_counter()
            sink.write_batch(msgs)
            out.append(time.perf_counter() - t0)
    finally:
        sink.close()
    return out[0], out[1], out[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000,000 tool calls instead of 10,000,000")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="generate into (or reuse) this database file")
    args = ap.parse_args()
    n = args.rows or (1_000_000 if args.quick else 10_000_000)
    header(f"pattern queries over {n:,} tool calls ({SIGNATURES:,} signatures, {SESSIONS:,} sessions), "
           f"{args.runs} runs each",
           "reference: SELECT signature, count(*) FROM pattern_occurrences GROUP BY signature")
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        path = args.keep or Path(tmp) / "q.duckdb"
        if not path.exists():
            filled, migrated = generate(path, n)
            print(f"  generated the database in {filled:.1f}s ({path.stat().st_size / 2**30:.2f} GiB); "
                  f"migration 4 (re-key occurrences, backfill the state) {migrated:.1f}s = "
                  f"{migrated / filled:.2f}x the bulk fill")
        con = duckdb.connect(str(path))
        try:
            got = con.execute("SELECT (SELECT count(*) FROM tool_calls), (SELECT count(*) FROM pattern_occurrences), "
                              "(SELECT count(*) FROM operation_patterns), (SELECT count(*) FROM pattern_hours), "
                              "(SELECT count(*) FROM pattern_sessions)").fetchone()
            print(f"  rows: tool_calls={got[0]:,} pattern_occurrences={got[1]:,} operation_patterns={got[2]:,} "
                  f"pattern_hours={got[3]:,} pattern_sessions={got[4]:,}")
            from outloop.cli import PATTERNS_SQL

            def ten(order: str) -> set[str]:
                return {r[0] for r in con.execute(f"SELECT signature FROM operation_patterns ORDER BY {order} "
                                                  "LIMIT 10").fetchall()}

            cold, hot = ten("occurrence_count, signature"), ten("occurrence_count DESC, signature")

            def refresh(signatures: set[str] | None) -> Callable[[], None]:
                def run() -> None:
                    con.execute("BEGIN TRANSACTION")
                    refresh_patterns(con, signatures)
                    con.execute("ROLLBACK")
                return run

            queries: dict[str, tuple[Callable[[], object], int]] = {
                "full refresh: refresh_patterns(all)": (refresh(None), args.runs),
                "pattern_aggregates(all) (its reads)": (lambda: pattern_aggregates(con, None), args.runs),
                "incremental refresh, 10 rarest dirty": (refresh(cold), args.runs),
                "incremental refresh, 10 most frequent dirty": (refresh(hot), args.runs),
                "outloop patterns (PATTERNS_SQL, top 20)": (lambda: con.execute(
                    PATTERNS_SQL, [None, None, 20]).fetchall(), args.runs),
                "GROUP BY signature over tool_calls": (lambda: con.execute(
                    "SELECT signature, count(*), count(DISTINCT session_id), sum(output_tokens_est), "
                    "avg(duration_ms) FROM tool_calls GROUP BY signature ORDER BY 2 DESC").fetchall(), args.runs),
                "from-scratch AGGREGATE (the old full refresh)": (lambda: con.execute(
                    AGGREGATE.format(where="true")).fetchall(), min(args.runs, 3)),
            }
            ref_sql = "SELECT signature, count(*) FROM pattern_occurrences GROUP BY signature"
            ref = lambda: con.execute(ref_sql).fetchall()  # noqa: E731
            medians = {}
            for name, (fn, runs_n) in queries.items():
                fn()  # warm: the first read of a fresh connection loads the blocks
                refs, runs = [], []
                for _ in range(runs_n):  # interleaved: query, reference, query, ...
                    runs += timed(fn, 1, warm=False)
                    refs += timed(ref, 1, warm=False)
                row(name, runs, "reference GROUP BY", refs, "s", higher_is_better=False,
                    target=f"< 1 s: {'met' if median(runs) < 1 else 'NOT met'}")
                medians[name] = runs
            row("full refresh vs the old from-scratch AGGREGATE", medians["full refresh: refresh_patterns(all)"],
                "AGGREGATE", medians["from-scratch AGGREGATE (the old full refresh)"], "s", higher_is_better=False)
            start = 20_000_000 + int(con.execute("SELECT count(*) FROM tool_calls").fetchone()[0])
        finally:
            con.close()
        empty = Path(tmp) / "empty.duckdb"
        big, small = [], []
        for run in range(3):  # new ids every run (and every invocation on a kept file): no redelivery
            small.append(sink_write(empty, start + run * 10_000))
            big.append(sink_write(path, start + run * 10_000))
        names = ("write_batch: 5,000 new calls + full refresh", "write_batch: 5,000 new calls, started",
                 "write_batch: the same 5,000 completed")
        for i, name in enumerate(names):
            row(name, [b[i] for b in big], "into an empty db", [s[i] for s in small], "s", higher_is_better=False)


if __name__ == "__main__":
    main()
