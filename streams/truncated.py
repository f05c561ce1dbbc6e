"""What can be kept of a hook payload the shim had to cut (over 16 MiB, or still arriving at its
deadline): the payload's top-level fields that arrived whole.

The shim keeps the first ``MAX_BYTES`` of its stdin and, when it had to drop bytes, the last
``TAIL_BYTES`` too (the spool header says how many: ``tail``), because Claude Code writes the big
field (``tool_response``) before ``tool_use_id``. The head is read field by field until the first
value that did not arrive whole; the tail is read as the end of the top-level object. Whatever is
recovered becomes the event's ``data``, with ``outloop_truncated`` saying what was lost, so the
tool call is completed (paired by ``tool_use_id``) instead of staying ``started``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_decoder = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_FIELD_START = re.compile(rb',[ \t\n\r]*"')
MAX_TAIL_TRIES = 256  # candidate field starts tried in the tail, from its end


def head_fields(text: str) -> tuple[dict[str, Any], str | None]:
    """The top-level fields of a JSON object cut short, in order, that are complete; and the key of
    the first value that is not (None when the cut fell between fields)."""
    fields: dict[str, Any] = {}
    i = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("{", i):
        return fields, None
    i += 1
    while True:
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        try:
            key, i = _decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return fields, None
        if not isinstance(key, str):
            return fields, None
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if not text.startswith(":", i):
            return fields, None
        i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
        try:
            value, end = _decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return fields, key
        j = _WS.match(text, end).end()  # type: ignore[union-attr]
        if j >= len(text):  # the value may go on past the cut (a number, ``tru``...): not whole
            return fields, key
        fields[key] = value
        if text.startswith(",", j):
            i = j + 1
            continue
        return fields, None  # "}" (the cut came later) or garbage


def tail_fields(tail: bytes) -> dict[str, Any]:
    """The top-level fields at the end of a JSON object of which only ``tail`` (its last bytes) is
    known: the longest run of ``,"key": value ... }`` that parses as an object."""
    starts = [m.start() for m in _FIELD_START.finditer(tail)][-MAX_TAIL_TRIES:]
    best: dict[str, Any] = {}
    for start in reversed(starts):
        try:
            obj = orjson.loads(b"{" + tail[start + 1:])
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and len(obj) > len(best):
            best = obj
    return best


def recover(raw: bytes, tail: int, reason: str) -> dict[str, Any] | None:
    """The payload data to publish for a cut hook payload (``raw``: the head, then ``tail`` bytes of
    its end), or None when not even a ``session_id`` survived."""
    cut = len(raw) - tail if 0 < tail <= len(raw) else len(raw)
    fields, lost = head_fields(raw[:cut].decode("utf-8", "ignore"))
    if tail:
        for key, value in tail_fields(raw[cut:]).items():
            fields.setdefault(key, value)
    if not isinstance(fields.get("session_id"), str) or not fields["session_id"]:
        return None
    note: dict[str, Any] = {"reason": reason, "received_bytes": len(raw)}
    if lost is not None:
        note["path"] = lost
    fields["outloop_truncated"] = [note]
    return fields
