"""Bytes -> event or rejection, never an exception (bytewax style: errors are a second output).

Faust's own deserializer is not used: a record it rejects stalls a ``take()`` agent silently, so
agents consume raw bytes and call :func:`decode` themselves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from schemas.events import EVENT_TYPES, DeadLetter, Envelope, EventType

MAX_EVENT_BYTES = 32 * 1024 * 1024


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
    return Decoded(env, data)


def dead_letter(
    raw: bytes | None, rejected: Rejected, topic: str, partition: int, offset: int, key: bytes | None,
    now: datetime | None = None,
) -> DeadLetter:
    """A dead letter whose id depends only on the record's key and bytes: redelivering or replaying
    the same bad record yields the same row, while its last position stays in topic/partition/offset."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(key or b"")
    digest.update(b"\0")
    digest.update(raw or b"")
    return DeadLetter(
        id=f"dl:{digest.hexdigest()}",
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.decode("utf-8", "replace") if key is not None else None,
        reason=rejected.reason,
        detail=rejected.detail,
        raw=raw or b"",
        at=now or datetime.now(UTC),
    )


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()
