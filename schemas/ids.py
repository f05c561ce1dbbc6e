"""Deterministic ids. The same fact always gets the same id, so redelivery and replay upsert
the same row instead of adding one.

Ids and digests derived from content (:func:`input_digest`, so call keys, and the hook-log payload
digest) are computed on the content with its secrets redacted by the :data:`Redactor` the caller
passes (the edge's, :func:`outloop.streams.redact.redact_canonical`; the contract imports nothing of
ours): the publisher
redacts before anything reaches Kafka, so a digest must give the same value whether it is computed
before or after that (redaction is idempotent), and no digest of a secret may be published either
(a short secret could be guessed offline from it)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

Redactor = Callable[[Any, bytes], Any]
"""``redact(value, canonical)``: ``value`` with its secrets redacted (``value`` itself when it holds
none), given ``canonical``, its :func:`canonical_json`. Redaction must be idempotent."""


def canonical_json(value: Any) -> bytes:
    """Key-sorted compact JSON: equal values give equal bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


# The columns that tell two versions of one key apart once the rule of their table ties (the sink's
# SQL compares the same columns as a row value, sinks.upsert.tie): every stored column but the key.
USAGE_TIE = ("session_id", "model", "timestamp", "input_tokens", "output_tokens", "cache_read_input_tokens",
             "cache_creation_input_tokens", "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cost_usd",
             "source")
MESSAGE_TIE = ("message_id", "request_id", "session_id", "model", "timestamp", "tool_use_ids", "content_blocks",
               "text_bytes", "thinking_bytes", "tool_use_bytes", "agent_id", "is_sidechain", "source")
HOOK_TIE = ("session_id", "hook_event_name", "tool_name", "tool_use_id", "received_at", "source", "payload")
WORKFLOW_TIE = ("run_id", "type", "at", "source", "data")


def column_order(row: Mapping[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    """The deterministic last tie-break between two versions of one key, as DuckDB compares the row
    value of ``columns``: column by column, NULL above every value (strings by code point, which is
    the byte order of their UTF-8; times by instant; -0.0 equals 0.0, and the sink stores both as 0.0)."""
    return tuple((1,) if row[name] is None else (0, row[name]) for name in columns)


def redacted_json(value: Any, redact: Redactor) -> bytes:
    """:func:`canonical_json` of ``value`` with its secrets redacted: equal before and after the
    publisher's redaction."""
    raw = canonical_json(value)
    clean = redact(value, raw)
    return raw if clean is value or clean == value else canonical_json(clean)


def input_digest(tool_name: str, tool_input: Any, redact: Redactor) -> str:
    """Digest of a tool's name and input, secrets redacted (see the module docstring)."""
    h = hashlib.blake2b(digest_size=10)
    h.update(tool_name.encode())
    h.update(b"\0")
    h.update(redacted_json(tool_input, redact))
    return h.hexdigest()


def call_key(session_id: str, tool_name: str, tool_input: Any, ordinal: int, redact: Redactor) -> str:
    """Key of the ``ordinal``-th call (0-based) with this exact input (secrets redacted) in this session.

    Used where no ``tool_use_id`` exists: hook payloads of old Claude Code versions are matched to
    each other (Pre/Post) and to transcript ``tool_use`` blocks by identical input, in order."""
    return f"{session_id}:{input_digest(tool_name, tool_input, redact)}:{ordinal}"


class OrdinalCounter:
    """Gives the running ordinal of identical inputs within a session, in arrival order."""

    def __init__(self, redact: Redactor) -> None:
        self._redact = redact
        self._seen: dict[tuple[str, str], int] = {}

    def key(self, session_id: str, tool_name: str, tool_input: Any) -> str:
        digest = input_digest(tool_name, tool_input, self._redact)
        slot = (session_id, digest)
        n = self._seen.get(slot, 0)
        self._seen[slot] = n + 1
        return f"{session_id}:{digest}:{n}"


def usage_id(message_id: str, request_id: str | None) -> str:
    return f"{message_id}:{request_id or ''}"


def tool_call_id(tool_use_id: str | None, key: str | None) -> str:
    if tool_use_id:
        return tool_use_id
    if not key:
        raise ValueError("a tool call needs a tool_use_id or a call key")
    return f"syn:{key}"
