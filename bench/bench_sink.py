"""Sink: rows/s of ``sinks.writer.DuckSink.write_batch`` beside a bare Arrow bulk insert of the same
rows at the same batch size, for tool calls, usage and hook events separately.

The input is what the agents put on the output topics (records serialised by the project's own
pydantic models). The reference inserts the very rows the sink stores (the Arrow staging tables of
the sink's own decoder, built before the clock starts) with one plain ``INSERT ... SELECT`` per
batch into a table of the same schema, one transaction per batch: the physical limit of DuckDB here.
The writer is measured twice: as it runs (pattern materialization on) and with pattern
materialization switched off (a ``DuckSink`` without projections), which shows
the decode + fold + upsert part alone. A cProfile of the writer on the same input then shows where
the time goes.

``--filled N`` (default 1,000,000; 200,000 with ``--quick``; 0 skips) measures both again into a
database that already holds N rows of the kind (copies of the staged rows under other ids, put in by
SQL before the clock starts; for tool calls with current signatures, but no pattern occurrences):
what a user who imported months of history writes into. Key checks grow with the table; the
reference's plain insert checks its primary key in the index.

    .venv/bin/python bench/bench_sink.py [--quick] [--rows N] [--batch 5000] [--runs 3] [--filled N]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
from common import T0, commands, header, row  # noqa: E402

from outloop.agents.signatures import SIGNATURE_VERSION, signature_of  # noqa: E402
from outloop.projections import open_sink  # noqa: E402
from outloop.schemas.events import Envelope, EventType, ToolCall, UsageRecord  # noqa: E402
from outloop.sinks.decode import SCHEMAS, fold  # noqa: E402
from outloop.sinks.schema import migrate  # noqa: E402
from outloop.sinks.writer import DuckSink  # noqa: E402

KINDS = {"tool_calls": "tool-calls", "usage": "usage", "hook_events": "hook-events"}


def value(kind: str, i: int, cmds: list[str]) -> bytes:
    t = T0 + timedelta(seconds=i)
    session = f"sess-{i % 1000:04d}"
    if kind == "tool_calls":
        cmd = cmds[i % len(cmds)]
        return ToolCall(id=f"toolu_{i:09d}", tool_use_id=f"toolu_{i:09d}", call_key=None, session_id=session,
                        tool_name="Bash", tool_input={"command": cmd, "description": "run it"}, command=cmd,
                        status="ok", started_at=t, ended_at=t + timedelta(milliseconds=850),
                        duration_ms=850.0, input_bytes=60, output_bytes=540, output_tokens_est=135,
                        source="hook").model_dump_json().encode()
    if kind == "usage":
        return UsageRecord(id=f"msg_{i:09d}:req_{i:09d}", session_id=session, model="claude-sonnet-4-5-20250929",
                           timestamp=t, input_tokens=12, output_tokens=340, cache_read_input_tokens=48_000,
                           cache_creation_input_tokens=1_200, cache_creation_5m_tokens=1_200,
                           cache_creation_1h_tokens=0, cost_usd=0.0213, source="transcript"
                           ).model_dump_json().encode()
    payload = {"session_id": session, "transcript_path": f"/home/u/.claude/projects/demo/{session}.jsonl",
               "cwd": "/home/u/demo", "hook_event_name": "PostToolUse", "tool_name": "Bash",
               "tool_use_id": f"toolu_{i:09d}", "tool_input": {"command": cmds[i % len(cmds)]},
               "tool_response": {"stdout": "." * 500, "stderr": "", "interrupted": False}}
    return Envelope(id=f"ev-{i:09d}", type=EventType.HOOK_EVENT, source="hook", time=t, subject=session,
                    data=payload).model_dump_json().encode()


def batches(kind: str, n: int, size: int) -> list[list[tuple[str, int, int, bytes | None, bytes | None]]]:
    cmds = commands(500)
    topic = f"bench.{KINDS[kind]}"
    msgs = [(topic, i % 4, i // 4, f"sess-{i % 1000:04d}".encode(), value(kind, i, cmds)) for i in range(n)]
    return [msgs[i:i + size] for i in range(0, n, size)]


def run_sink(path: Path, chunks: list, patterns: bool = True) -> float:
    sink = open_sink(path) if patterns else DuckSink(path)  # no projections: storage alone
    try:
        t0 = time.perf_counter()
        for chunk in chunks:
            sink.write_batch(chunk)
        return time.perf_counter() - t0
    finally:
        sink.close()


def run_reference(path: Path, kind: str, tables: list) -> float:
    con = duckdb.connect(str(path))
    try:
        migrate(con)
        cols = ", ".join(f'"{c}"' for c in SCHEMAS[kind].names)
        t0 = time.perf_counter()
        for table in tables:
            con.execute("BEGIN TRANSACTION")
            con.register("stg", table)
            con.execute(f"INSERT INTO {kind} ({cols}) SELECT {cols} FROM stg")
            con.unregister("stg")
            con.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        con.close()


def filled(path: Path, kind: str, template: pa.Table, rows: int) -> Path:
    """A database holding ``rows`` rows of ``kind``: copies of ``template`` under new ids (in SQL)."""
    con = duckdb.connect(str(path))
    try:
        migrate(con)
        cols = ", ".join(f'"{c}"' for c in SCHEMAS[kind].names)
        con.register("tpl", template)
        copies = -(-rows // template.num_rows)
        con.execute(f"INSERT INTO {kind} ({cols}) SELECT tpl.* REPLACE ('old-' || r.i || '-' || id AS id) "
                    f"FROM tpl, range({copies}) r(i) LIMIT {rows}")
        if kind == "tool_calls":  # current signatures: the writer does not recompute them on open
            sigs = {c: signature_of("Bash", {"command": c}) for c in set(template.column("command").to_pylist())}
            con.execute("CREATE TEMP TABLE sig (command VARCHAR, signature VARCHAR)")
            con.executemany("INSERT INTO sig VALUES (?, ?)", [[c, s.signature if s else None] for c, s in sigs.items()])
            con.execute("UPDATE tool_calls SET signature = sig.signature, signature_version = ? FROM sig "
                        "WHERE tool_calls.command = sig.command", [SIGNATURE_VERSION])
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return path


def copy(template: Path, path: Path) -> Path:
    shutil.copyfile(template, path)
    return path


PROFILE_POINTS = [  # (label, file suffix, function)
    ("decode (sinks/decode.fold)", "sinks/decode.py", "fold"),
    ("  fast path: usage (msgspec, time)", "sinks/decode.py", "_fast_usage"),
    ("  fast path: tool calls (msgspec, times, canonical tool_input)", "sinks/decode.py", "_fast_tool_call"),
    ("  fast path: hook events (msgspec, time, payload JSON)", "sinks/decode.py", "_fast_hook"),
    ("  checked path: pydantic model_validate_json", "pydantic/main.py", "model_validate_json"),
    ("  rows into columns (Folded.add)", "sinks/decode.py", "add"),
    ("Arrow staging tables (Folded.arrow)", "sinks/decode.py", "arrow"),
    ("fold of a key's versions in SQL (sinks/upsert.folded)", "sinks/upsert.py", "folded"),
    ("upsert SQL (register + INSERT ON CONFLICT)", "sinks/upsert.py", "_staged"),
    ("patterns: materialize (occurrences)", "projections/patterns.py", "materialize"),
    ("  signature_of (Python)", "agents/signatures.py", "signature_of"),
    ("patterns: refresh (aggregate + sequences)", "projections/patterns.py", "refresh"),
    ("  refresh_patterns", "projections/patterns.py", "refresh_patterns"),
    ("  refresh_sequences", "projections/patterns.py", "refresh_sequences"),
]


def profile(path: Path, chunks: list, patterns: bool = True) -> None:
    prof = cProfile.Profile()
    sink = open_sink(path) if patterns else DuckSink(path)  # no projections: storage alone
    try:
        prof.enable()
        for chunk in chunks:
            sink.write_batch(chunk)
        prof.disable()
    finally:
        sink.close()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    cum: dict[tuple[str, str], float] = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items():
        cum[(file, func)] = cum.get((file, func), 0.0) + ct
    total = sum(ct for (f, fn), ct in cum.items() if f.endswith("sinks/writer.py") and fn == "write_batch")
    if not patterns:
        total = sum(ct for (f, fn), ct in cum.items() if f.endswith("sinks/writer.py") and fn == "_write"
                    and ct > 0) or total
    top = 0.0
    for label, suffix, func in PROFILE_POINTS:
        secs = sum(ct for (f, fn), ct in cum.items() if fn == func and f.endswith(suffix))
        if not label.startswith(" "):
            top += secs
        if secs:
            print(f"      {100 * secs / total:5.1f}%  {label}")
    print(f"      {100 * (total - top) / total:5.1f}%  rest: BEGIN/COMMIT, offsets, locks (DuckDB's C++ calls are "
          "invisible to cProfile; they show inside the stages that make them)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 rows per kind instead of 100,000")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--batch", type=int, default=5000, help="records per write_batch (OUTLOOP_SINK_BATCH)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the cProfile breakdown")
    ap.add_argument("--filled", type=int, help="rows already in the database for the second measure (0: skip)")
    args = ap.parse_args()
    n = args.rows or (20_000 if args.quick else 100_000)
    fill = args.filled if args.filled is not None else (200_000 if args.quick else 1_000_000)
    header(f"DuckDB sink: {n:,} rows per kind, batches of {args.batch:,}, {args.runs} runs",
           "reference: bare Arrow INSERT of the same rows (pre-built), same batch size, one transaction each")
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        for kind in KINDS:
            chunks = batches(kind, n, args.batch)
            tables = [fold(c, now).arrow(kind) for c in chunks]
            sink_rates, bare_rates, ref_rates = [], [], []
            for run in range(args.runs):  # interleaved, so that the three share the machine's load
                ref_rates.append(n / run_reference(Path(tmp) / f"{kind}-ref{run}.duckdb", kind, tables))
                sink_rates.append(n / run_sink(Path(tmp) / f"{kind}-sink{run}.duckdb", chunks))
                bare_rates.append(n / run_sink(Path(tmp) / f"{kind}-bare{run}.duckdb", chunks, patterns=False))
            print(f"  {kind}:")
            row(f"DuckSink.write_batch ({kind})", sink_rates, "bare Arrow insert", ref_rates, "rows/s",
                target=">= 0.7x")
            row("  same, pattern materialization off", bare_rates, "bare Arrow insert", ref_rates, "rows/s",
                target=">= 0.7x")
            if fill:
                tpl = filled(Path(tmp) / f"{kind}-filled.duckdb", kind, tables[0], fill)
                sink_rates, bare_rates, ref_rates = [], [], []
                for _ in range(args.runs):
                    ref_rates.append(n / run_reference(copy(tpl, Path(tmp) / f"{kind}-fref.duckdb"), kind, tables))
                    sink_rates.append(n / run_sink(copy(tpl, Path(tmp) / f"{kind}-fsink.duckdb"), chunks))
                    bare_rates.append(n / run_sink(copy(tpl, Path(tmp) / f"{kind}-fbare.duckdb"), chunks,
                                                   patterns=False))
                row(f"  into a database holding {fill:,} rows", sink_rates, "bare Arrow insert", ref_rates,
                    "rows/s", target=">= 0.7x")
                row("  same, pattern materialization off", bare_rates, "bare Arrow insert", ref_rates, "rows/s",
                    target=">= 0.7x")
            if args.profile:
                for patterns in (True, False):
                    print(f"    where the writer's time goes, patterns {'on' if patterns else 'off'} "
                          "(cProfile, cumulative, % of write_batch):")
                    profile(Path(tmp) / f"{kind}-prof{patterns}.duckdb", chunks, patterns)


if __name__ == "__main__":
    main()
