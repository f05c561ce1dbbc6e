"""The reliability tests' reference: synthetic input envelopes, and what DuckDB must hold for them,
recomputed in memory (no Kafka, no DuckDB) with the same pure cores the agents use:
:class:`agents.pairing.Pairing`, :func:`agents.toolcalls.merge_tool_calls` and the usage rule
(one row per id, the largest totals win). Also the output-topic records the sessions agent would
emit for the inputs, for tests that drive the sink without the agents.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from outloop.agents.pairing import BatchOut, Pairing, tool_call_model, usage_fields
from outloop.agents.pricing import PriceTable
from outloop.agents.toolcalls import merge_tool_calls
from outloop.schemas.events import Envelope, EventType, ToolCall, UsageRecord
from outloop.schemas.ids import call_key
from outloop.sinks.decode import tool_call_row
from outloop.streams.codec import Decoded, dead_letter, decode, encode
from outloop.streams.redact import redact_canonical

Input = tuple[bytes, bytes]  # key, value on the events topic
Message = tuple[str, int, int, bytes | None, bytes | None]  # topic, partition, offset, key, value
T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
COMMANDS = ["pytest -q tests/unit", "npm run build", "git status --short", "ls -la src", "ruff check .",
            "pytest -q tests/integration -x", "cargo test", "make lint"]
MODELS = ["claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001"]
DERIVED = ("signature", "category", "side_effect", "signature_version")  # set by sinks.patterns


def envelope(id: str, type: EventType, subject: str, data: dict[str, Any], at: datetime | None,
         source: str) -> Input:
    env = Envelope(id=id, type=type, source=source, time=at, subject=subject, data=data)
    return subject.encode(), env.model_dump_json().encode()


def session_inputs(rng: random.Random, session: str, calls: int, start: datetime = T0) -> list[Input]:
    """One session's events in time order: hook Pre/Post pairs (with tool_use_id, or an old-version
    call_key joined to a transcript tool_use), transcript blocks, growing usage records, a few
    ``tool.call`` envelopes and bad records."""
    out: list[Input] = []
    at = start
    for i in range(calls):
        tid = f"toolu_{session}_{i:04d}"
        cmd = rng.choice(COMMANDS)
        reads = rng.random() < 0.3
        tool, tinput = ("Read", {"file_path": f"/w/src/m{rng.randrange(9)}.py"}) if reads else (
            "Bash", {"command": cmd, "description": "run it"})
        base = {"session_id": session, "transcript_path": f"/home/u/.claude/projects/w/{session}.jsonl",
                "cwd": "/w", "permission_mode": "default", "tool_name": tool, "tool_input": tinput}
        old = rng.random() < 0.15  # an old Claude Code: no tool_use_id, importer call_key
        ids = {"call_key": call_key(session, tool, tinput, i, redact_canonical)} if old else {"tool_use_id": tid}
        took = timedelta(milliseconds=rng.randrange(5, 40_000))
        failed = rng.random() < 0.1
        text = "\n".join(f"line {n} of {cmd}" for n in range(rng.randrange(1, 40)))
        response = ({"type": "text", "file": {"filePath": tinput.get("file_path"), "content": text}} if reads
                    else {"stdout": text, "stderr": "boom" if failed else "", "interrupted": False})
        out.append(envelope(f"hk:{tid}:pre", EventType.HOOK_EVENT, session,
                        {**base, **ids, "hook_event_name": "PreToolUse"}, at, "hook"))
        post = "PostToolUseFailure" if failed else "PostToolUse"
        extra = {"error": "exit 1"} if failed else {"tool_response": response}
        out.append(envelope(f"hk:{tid}:post", EventType.HOOK_EVENT, session,
                        {**base, **ids, "hook_event_name": post, **extra}, at + took, "hook"))
        if old or rng.random() < 0.4:  # the transcript saw it too
            out.append(envelope(f"tu:{tid}", EventType.TOOL_USE, session, {
                "session_id": session, "tool_use_id": tid, "tool_name": tool, "tool_input": tinput,
                "call_key": call_key(session, tool, tinput, i, redact_canonical),
                "timestamp": at.isoformat()}, at, "transcript"))
            out.append(envelope(f"tr:{tid}", EventType.TOOL_RESULT, session, {
                "session_id": session, "tool_use_id": tid, "is_error": failed, "output_text": text,
                "timestamp": (at + took).isoformat()}, at + took, "transcript"))
        model = rng.choice(MODELS)
        tokens = {"input_tokens": rng.randrange(1, 50), "cache_read_input_tokens": rng.randrange(0, 90_000),
                  "cache_creation_input_tokens": rng.randrange(0, 4000)}
        for k in range(rng.randrange(1, 4)):  # one response written as records with growing output
            out.append(envelope(f"us:{session}:{i}:{k}", EventType.USAGE, session, {
                "id": f"msg_{session}_{i}:req_{i}", "session_id": session, "model": model,
                "timestamp": at.isoformat(), "output_tokens": 10 + 40 * k + rng.randrange(5), **tokens},
                at, "transcript"))
        if rng.random() < 0.05:
            out.append(envelope(f"tc:{tid}", EventType.TOOL_CALL, session, {
                "id": f"syn:{session}:traj:{i}", "tool_use_id": None, "call_key": f"{session}:traj:{i}",
                "session_id": session, "tool_name": "Bash", "tool_input": {"command": cmd},
                "command": cmd, "status": "ok", "started_at": at.isoformat(), "source": "trajectory"},
                at, "trajectory"))
        if rng.random() < 0.02:
            out.append((session.encode(), rng.choice([b"{not json", b"[1, 2]",
                                                      b'{"type": "mystery", "id": "x%d"}' % i])))
        at += took + timedelta(seconds=rng.randrange(1, 30))
    return out


def interleave(rng: random.Random, per_session: list[list[Input]]) -> list[Input]:
    """Sessions mixed at random, each session's own order kept."""
    queues = [list(reversed(s)) for s in per_session if s]
    out: list[Input] = []
    while queues:
        q = rng.choice(queues)
        out.append(q.pop())
        if not q:
            queues.remove(q)
    return out


def synthetic(seed: int, sessions: int, calls: int, tag: str = "s") -> list[Input]:
    rng = random.Random(seed)
    per = [session_inputs(rng, f"{tag}{seed}x{n:03d}", calls, T0 + timedelta(hours=n)) for n in range(sessions)]
    return interleave(rng, per)


@dataclass
class Expected:
    tool_calls: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> stored row
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    hook_events: dict[str, str] = field(default_factory=dict)  # id -> session
    dead_letters: dict[str, str] = field(default_factory=dict)  # id -> reason

    def aggregates(self) -> dict[str, Any]:
        return aggregates_of(self.tool_calls.values(), self.usage.values(), self.hook_events.values())


def _usage_rank(row: dict[str, Any]) -> tuple[Any, ...]:
    total = sum(row[k] for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                 "cache_creation_input_tokens"))
    own = tuple((1, 0) if row[c] is None else (0, row[c])  # then the row's own columns: None above every value
                for c in UsageRecord.model_fields if c != "id")
    return total, row["output_tokens"], row["cost_usd"] or 0.0, own


def recompute(inputs: list[Input], topic: str = "events") -> Expected:
    """What the database must hold after ``inputs`` (in this order, any number of times)."""
    pairing = Pairing(price=PriceTable.default().cost_usd)
    views: dict[str, dict[str, Any]] = {}
    exp = Expected()
    for key, value in inputs:
        result = decode(value)
        if not isinstance(result, Decoded):
            exp.dead_letters[dead_letter(value, result, topic, 0, 0, key).id] = result.reason
            continue
        out = BatchOut()
        pairing.apply(result.envelope, result.data, out)
        for env in out.hook_events:
            exp.hook_events[env.id] = env.data.get("session_id") or env.subject
        for view in out.tool_calls.values():
            full = dict(tool_call_model(view).__dict__)
            views[full["id"]] = merge_tool_calls(views[full["id"]], full) if full["id"] in views else full
        for u in out.usage.values():
            row = usage_fields(u)
            if u.id not in exp.usage or _usage_rank(row) > _usage_rank(exp.usage[u.id]):
                exp.usage[u.id] = row
    real = {v["call_key"]: i for i, v in views.items() if not i.startswith("syn:") and v["call_key"]}
    for syn in [i for i in views if i.startswith("syn:")]:  # a syn row joins the real row of its call_key
        if views[syn]["call_key"] in real:
            target = real[views[syn]["call_key"]]
            views[target] = {**merge_tool_calls(views[target], views.pop(syn)), "id": target}
    exp.tool_calls = {i: tool_call_row(v) for i, v in views.items()}
    return exp


def outputs(inputs: list[Input], prefix: str, partitions: int = 2) -> list[Message]:
    """The output-topic records the sessions agent emits for ``inputs``, one input per batch (the
    least folded form), with offsets per partition in emission order."""
    pairing = Pairing(price=PriceTable.default().cost_usd)
    nxt: Counter[tuple[str, int]] = Counter()
    out: list[Message] = []

    def emit(topic: str, key: bytes, value: bytes) -> None:
        tp = (f"{prefix}.{topic}", zlib.crc32(key) % partitions)
        out.append((*tp, nxt[tp], key, value))
        nxt[tp] += 1

    for key, value in inputs:
        result = decode(value)
        if not isinstance(result, Decoded):
            emit("dlq", key, encode(dead_letter(value, result, f"{prefix}.events", 0, 0, key, now=T0)))
            continue
        batch = BatchOut()
        pairing.apply(result.envelope, result.data, batch)
        for env in batch.hook_events:
            emit("hook-events", key, encode(env))
        for view in batch.tool_calls.values():
            emit("tool-calls", key, encode(tool_call_model(view)))
        for u in batch.usage.values():
            emit("usage", key, encode(u))
    return out


def aggregates_of(calls: Any, usage: Any, hooks: Any) -> dict[str, Any]:
    """Per session: tool calls, usage records and the four token sums; hook events."""
    agg: dict[str, Any] = {"calls": Counter(), "usage": {}, "hooks": Counter(hooks)}
    for c in calls:
        agg["calls"][c["session_id"]] += 1
    for u in usage:
        sums = agg["usage"].setdefault(u["session_id"], [0, 0, 0, 0, 0])
        for n, k in enumerate(("input_tokens", "output_tokens", "cache_read_input_tokens",
                               "cache_creation_input_tokens")):
            sums[n] += u[k]
        sums[4] += 1
    return agg


def stored(db: Path | duckdb.DuckDBPyConnection) -> Expected:
    """What the database holds, in the shape of :class:`Expected`."""
    con = duckdb.connect(str(db), read_only=True) if isinstance(db, Path) else db
    try:
        got = Expected()
        cols = [c for c in ToolCall.model_fields if c not in DERIVED]
        for row in con.execute(f"SELECT {', '.join(cols)} FROM tool_calls").fetchall():
            got.tool_calls[row[0]] = dict(zip(cols, row, strict=True))
        ucols = list(UsageRecord.model_fields)
        quoted = ", ".join(f'"{c}"' for c in ucols)
        for row in con.execute(f"SELECT {quoted} FROM usage").fetchall():
            got.usage[row[0]] = dict(zip(ucols, row, strict=True))
        got.hook_events = dict(con.execute("SELECT id, session_id FROM hook_events").fetchall())
        got.dead_letters = dict(con.execute("SELECT id, reason FROM dead_letters").fetchall())
        return got
    finally:
        if isinstance(db, Path):
            con.close()


def differences(got: Expected, want: Expected, limit: int = 3) -> dict[str, Any]:
    """Lost, extra and different rows per table, and differing aggregates; empty when equal."""
    diff: dict[str, Any] = {}
    for name in ("tool_calls", "usage", "hook_events", "dead_letters"):
        g, w = getattr(got, name), getattr(want, name)
        lost, extra = sorted(set(w) - set(g)), sorted(set(g) - set(w))
        changed = sorted(k for k in set(g) & set(w) if g[k] != w[k])
        if lost or extra or changed:
            diff[name] = {"lost": len(lost), "extra": len(extra), "changed": len(changed),
                          "examples": [(k, g.get(k), w.get(k)) for k in (lost + extra + changed)[:limit]]}
    if got.aggregates() != want.aggregates():
        diff["aggregates"] = "differ"
    return diff


def describe(exp: Expected) -> str:
    agg = exp.aggregates()
    tokens = [sum(s[n] for s in agg["usage"].values()) for n in range(4)]
    return (f"{len(exp.hook_events)} hook events, {len(exp.tool_calls)} tool calls, {len(exp.usage)} usage "
            f"rows, {len(exp.dead_letters)} dead letters, {len(agg['calls'])} sessions, tokens {tokens}; "
            f"{orjson.dumps(Counter(r['source'] for r in exp.tool_calls.values())).decode()}")
