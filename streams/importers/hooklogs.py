"""Hook-log captures -> ``hook.event`` envelopes.

A capture is a folder of JSON arrays, one file per hook event name (``pre_tool_use.json``,
``post_tool_use.json``, ``user_prompt_submit.json``, ``stop.json``, ...), each element one Claude Code
hook payload exactly as the hook received it on stdin. Captures carry no timestamps: the order inside
an array is the only time order, so ``Envelope.time`` stays empty.

- ``data`` is the payload as captured: unknown fields and unknown event names are kept, and an
  older capture's ``tool_result`` is not renamed to ``tool_response``.
- A tool payload (it has ``tool_name``) without ``tool_use_id`` gets one added field, ``call_key``,
  from an :class:`OrdinalCounter` per session counted separately for each file in array order: the
  k-th identical PreToolUse and the k-th identical PostToolUse of a session get the same key, which is
  also the key of the k-th identical transcript ``tool_use`` of that session.
- Envelope id: ``hl:<hook_event_name>:<blake2b-128 of the key-sorted payload>:<n>``, ``n`` being the
  ordinal of identical payloads in the file (captures do repeat payloads verbatim), so the id depends
  only on the file's content, not on where it lies. The payload is digested with its secrets
  redacted (:func:`schemas.ids.redacted_json`): the publisher redacts the payload itself, and the
  id must not be a digest of a secret either. Two payloads that differ only in a secret thus share a
  digest and are told apart by ``n``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from outloop.schemas.events import Envelope, EventType, HookEvent
from outloop.schemas.ids import OrdinalCounter, redacted_json
from outloop.streams.importers import UNREAD, ImportStats, ValidationError, make_envelope, read_json
from outloop.streams.redact import redact_canonical

SOURCE = "hook-log"

# file stem -> hook_event_name, for the capture files named in snake case
EVENT_FILES = {
    "pre_tool_use": "PreToolUse",
    "post_tool_use": "PostToolUse",
    "post_tool_use_failure": "PostToolUseFailure",
    "user_prompt_submit": "UserPromptSubmit",
    "stop": "Stop",
    "subagent_stop": "SubagentStop",
    "notification": "Notification",
    "session_start": "SessionStart",
    "session_end": "SessionEnd",
    "pre_compact": "PreCompact",
}


def is_hook_payload(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("hook_event_name"), str)
        and isinstance(value.get("session_id"), str)
    )


def looks_like_hook_log(doc: Any) -> bool:
    """A JSON array whose first object is a hook payload."""
    if not isinstance(doc, list):
        return False
    first = next((item for item in doc if isinstance(item, dict)), None)
    return first is not None and is_hook_payload(first)


def payload_digest(payload: dict[str, Any]) -> str:
    return hashlib.blake2b(redacted_json(payload, redact_canonical), digest_size=16).hexdigest()


def hook_envelope(payload: dict[str, Any], ordinal: int, call_key: str | None = None,
                  digest: str | None = None) -> Envelope:
    """The envelope of one captured payload (validated against :class:`HookEvent`)."""
    HookEvent.model_validate(payload)
    data = dict(payload)
    if call_key is not None:
        data["call_key"] = call_key
    event = payload["hook_event_name"]
    return make_envelope(
        None,
        id=f"hl:{event}:{digest or payload_digest(payload)}:{ordinal}",
        type=EventType.HOOK_EVENT,
        source=SOURCE,
        subject=payload["session_id"],
        time=None,
        data=data,
    )


def load_array(path: Path, stats: ImportStats) -> list[Any] | None:
    """The file's JSON array, or None (file skipped with a reason) when it is not one."""
    doc = read_json(path, stats)
    if doc is UNREAD:
        return None
    if not isinstance(doc, list):
        stats.skip(path, "unknown format: not a JSON array")
        return None
    return doc


def iter_hook_log(path: Path, stats: ImportStats, payloads: list[Any] | None = None) -> Iterator[Envelope]:
    """Envelopes of one capture file. ``payloads`` is the already parsed array, if the caller has it."""
    if payloads is None:
        payloads = load_array(path, stats)
        if payloads is None:
            return
    keys = OrdinalCounter(redact_canonical)
    seen: Counter[str] = Counter()
    for payload in payloads:
        stats.records_read += 1
        if not is_hook_payload(payload) or not payload["session_id"] or not payload["hook_event_name"]:
            stats.damaged(path)
            continue
        try:
            digest = payload_digest(payload)
        except (TypeError, orjson.JSONEncodeError):
            stats.damaged(path)
            continue
        ordinal = seen[digest]
        tool_name = payload.get("tool_name")
        key = None
        if isinstance(tool_name, str) and not payload.get("tool_use_id"):
            key = keys.key(payload["session_id"], tool_name, payload.get("tool_input"))
        try:
            envelope = hook_envelope(payload, ordinal, key, digest)
        except ValidationError:
            stats.damaged(path)
            continue
        seen[digest] += 1
        if "tool_result" in payload and "tool_response" not in payload:
            stats.note("hook_tool_result_old_name")
        yield stats.produced(envelope)
