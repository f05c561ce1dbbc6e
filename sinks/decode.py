"""Output-topic records -> Arrow staging tables, one per table, every version of a key kept.
Pure: no DuckDB, the clock is passed in.

Two paths decode a record; both give the same row:

* the fast path (:data:`FAST`) - one C-level ``msgspec`` decode per record into a strict struct
  (unknown fields, wrong JSON types, integers outside 64 bits, out-of-range values all refuse), the
  times parsed only in the exact form the agents write (``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``). It serves
  usage, tool calls and hook events: nearly every record of the output topics. It never decides that
  a record is bad: a record it does not vouch for goes to
* the checked path (:data:`CHECKED`) - the pydantic models, the reference of what is valid. Anything
  it refuses becomes a ``sink_decode`` dead letter with the reason; nothing here raises on bad input.
  Workflow events, the agents' dead letters and flush markers always take it (they are rare).

A hook event's ``payload`` is its ``data`` object's JSON text exactly as the record holds it, on
both paths (the fast path never builds the payload's objects: it reads the four fields the row takes
and keeps the text), so what is stored is what the agent wrote, byte for byte.

A batch may hold several versions of one key; they are folded in SQL by ``sinks.upsert`` with the
same rule its upsert applies to stored rows (tool calls as :func:`agents.toolcalls.merge_tool_calls`,
usage by the largest totals, everything else by a deterministic "smallest wins" on the row's own
columns), so the stored row never depends on batch boundaries.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationError

from outloop.schemas.events import (
    EVENT_TYPES,
    TOKENS_MAX,
    ApiMessage,
    DeadLetter,
    Envelope,
    EventType,
    RoutingDecision,
    RoutingRule,
    RoutingSaving,
    RoutingTool,
    ToolCall,
    UsageRecord,
)
from outloop.schemas.registry import OUTPUTS, Output
from outloop.streams.codec import Rejected, dead_letter

Message = tuple[str, int, int, bytes | None, bytes | None]  # topic, partition, offset, key, value
TopicPartition = tuple[str, int]
Row = dict[str, Any]

WORKFLOW_TYPES = {EventType.WORKFLOW_STARTED, EventType.WORKFLOW_PHASE_CHANGED, EventType.WORKFLOW_ENDED}

TS = pa.timestamp("us", tz="UTC")
S, I64, I32, F64 = pa.string(), pa.int64(), pa.int32(), pa.float64()
ARROW = {"text": S, "json": S, "int": I64, "int32": I32, "float": F64, "bool": pa.bool_(), "time": TS,
         "date": pa.date32(), "bytes": pa.binary()}  # schemas.registry column types -> staged Arrow types


def arrow_schema(output: Output) -> pa.Schema:
    """The staging schema of an output: its registry columns, in order."""
    return pa.schema([(c.name, ARROW[c.type]) for c in output.columns])


KINDS = {o.kind: o.table for o in OUTPUTS}  # topic suffix -> table
SCHEMAS: dict[str, pa.Schema] = {
    **{o.table: arrow_schema(o) for o in OUTPUTS},
    "flush_markers": pa.schema([("marker", S), ("topic", S), ("partition", I32), ("seen_at", TS)]),
    "consumer_offsets": pa.schema([("topic", S), ("partition", I32), ("next_offset", I64), ("anchor", S)]),
}
TABLES = (*KINDS.values(), "flush_markers")

class DecodeError(ValueError):
    pass


@dataclass
class Folded:
    """One batch, decoded: every version per table (``sinks.upsert`` folds them per key in SQL), the
    flush markers, the next offset per partition. Fast-path rows are tuples in the staging schema's
    column order with times as UTC text; checked-path rows are dicts."""

    fast: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {t: [] for t in FAST})
    tables: dict[str, list[pa.Table]] = field(default_factory=lambda: {t: [] for t in FAST})  # whole runs of
    # records the batch path (:data:`BATCH`) decoded at once, already in the staging schema
    checked: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in KINDS.values()})
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    markers: dict[tuple[str, str, int], Row] = field(default_factory=dict)  # first sighting wins
    records: int = 0
    decode_errors: int = 0
    fresh: dict[str, pa.Table] = field(default_factory=dict)  # set by sinks.upsert.apply: rows put in by a
    # plain insert, so every one of them is a key the table did not hold, stored as it is here

    def add(self, table: str, row: Row) -> None:
        self.checked[table].append(row)

    def add_marker(self, row: Row) -> None:
        self.markers.setdefault((row["marker"], row["topic"], row["partition"]), row)

    def count(self, table: str) -> int:
        if table == "flush_markers":
            return len(self.markers)
        return (len(self.checked[table]) + len(self.fast.get(table, ()))
                + sum(t.num_rows for t in self.tables.get(table, ())))

    def arrow(self, table: str) -> pa.Table:
        """The staging table of ``table``: every version of every key the batch holds."""
        schema = SCHEMAS[table]
        if table == "flush_markers":
            return pa.Table.from_pylist(list(self.markers.values()), schema=schema)
        rows = self.checked[table]
        parts = list(self.tables.get(table, ()))
        if rows or not parts:
            parts.append(pa.Table.from_arrays([pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema],
                                              schema=schema))
        fast = self.fast.get(table)
        if fast:
            columns = list(zip(*fast, strict=True))
            arrays = [pa.array(c, type=S).cast(f.type) if f.type == TS else pa.array(c, type=f.type)
                      for c, f in zip(columns, schema, strict=True)]
            parts.append(pa.Table.from_arrays(arrays, schema=schema))
        out = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        if table == "usage":  # a zero cost is stored as 0.0: DuckDB does not update 0.0 to -0.0, so the
            i = schema.get_field_index("cost_usd")  # sign of a stored zero would depend on the order
            out = out.set_column(i, schema.field(i), pc.add(out.column(i), 0.0))
        return out

    def offsets_arrow(self, anchors: dict[TopicPartition, str | None]) -> pa.Table:
        rows = [{"topic": t, "partition": p, "next_offset": n, "anchor": anchors.get((t, p))}
                for (t, p), n in sorted(self.offsets.items())]
        return pa.Table.from_pylist(rows, schema=SCHEMAS["consumer_offsets"])

    @cached_property
    def rows(self) -> dict[str, dict[Any, Row]]:
        """Per table the keys written (folded), for pattern materialization: tool calls map each id to
        its folded ``call_key`` (the least non-null one, as the merge); flush markers to their row."""
        calls: dict[str, Row] = {}
        pairs = [(t[0], t[2]) for t in self.fast["tool_calls"]]
        for t in self.tables["tool_calls"]:
            pairs += zip(t.column("id").to_pylist(), t.column("call_key").to_pylist(), strict=True)
        pairs += [(r["id"], r["call_key"]) for r in self.checked["tool_calls"]]
        for id_, key in pairs:
            seen = calls.get(id_)
            if seen is None:
                calls[id_] = {"call_key": key}
            elif key is not None and (seen["call_key"] is None or key < seen["call_key"]):
                seen["call_key"] = key
        return {"tool_calls": calls, "flush_markers": dict(self.markers)}


def tool_call_row(view: Row) -> Row:
    """A tool-call view in its stored normal form (what ``merge_tool_calls(v, v)`` gives): canonical
    (key-sorted) ``tool_input`` JSON, the duration at least the one derived from the times."""
    ti = view.get("tool_input")
    canonical = None if ti is None else orjson.dumps(ti, option=orjson.OPT_SORT_KEYS).decode()
    row = {**view, "tool_input": canonical}
    started, ended = view.get("started_at"), view.get("ended_at")
    if started is not None and ended is not None:
        derived = max(0.0, (ended - started).total_seconds() * 1000.0)
        duration = view.get("duration_ms")
        row["duration_ms"] = derived if duration is None else max(duration, derived)
    return row


# -- the checked path: pydantic, the reference --------------------------------------------------
def _hook_event_row(id: str, session: Any, name: Any, tool: Any, use_id: Any, subject: str,
                    time: datetime | str | None, source: str, payload: str) -> tuple[Any, ...]:
    """The stored row, in SCHEMAS order, from the payload's fields and its JSON text."""
    return (id, session if type(session) is str and session else subject,
            name if type(name) is str else None, tool if type(tool) is str else None,
            use_id if type(use_id) is str else None, time, source, payload)


class _DataText(msgspec.Struct):
    """An envelope's ``data`` as the JSON text it is in the record (every other field skipped)."""

    data: msgspec.Raw


_data_text_decoder = msgspec.json.Decoder(_DataText)


def _payload_text(value: bytes, data: dict[str, Any]) -> str:
    """The stored ``payload`` of a hook record: its ``data`` object's JSON text exactly as the record
    holds it (both paths store that text, so a record's row does not depend on the path that read
    it), or ``data`` written by orjson when the text cannot be cut out (JSON only pydantic reads:
    ``NaN``)."""
    try:
        return str(_data_text_decoder.decode(value).data, "utf-8")
    except (msgspec.DecodeError, UnicodeDecodeError):
        return orjson.dumps(data).decode()


def _hook_row(value: bytes) -> Row:
    env = Envelope.model_validate_json(value)
    if env.type is not EventType.HOOK_EVENT:
        raise DecodeError(f"{env.type.value} on the hook-events topic")
    get = env.data.get
    return dict(zip(SCHEMAS["hook_events"].names, _hook_event_row(
        env.id, get("session_id"), get("hook_event_name"), get("tool_name"), get("tool_use_id"), env.subject,
        env.time, env.source, _payload_text(value, env.data)), strict=True))


_WHEN = {EventType.WORKFLOW_STARTED: "started_at", EventType.WORKFLOW_PHASE_CHANGED: "at",
         EventType.WORKFLOW_ENDED: "ended_at"}


def _workflow_row(value: bytes) -> Row:
    env = Envelope.model_validate_json(value)
    if env.type not in WORKFLOW_TYPES:
        raise DecodeError(f"{env.type.value} on the workflow-runs topic")
    data: BaseModel = EVENT_TYPES[env.type].model_validate(env.data)
    row = {"id": env.id, "run_id": data.run_id, "type": env.type.value,  # type: ignore[attr-defined]
           "at": getattr(data, _WHEN[env.type]), "source": env.source,
           "data": orjson.dumps(env.data).decode()}
    return row


def _usage_row(value: bytes) -> Row:
    return dict(UsageRecord.model_validate_json(value).__dict__)


def _message_row(value: bytes) -> Row:
    row = dict(ApiMessage.model_validate_json(value).__dict__)
    row["tool_use_ids"] = orjson.dumps(row["tool_use_ids"]).decode()  # as agents.pairing.message_ids_json
    return row


def _tool_call_row(value: bytes) -> Row:
    return tool_call_row(dict(ToolCall.model_validate_json(value).__dict__))


def _dead_letter_row(value: bytes) -> Row:
    row = DeadLetter.model_validate_json(value).model_dump()  # raw bytes travel as base64
    if row["at"].tzinfo is None:
        row["at"] = row["at"].replace(tzinfo=UTC)
    return row


def _decision_row(value: bytes) -> Row:
    env = Envelope.model_validate_json(value)
    if env.type is not EventType.ROUTING_DECISION:
        raise DecodeError(f"{env.type.value} on the routing-decisions topic")
    return dict(RoutingDecision.model_validate(env.data).__dict__)


def _saving_row(value: bytes) -> Row:
    env = Envelope.model_validate_json(value)
    if env.type is not EventType.ROUTING_SAVING:
        raise DecodeError(f"{env.type.value} on the routing-savings topic")
    row = dict(RoutingSaving.model_validate(env.data).__dict__)
    row["day"] = row["decided_at"].astimezone(UTC).date()
    return row


def _listed(row: Row) -> Row:
    """Lists stored as their JSON text."""
    return {k: orjson.dumps(v).decode() if isinstance(v, list) else v for k, v in row.items()}


def _rule_row(value: bytes) -> Row:
    env = Envelope.model_validate_json(value)
    if env.type is not EventType.ROUTING_RULE:
        raise DecodeError(f"{env.type.value} on the routing-rules topic")
    return _listed(dict(RoutingRule.model_validate(env.data).__dict__))


def _tool_row(value: bytes) -> Row:
    env = Envelope.model_validate_json(value)
    if env.type is not EventType.ROUTING_TOOL:
        raise DecodeError(f"{env.type.value} on the adw-tools topic")
    return _listed(dict(RoutingTool.model_validate(env.data).__dict__))


def model_row(output: Output) -> Callable[[bytes], Row]:
    """The checked decoder an output gets from the registry alone: its model validates the record, the
    row is the model's fields named like the columns (a ``json`` column's list or object as JSON text)."""
    model, names = output.model, output.names
    if model is None:
        raise ValueError(f"{output.table}: no model to decode its records with")
    texts = [c.name for c in output.columns if c.type == "json"]

    def row(value: bytes) -> Row:
        record = model.model_validate_json(value)
        out = {n: getattr(record, n) for n in names}
        for n in texts:
            if out[n] is not None and not isinstance(out[n], str):
                out[n] = orjson.dumps(out[n]).decode()
        return out

    return row


def _flush(obj: dict[str, Any], topic: str, partition: int, now: datetime) -> Row:
    marker = obj.get("marker")
    if not isinstance(marker, str) or not marker:
        raise DecodeError("flush marker without a marker id")
    p = obj.get("partition")
    return {"marker": marker, "topic": topic, "partition": p if isinstance(p, int) else partition,
            "seen_at": now}


_ROWS: dict[str, Callable[[bytes], Row]] = {  # outputs whose rows need more than their model's fields
    "hook_events": _hook_row, "usage": _usage_row, "workflow_events": _workflow_row,
    "tool_calls": _tool_call_row, "dead_letters": _dead_letter_row, "routing_decisions": _decision_row,
    "routing_rules": _rule_row, "adw_tools": _tool_row, "cost_savings_log": _saving_row, "api_messages": _message_row}
CHECKED: dict[str, Callable[[bytes], Row]] = {o.table: _ROWS.get(o.table) or model_row(o) for o in OUTPUTS}


# -- the fast path: msgspec structs, only for the exact forms the agents write ----------------------
_I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_N64 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_TOK = Annotated[int, msgspec.Meta(ge=0, le=TOKENS_MAX)]  # UsageRecord's bound


class _Usage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):  # fields in SCHEMAS order
    id: str
    session_id: str
    model: str | None
    timestamp: str | None
    input_tokens: _TOK
    output_tokens: _TOK
    cache_read_input_tokens: _TOK = 0
    cache_creation_input_tokens: _TOK = 0
    cache_creation_5m_tokens: _TOK | None = None
    cache_creation_1h_tokens: _TOK | None = None
    cost_usd: float | None = None
    source: str = "transcript"


class _ToolCall(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):  # fields in SCHEMAS order
    id: str
    tool_use_id: str | None
    call_key: str | None
    session_id: str
    tool_name: str | None
    command: str | None = None
    file_path: str | None = None
    status: Literal["started", "ok", "error", "interrupted"]
    started_at: str | None = None
    ended_at: str | None = None
    duration_ms: float | None = None
    input_bytes: _I64 = 0
    output_bytes: _I64 | None = None
    output_tokens_est: _I64 | None = None
    source: str
    reported_ms: float | None = None
    hook_pre_at: str | None = None
    hook_post_at: str | None = None
    permission_asked: bool | None = None
    tool_input: dict[str, Any] | list[Any] | str | None = None


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    type: str
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    data: msgspec.Raw  # kept as text (the stored payload); _HookHead reads the four fields a row takes
    time: str | None = None
    specversion: Literal["1"] = "1"


class _HookHead(msgspec.Struct):
    """The fields of a hook payload its row takes; every other field is skipped, not built. Decoding
    it checks that ``data`` is an object (a duplicate field's last value wins, as in a dict)."""

    session_id: Any = None
    hook_event_name: Any = None
    tool_name: Any = None
    tool_use_id: Any = None


class _NotFast(Exception):
    """The fast path does not vouch for this record: the checked path decides."""


_AGENT_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z").fullmatch


def _time(text: str | None) -> datetime | None:
    """A time in the agents' form only: ``YYYY-MM-DDTHH:MM:SSZ`` or with 6 fraction digits."""
    if text is None:
        return None
    if _AGENT_TIME(text) is None:
        raise _NotFast
    return datetime.fromisoformat(text)  # ValueError for a date or time that does not exist


_usage_decoder = msgspec.json.Decoder(_Usage)
_tool_decoder = msgspec.json.Decoder(_ToolCall)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_head_decoder = msgspec.json.Decoder(_HookHead)
_astuple = msgspec.structs.astuple


def _fast_usage(value: bytes) -> tuple[Any, ...]:
    u = _usage_decoder.decode(value)
    _time(u.timestamp)
    return _astuple(u)


def _fast_tool_call(value: bytes) -> tuple[Any, ...]:
    t = _tool_decoder.decode(value)
    started, ended = _time(t.started_at), _time(t.ended_at)
    _time(t.hook_pre_at), _time(t.hook_post_at)
    duration = t.duration_ms
    if started is not None and ended is not None:  # the stored normal form, as tool_call_row
        derived = max(0.0, (ended - started).total_seconds() * 1000.0)
        duration = derived if duration is None else max(duration, derived)
    ti = t.tool_input
    canonical = None if ti is None else orjson.dumps(ti, option=orjson.OPT_SORT_KEYS).decode()
    return (t.id, t.tool_use_id, t.call_key, t.session_id, t.tool_name, t.command, t.file_path, t.status,
            t.started_at, t.ended_at, duration, t.input_bytes, t.output_bytes, t.output_tokens_est, t.source,
            t.reported_ms, t.hook_pre_at, t.hook_post_at, t.permission_asked, canonical)


def _fast_hook(value: bytes) -> tuple[Any, ...]:
    env = _envelope_decoder.decode(value)
    if env.type != "hook.event":
        raise _NotFast
    _time(env.time)
    h = _head_decoder.decode(env.data)
    # the text is read strictly: skipping a value, msgspec does not check its strings are UTF-8
    return _hook_event_row(env.id, h.session_id, h.hook_event_name, h.tool_name, h.tool_use_id, env.subject,
                           env.time, env.source, str(env.data, "utf-8"))


FAST: dict[str, Callable[[bytes], tuple[Any, ...]]] = {
    "usage": _fast_usage, "tool_calls": _fast_tool_call, "hook_events": _fast_hook}


# -- the batch path: the fast path for a whole run of records at once -------------------------------
# The same structs decode every record (one C call each, no Python per record but the call), the
# times are checked and parsed column-wise, the derived durations computed column-wise. A run it does
# not vouch for in full (any record the struct refuses, a time not in the agents' form or that does not
# exist) is split in halves down to BATCH_MIN records, then left to the record-by-record paths above.
# It gives exactly the rows the fast path gives (``tests/unit/test_sink_equivalence.py``).
BATCH_MIN = 16
_AGENT_TIME_RE2 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z$"
_YEAR_ONE = pa.scalar(datetime(1, 1, 1, tzinfo=UTC), type=TS)


def _times(column: tuple[str | None, ...]) -> pa.Array:
    """The agents' times of one column as timestamps: :class:`_NotFast` unless every one that is not
    null is in the agents' form (as :func:`_time`) and exists (Arrow's parser refuses a day or time
    that does not; year 0, which it takes, is refused here)."""
    text = pa.array(column, type=S)
    if text.null_count == len(text):
        return pa.nulls(len(text), type=TS)
    if not pc.all(pc.match_substring_regex(text, _AGENT_TIME_RE2)).as_py():
        raise _NotFast
    try:
        times = text.cast(TS)
    except pa.ArrowInvalid:
        raise _NotFast from None
    if pc.less(pc.min(times), _YEAR_ONE).as_py():
        raise _NotFast
    return times


def _not_less(a: pa.Array, b: pa.Array | float) -> pa.Array:
    """Python's ``max(a, b)`` element-wise: ``b`` only where it is greater (so ``max(-0.0, 0.0)`` stays
    -0.0, as in Python)."""
    return pc.if_else(pc.greater(b, a), b, a)


def _durations(given: pa.Array, started: pa.Array, ended: pa.Array) -> pa.Array:
    """:func:`_fast_tool_call`'s duration column: at least the span from start to end (never below 0)."""
    span = pc.subtract(ended.cast(I64), started.cast(I64))  # null unless both are there
    try:  # a safe cast refuses a span a double cannot hold exactly (past 2**53 us, about 285 years): a
        exact = span.cast(F64)  # double would round it before the division, where the record path is exact
    except pa.ArrowInvalid:
        raise _NotFast from None
    derived = pc.multiply(pc.divide(exact, 1e6), 1000.0)
    derived = pc.if_else(pc.greater(derived, 0.0), derived, 0.0)  # max(0.0, derived); null without a span
    merged = pc.if_else(pc.greater(derived, given), derived, given)  # max(given, derived)
    return pc.coalesce(merged, given, derived)


def _run_usage(values: list[bytes]) -> pa.Table:
    cols = list(zip(*map(_astuple, map(_usage_decoder.decode, values)), strict=True))
    schema = SCHEMAS["usage"]
    arrays = [_times(c) if f.type == TS else pa.array(c, type=f.type) for c, f in zip(cols, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _run_tool_calls(values: list[bytes]) -> pa.Table:
    cols = list(zip(*map(_astuple, map(_tool_decoder.decode, values)), strict=True))
    schema = SCHEMAS["tool_calls"]
    arrays = [_times(c) if f.type == TS else pa.array(c, type=f.type)
              for c, f in zip(cols[:-1], schema, strict=False)]
    i = schema.get_field_index("duration_ms")
    arrays[i] = _durations(arrays[i], arrays[i - 2], arrays[i - 1])
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    arrays.append(pa.array([None if ti is None else dumps(ti, option=sort).decode() for ti in cols[-1]], type=S))
    return pa.Table.from_arrays(arrays, schema=schema)


def _run_hooks(values: list[bytes]) -> pa.Table:
    envs = list(map(_envelope_decoder.decode, values))
    if any(e.type != "hook.event" for e in envs):
        raise _NotFast
    times = _times(tuple(e.time for e in envs))
    heads = list(map(_head_decoder.decode, [e.data for e in envs]))
    cols = list(zip(*(_hook_event_row(e.id, h.session_id, h.hook_event_name, h.tool_name, h.tool_use_id, e.subject,
                                      None, e.source, str(e.data, "utf-8")) for e, h in zip(envs, heads, strict=True)),
                    strict=True))
    schema = SCHEMAS["hook_events"]
    i = schema.get_field_index("received_at")
    arrays = [times if j == i else pa.array(c, type=f.type) for j, (c, f) in enumerate(zip(cols, schema, strict=True))]
    return pa.Table.from_arrays(arrays, schema=schema)


BATCH: dict[str, Callable[[list[bytes]], pa.Table]] = {
    "usage": _run_usage, "tool_calls": _run_tool_calls, "hook_events": _run_hooks}
_CHECKED_REFUSES = (orjson.JSONDecodeError, ValidationError, DecodeError, ValueError, TypeError)


def fold(messages: list[Message], now: datetime) -> Folded:
    """Decode ``messages`` into a :class:`Folded` (the name is historical: versions are folded in SQL):
    each topic's records by the batch path where it vouches for them, else one by one."""
    out = Folded()
    out.records = len(messages)
    offsets = out.offsets
    by_topic: dict[str, list[Message]] = {}
    for message in messages:
        topic, partition, offset = message[0], message[1], message[2]
        tp = (topic, partition)
        if offsets.get(tp, -1) <= offset:
            offsets[tp] = offset + 1
        run = by_topic.get(topic)
        if run is None:
            by_topic[topic] = [message]
        else:
            run.append(message)
    for topic, run in by_topic.items():
        kind = KINDS.get(topic.rsplit(".", 1)[-1])
        _fold_run(out, run, kind, now)
    return out


def _fold_run(out: Folded, run: list[Message], kind: str | None, now: datetime) -> None:
    batch = BATCH.get(kind) if kind else None
    if batch is not None and len(run) >= BATCH_MIN:
        try:
            out.tables[kind].append(batch([m[4] for m in run]))  # type: ignore[index, misc]
            return
        except Exception:  # noqa: BLE001 - not vouched for in full: halves, then record by record
            half = len(run) // 2
            if half >= BATCH_MIN:
                _fold_run(out, run[:half], kind, now)
                _fold_run(out, run[half:], kind, now)
                return
    for message in run:
        _fold_one(out, message, kind, now)


def _fold_one(out: Folded, message: Message, kind: str | None, now: datetime) -> None:
    topic, partition, offset, key, value = message
    fast = FAST.get(kind) if kind else None
    if fast is not None and value and b'"control"' not in value:
        try:
            out.fast[kind].append(fast(value))  # type: ignore[index]
            return
        except Exception:  # noqa: BLE001 - whatever the fast path refuses, the checked path decides
            pass
    try:
        if kind is None:
            raise DecodeError(f"{topic} is not an outloop output topic")
        if not value:
            raise DecodeError("empty record value")
        if b'"control"' in value:  # cheap pre-check: only control markers need a second parse
            obj = orjson.loads(value)
            if isinstance(obj, dict) and obj.get("control") == "flush":
                out.add_marker(_flush(obj, topic, partition, now))
                return
        out.add(kind, CHECKED[kind](value))
    except _CHECKED_REFUSES as exc:
        out.decode_errors += 1
        detail = f"{type(exc).__name__}: {exc}"[:500]
        dl = dead_letter(value, Rejected("sink_decode", detail), topic, partition, offset, key, now=now)
        out.add("dead_letters", dl.model_dump())
