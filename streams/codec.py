"""Bytes -> event or rejection, never an exception (bytewax style: errors are a second output).

Faust's own deserializer is not used: a record it rejects stalls a ``take()`` agent silently, so
agents consume raw bytes and call :func:`decode` themselves.

Two paths decode a record, as in ``sinks.decode``:

* the fast path (:func:`decode_fast`): after the one ``orjson`` parse every path does, the envelope
  and its data are converted by ``msgspec`` (C) into strict structs (:class:`FastEnvelope`,
  :class:`FastHookEvent`, ...) with the attribute names of the pydantic models. It accepts only
  what it can vouch for - exact JSON types, the length, range and 64-bit bounds of the models, times
  only in the form the publisher writes (``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``) - and the session-scoped
  types (hook events, transcript records, tool calls, usage). It never decides that a record is bad:
* everything else goes through the checked path (:func:`decode_checked`), the pydantic models,
  which remain the only judge of a bad record (so rejections and their reasons are those of the
  models). Workflow events and flush markers always take it.

Dead letters keep the record's bytes with secrets redacted (:func:`agents.redact.redact_bytes`:
bytes that are not UTF-8 stay as they were), so no secret reaches the dead-letter topic or DuckDB.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from pydantic import BaseModel, ValidationError

from outloop.schemas.events import EVENT_TYPES, DeadLetter, Envelope, EventType
from outloop.schemas.fast import (
    FastApiMessage,
    FastEnvelope,
    FastHookEvent,
    FastToolCall,
    FastToolResult,
    FastToolUse,
    FastUsage,
)
from outloop.streams.redact import redact_bytes, redact_text

MAX_EVENT_BYTES = 32 * 1024 * 1024
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class Decoded:
    # the pydantic models (checked path) or their msgspec mirrors (fast path): same attribute names
    envelope: Envelope | FastEnvelope
    data: Any  # ``envelope.data`` validated against the model of ``envelope.type``


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # empty | too_large | not_json | not_object | envelope | unknown_type | data
    detail: str


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    loc = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {first.get('msg')}{more}"[:500]


def _parse(raw: bytes | None) -> Any:
    """The record's JSON value, or why it has none (a :class:`Rejected`)."""
    if not raw:
        return Rejected("empty", "empty record value")
    if len(raw) > MAX_EVENT_BYTES:
        return Rejected("too_large", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected("not_json", str(exc)[:500])


def decode(raw: bytes | None) -> Decoded | Rejected:
    """The fast path where it vouches for the record, else the checked path (same results)."""
    obj = _parse(raw)
    if type(obj) is dict:
        fast = decode_fast(obj)
        if fast is not None:
            return fast
    return obj if isinstance(obj, Rejected) else _checked(obj)


def decode_checked(raw: bytes | None) -> Decoded | Rejected:
    """The checked path alone: pydantic models for every record (the reference of what is valid)."""
    obj = _parse(raw)
    return obj if isinstance(obj, Rejected) else _checked(obj)


def _checked(obj: Any) -> Decoded | Rejected:
    if not isinstance(obj, dict):
        return Rejected("not_object", f"JSON {type(obj).__name__}, expected an object")
    kind = obj.get("type")
    if isinstance(kind, str) and kind not in EventType._value2member_map_:
        return Rejected("unknown_type", f"envelope type {kind[:100]!r} is not one outloop knows")
    try:
        env = Envelope.model_validate(obj)
    except ValidationError as exc:
        return Rejected("envelope", _first_error(exc))
    try:
        data = EVENT_TYPES[env.type].model_validate(env.data)
    except ValidationError as exc:
        return Rejected("data", f"{env.type.value}: {_first_error(exc)}")
    wrong = _unstorable(env)
    if wrong:
        return Rejected("envelope", wrong)
    wrong = _unstorable(data)
    if wrong:
        return Rejected("data", f"{env.type.value}: {wrong}")
    return Decoded(env, data)


# -- the fast path: msgspec mirrors of the models (schemas.fast), for the exact forms the publisher writes
# per type: the struct and the time fields to check for the published form before msgspec parses them
_FAST: dict[str, tuple[EventType, type[msgspec.Struct], tuple[str, ...]]] = {
    EventType.HOOK_EVENT.value: (EventType.HOOK_EVENT, FastHookEvent, ()),
    EventType.TOOL_USE.value: (EventType.TOOL_USE, FastToolUse, ("timestamp",)),
    EventType.TOOL_RESULT.value: (EventType.TOOL_RESULT, FastToolResult, ("timestamp",)),
    EventType.TOOL_CALL.value: (EventType.TOOL_CALL, FastToolCall, ("started_at", "ended_at")),
    EventType.USAGE.value: (EventType.USAGE, FastUsage, ("timestamp",)),
    EventType.MESSAGE.value: (EventType.MESSAGE, FastApiMessage, ("timestamp",)),
}
_convert = msgspec.convert
_PUBLISHED_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z", re.A)
_match_time = _PUBLISHED_TIME.fullmatch


def _published_time(value: Any) -> bool:
    return value is None or (type(value) is str and _match_time(value) is not None)


def decode_fast(obj: dict[str, Any]) -> Decoded | None:
    """``obj`` (a parsed record) as structs, or None when the fast path does not vouch for it."""
    kind = obj.get("type")
    fast = _FAST.get(kind) if type(kind) is str else None
    if fast is None or not _published_time(obj.get("time")):
        return None
    data = obj.get("data")
    if type(data) is not dict:
        return None
    _, struct, times = fast
    for name in times:
        if not _published_time(data.get(name)):
            return None
    try:
        env = _convert(obj, FastEnvelope, strict=True)
        return Decoded(env, _convert(data, struct, strict=True))
    except msgspec.ValidationError:
        return None


DEAD_LETTER_RAW_MAX = 700_000  # bytes of a bad record a dead letter keeps: as base64 933,336, so the whole
# record stays under 1,000,000 bytes, below Apache Kafka's default message.max.bytes (1,048,588)


def _unstorable(model: BaseModel) -> str | None:
    """A typed field the sink could not store: an integer beyond 64 bits (orjson reads integers past
    the unsigned 64-bit range as floats, which pydantic then accepts), or a time that does not exist
    in UTC (year 1 at +01:00). Each such record would otherwise be found by the DuckDB writer only
    after splitting its whole batch, many times slower than dead-lettering it here."""
    for name, value in model.__dict__.items():
        if isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _INT64_MAX:
            return f"{name}: integer out of the 64-bit range"
        if isinstance(value, datetime):
            try:
                value.astimezone(UTC)
            except OverflowError:
                return f"{name}: time out of range once converted to UTC"
    return None


def dead_letter(
    raw: bytes | None, rejected: Rejected, topic: str, partition: int, offset: int, key: bytes | None,
    now: datetime | None = None,
) -> DeadLetter:
    """A dead letter whose id depends only on the record's key and bytes: redelivering or replaying
    the same bad record yields the same row, while its last position stays in topic/partition/offset.
    Key, bytes and detail are stored redacted, and the id is a digest of the redacted key and bytes
    (no digest of a secret is stored either; records that differ only in a secret share one row).

    At most :data:`DEAD_LETTER_RAW_MAX` bytes are kept (the detail says how many there were; the id
    is still the digest of all of them), so that the dead letter, whose bytes travel as base64 (a
    third larger), stays a record any broker takes: a malformed input near 1 MB made a dead letter
    Apache Kafka's default limit refuses, and a batch whose delivery is refused stops the worker."""
    clean_key = redact_bytes(key) if key else key
    clean = redact_bytes(raw) if raw else b""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(clean_key or b"")
    digest.update(b"\0")
    digest.update(clean)
    detail = redact_text(rejected.detail)
    if len(clean) > DEAD_LETTER_RAW_MAX:
        detail = f"{detail} [raw: the first {DEAD_LETTER_RAW_MAX:,} of {len(clean):,} bytes]"
        clean = clean[:DEAD_LETTER_RAW_MAX]
    return DeadLetter(
        id=f"dl:{digest.hexdigest()}",
        topic=topic,
        partition=partition,
        offset=offset,
        key=clean_key.decode("utf-8", "replace") if clean_key is not None else None,
        reason=rejected.reason,
        detail=detail,
        raw=clean,
        at=now or datetime.now(UTC),
    )


def encode(model: BaseModel | msgspec.Struct) -> bytes:
    """JSON of a model, or of its fast-path mirror (the same fields; UTC times written ``...Z`` by both)."""
    if isinstance(model, msgspec.Struct):
        return _encode_struct(model)
    return model.model_dump_json().encode()


_encode_struct = msgspec.json.Encoder().encode
