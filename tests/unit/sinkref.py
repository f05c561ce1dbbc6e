"""The sink's former decoder and fold, kept as a test oracle: every record through the pydantic
models, every version of a key folded in Python (``merge_tool_calls``, largest usage, smallest row,
first dead letter, first flush marker), then the same upsert statements. The vectorized writer must
leave exactly the database this one leaves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import msgspec
import orjson
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from outloop.agents.toolcalls import merge_tool_calls
from outloop.schemas.events import EVENT_TYPES, DeadLetter, Envelope, EventType, ToolCall, UsageRecord
from outloop.sinks.decode import SCHEMAS
from outloop.sinks.upsert import JOIN_SYN, OFFSETS, REFOLD_RUNS, UPSERT
from outloop.streams.codec import Rejected, dead_letter

Message = tuple[str, int, int, bytes | None, bytes | None]  # topic, partition, offset, key, value
TopicPartition = tuple[str, int]

KINDS = {"hook-events": "hook_events", "tool-calls": "tool_calls", "usage": "usage",
         "workflow-runs": "workflow_events", "dlq": "dead_letters"}
WORKFLOW_TYPES = {EventType.WORKFLOW_STARTED, EventType.WORKFLOW_PHASE_CHANGED, EventType.WORKFLOW_ENDED}

def own_columns(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    """The last tie-break: the row's stored columns but the key, in table order, each compared with None
    above every value."""
    return tuple((1, 0) if row[c] is None else (0, row[c]) for c in SCHEMAS[table].names if c != "id")


def usage_rank(row: dict[str, Any]) -> tuple[Any, ...]:
    """Largest wins: total tokens, then output tokens, then cost, then the row's own columns."""
    total = (row["input_tokens"] + row["output_tokens"] + row["cache_read_input_tokens"]
             + row["cache_creation_input_tokens"])
    return total, row["output_tokens"], row["cost_usd"] or 0.0, own_columns("usage", row)


def dead_letter_rank(row: dict[str, Any]) -> tuple[tuple[bool, Any], ...]:
    """Smallest wins: first seen, then position, then reason, detail, key and raw (a missing value
    after any present one)."""
    return tuple((row[c] is None, row[c] if row[c] is not None else 0)
                 for c in ("at", "topic", "partition", "offset", "reason", "detail", "key", "raw"))


class DecodeError(ValueError):
    pass


@dataclass
class Folded:
    """One batch, folded per table and key."""

    rows: dict[str, dict[Any, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in (*KINDS.values(), "flush_markers")})
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0
    decode_errors: int = 0
    fresh: dict[str, Any] = field(default_factory=dict)  # the reference always upserts: never a fresh row

    def add(self, table: str, key: Any, row: dict[str, Any]) -> None:
        rows = self.rows[table]
        seen = rows.get(key)
        if seen is None:
            rows[key] = row
        elif table == "tool_calls":
            rows[key] = merge_tool_calls(seen, row)
        elif table == "usage":
            rows[key] = max(seen, row, key=usage_rank)
        elif table == "dead_letters":
            rows[key] = min(seen, row, key=dead_letter_rank)
        elif table != "flush_markers":  # flush markers keep the first sighting
            rows[key] = min(seen, row, key=lambda r: own_columns(table, r))

    def arrow(self, table: str) -> pa.Table:
        schema = SCHEMAS[table]
        rows = list(self.rows.get(table, {}).values())  # a table the reference does not store: no rows
        if table == "tool_calls":
            rows = [tool_call_row(r) for r in rows]
        return pa.Table.from_arrays([pa.array([r.get(name) for r in rows], type=f.type)
                                     for name, f in zip(schema.names, schema, strict=True)], schema=schema)

    def offsets_arrow(self, anchors: dict[TopicPartition, str | None]) -> pa.Table:
        rows = [{"topic": t, "partition": p, "next_offset": n, "anchor": anchors.get((t, p))}
                for (t, p), n in sorted(self.offsets.items())]
        return pa.Table.from_pylist(rows, schema=SCHEMAS["consumer_offsets"])

    def has_call_keys(self) -> bool:
        return any(v.get("call_key") for v in self.rows["tool_calls"].values())


def tool_call_row(view: dict[str, Any]) -> dict[str, Any]:
    ti = view.get("tool_input")
    canonical = None if ti is None else orjson.dumps(ti, option=orjson.OPT_SORT_KEYS).decode()
    row = {**view, "tool_input": canonical}
    # stored in the merged normal form (what merge_tool_calls(v, v) gives): duration derived from the times
    started, ended = view.get("started_at"), view.get("ended_at")
    if started is not None and ended is not None:
        derived = max(0.0, (ended - started).total_seconds() * 1000.0)
        duration = view.get("duration_ms")
        row["duration_ms"] = derived if duration is None else max(duration, derived)
    return row


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _hook_row(value: bytes) -> dict[str, Any]:
    env = Envelope.model_validate_json(value)
    if env.type is not EventType.HOOK_EVENT:
        raise DecodeError(f"{env.type.value} on the hook-events topic")
    data = env.data
    row = {"id": env.id, "session_id": _str(data.get("session_id")) or env.subject,
           "hook_event_name": _str(data.get("hook_event_name")), "tool_name": _str(data.get("tool_name")),
           "tool_use_id": _str(data.get("tool_use_id")), "received_at": env.time, "source": env.source,
           "payload": _data_text(value, data)}
    return row


def _data_text(value: bytes, data: dict[str, Any]) -> str:
    """The record's ``data`` object as the JSON text the record holds (the stored payload); what
    only pydantic reads (``NaN``) written again by orjson."""
    try:
        return str(msgspec.json.decode(value, type=dict[str, msgspec.Raw])["data"], "utf-8")
    except (msgspec.DecodeError, UnicodeDecodeError):
        return orjson.dumps(data).decode()


_WHEN = {EventType.WORKFLOW_STARTED: "started_at", EventType.WORKFLOW_PHASE_CHANGED: "at",
         EventType.WORKFLOW_ENDED: "ended_at"}


def _workflow_row(value: bytes) -> dict[str, Any]:
    env = Envelope.model_validate_json(value)
    if env.type not in WORKFLOW_TYPES:
        raise DecodeError(f"{env.type.value} on the workflow-runs topic")
    data: BaseModel = EVENT_TYPES[env.type].model_validate(env.data)
    row = {"id": env.id, "run_id": data.run_id, "type": env.type.value,  # type: ignore[attr-defined]
           "at": getattr(data, _WHEN[env.type]), "source": env.source,
           "data": orjson.dumps(env.data).decode()}
    return row


def _usage_row(value: bytes) -> dict[str, Any]:
    return dict(UsageRecord.model_validate_json(value).__dict__)


def _tool_call_row(value: bytes) -> dict[str, Any]:
    return dict(ToolCall.model_validate_json(value).__dict__)


def _dead_letter_row(value: bytes) -> dict[str, Any]:
    row = DeadLetter.model_validate_json(value).model_dump()  # raw bytes travel as base64
    if row["at"].tzinfo is None:
        row["at"] = row["at"].replace(tzinfo=UTC)
    return row


def _flush(obj: dict[str, Any], topic: str, partition: int, now: datetime) -> dict[str, Any]:
    marker = obj.get("marker")
    if not isinstance(marker, str) or not marker:
        raise DecodeError("flush marker without a marker id")
    p = obj.get("partition")
    return {"marker": marker, "topic": topic, "partition": p if isinstance(p, int) else partition,
            "seen_at": now}


_ROWS = {"hook_events": _hook_row, "usage": _usage_row, "workflow_events": _workflow_row,
         "tool_calls": _tool_call_row, "dead_letters": _dead_letter_row}


def fold(messages: list[Message], now: datetime) -> Folded:
    out = Folded()
    for topic, partition, offset, key, value in messages:
        out.records += 1
        tp = (topic, partition)
        out.offsets[tp] = max(out.offsets.get(tp, -1), offset + 1)
        try:
            kind = KINDS.get(topic.rsplit(".", 1)[-1])
            if kind is None:
                raise DecodeError(f"{topic} is not an outloop output topic")
            if not value:
                raise DecodeError("empty record value")
            if b'"control"' in value:  # cheap pre-check: only control markers need a second parse
                obj = orjson.loads(value)
                if isinstance(obj, dict) and obj.get("control") == "flush":
                    row = _flush(obj, topic, partition, now)
                    out.add("flush_markers", (row["marker"], topic, row["partition"]), row)
                    continue
            row = _ROWS[kind](value)
            out.add(kind, row["id"], row)
        except (orjson.JSONDecodeError, ValidationError, DecodeError, ValueError, TypeError) as exc:
            out.decode_errors += 1
            detail = f"{type(exc).__name__}: {exc}"[:500]
            dl = dead_letter(value, Rejected("sink_decode", detail), topic, partition, offset, key, now=now)
            out.add("dead_letters", dl.id, dl.model_dump())
    return out


def _staged(con: duckdb.DuckDBPyConnection, table: str, data: object, statements: list[str]) -> None:
    name = f"stg_{table}"
    con.register(name, data)
    for sql in statements:
        con.execute(sql)  # on failure the view stays until the next register of its name replaces it:
    con.unregister(name)  # unregistering inside an aborted transaction would hide the real error


def apply(con: duckdb.DuckDBPyConnection, folded: Folded,
          anchors: dict[tuple[str, int], str | None] | None = None) -> dict[str, int]:
    """Write one folded batch and its offsets; the caller owns the transaction. Returns rows per table."""
    written: dict[str, int] = {}
    for table, rows in folded.rows.items():
        if not rows:
            continue
        statements = [UPSERT[table]]
        if table == "tool_calls" and folded.has_call_keys():
            statements += JOIN_SYN
        elif table == "workflow_events":
            statements.append(REFOLD_RUNS)
        _staged(con, table, folded.arrow(table), statements)
        written[table] = len(rows)
    if folded.offsets:
        _staged(con, "consumer_offsets", folded.offsets_arrow(anchors or {}), [OFFSETS])
    return written
