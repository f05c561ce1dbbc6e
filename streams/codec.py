"""Bytes -> event or rejection, never an exception (bytewax style: errors are a second output).

Faust's own deserializer is not used: a record it rejects stalls a ``take()`` agent silently, so
agents consume raw bytes and call :func:`decode` themselves.

Dead letters keep the record's bytes with secrets redacted (:func:`agents.redact.redact_bytes`:
bytes that are not UTF-8 stay as they were), so no secret reaches the dead-letter topic or DuckDB.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from agents.redact import redact_bytes, redact_text
from schemas.events import EVENT_TYPES, DeadLetter, Envelope, EventType

MAX_EVENT_BYTES = 32 * 1024 * 1024
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class Decoded:
    envelope: Envelope
    data: BaseModel  # ``envelope.data`` validated against the model of ``envelope.type``


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


def decode(raw: bytes | None) -> Decoded | Rejected:
    if not raw:
        return Rejected("empty", "empty record value")
    if len(raw) > MAX_EVENT_BYTES:
        return Rejected("too_large", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
    try:
        obj: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected("not_json", str(exc)[:500])
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
    (no digest of a secret is stored either; records that differ only in a secret share one row)."""
    clean_key = redact_bytes(key) if key else key
    clean = redact_bytes(raw) if raw else b""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(clean_key or b"")
    digest.update(b"\0")
    digest.update(clean)
    return DeadLetter(
        id=f"dl:{digest.hexdigest()}",
        topic=topic,
        partition=partition,
        offset=offset,
        key=clean_key.decode("utf-8", "replace") if clean_key is not None else None,
        reason=rejected.reason,
        detail=redact_text(rejected.detail),
        raw=clean,
        at=now or datetime.now(UTC),
    )


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()
