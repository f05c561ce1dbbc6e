"""Pairing: hook Pre/Post events and transcript tool_use/tool_result blocks -> tool calls; usage
records -> deduplicated, priced usage. A pure fold: no Kafka, time comes from the events.

Every input becomes a *view* of one tool call (a dict of ToolCall fields). Views of the same call
are combined with :func:`agents.toolcalls.merge_tool_calls`, which is order-independent and
idempotent, and the sink applies the same merge. So correctness never depends on this fold's
memory: after a restart a lone PostToolUse still yields a complete call (without its duration), and
the row in DuckDB converges to the same value whatever the delivery order. The bounded cache of
recent views only lets the fold emit the most complete view it has seen.

Secrets: the publisher redacts every record before it reaches Kafka (:mod:`streams.publisher`);
this fold redacts again as a second line of defence (redaction is idempotent, so a redacted record
comes out unchanged): everything a view or a hook event carries onward (tool inputs, commands,
paths, the hook payload) is redacted with :mod:`agents.redact` before it leaves the fold. Sizes and
token estimates are those of the original content: measured here, or carried by a record the
publisher redacted (``input_bytes`` / ``output_bytes`` of transcript records, ``outloop_sizes`` of a
hook payload, which is dropped from the stored payload). Call keys are digests of the input with its
secrets redacted (:func:`schemas.ids.input_digest`), equal before and after the publisher.
``secrets`` is what :func:`agents.redact.scan` found in the record's raw bytes (empty: nothing to
redact; None: search every string).

Keys: ``tool_use_id`` when present. Hook payloads without one (old Claude Code versions) use a call
key - the session, a digest of the exact input and its ordinal among identical inputs in the
session - so the k-th identical PreToolUse pairs with the k-th identical PostToolUse and with the
k-th identical transcript ``tool_use``. Importers compute it over whole captures; for live events
the fold counts in memory (documented limit: a worker restart in the middle of a session of such an
old version restarts those ordinals).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from outloop.agents import toolcalls as tc
from outloop.schemas import sizes as sz
from outloop.schemas.events import (
    ApiMessage,
    Envelope,
    EventType,
    Flush,
    HookEvent,
    ToolCall,
    ToolResultRecord,
    ToolUseRecord,
    UsageRecord,
)
from outloop.schemas.fast import FastApiMessage, FastEnvelope, FastUsage
from outloop.schemas.ids import MESSAGE_TIE, USAGE_TIE, OrdinalCounter, column_order, input_digest, tool_call_id
from outloop.streams.redact import ALL, redact_canonical, redact_json, redact_text

PRE = {"PreToolUse"}
POST = {"PostToolUse", "PostToolUseFailure"}
ASKED = "PermissionRequest"  # Claude Code showed the user a permission dialog for a pending call


@dataclass
class BatchOut:
    """What one batch produces, deduplicated within the batch."""

    hook_events: list[Envelope | FastEnvelope] = field(default_factory=list)
    tool_calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    usage: dict[str, UsageRecord | FastUsage] = field(default_factory=dict)
    messages: dict[str, ApiMessage | FastApiMessage] = field(default_factory=dict)
    flushes: list[str] = field(default_factory=list)


def usage_rank(u: UsageRecord | FastUsage) -> tuple[int, int, float]:
    total = u.input_tokens + u.output_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens
    return (total, u.output_tokens, u.cost_usd or 0.0)


def usage_wins(new: UsageRecord | FastUsage, seen: UsageRecord | FastUsage) -> bool:
    """Largest wins, in the sink's own order (the usage upsert of sinks.upsert): totals, output, cost, then the
    record's own columns (``schemas.ids.column_order``) - compared only on a tie."""
    a, b = usage_rank(new), usage_rank(seen)
    if a != b:
        return a > b
    return column_order(usage_fields(new), USAGE_TIE) > column_order(usage_fields(seen), USAGE_TIE)


def usage_fields(u: UsageRecord | FastUsage) -> dict[str, Any]:
    """The fields of a usage record, whether the pydantic model or its fast-path mirror."""
    return msgspec.structs.asdict(u) if isinstance(u, FastUsage) else dict(u.__dict__)


def message_rank(m: ApiMessage | FastApiMessage) -> tuple[int, int]:
    return (m.content_blocks, m.text_bytes + m.thinking_bytes + m.tool_use_bytes)


def message_fields(m: ApiMessage | FastApiMessage) -> dict[str, Any]:
    """The stored columns of an API message: ``tool_use_ids`` as the JSON text the sink stores."""
    row = msgspec.structs.asdict(m) if isinstance(m, FastApiMessage) else dict(m.__dict__)
    row["tool_use_ids"] = message_ids_json(row["tool_use_ids"])
    return row


def message_ids_json(ids: list[str]) -> str:
    """The stored form of ``tool_use_ids`` (the sink compares and keeps this text)."""
    return msgspec.json.encode(ids).decode()


def message_wins(new: ApiMessage | FastApiMessage, seen: ApiMessage | FastApiMessage) -> bool:
    """The most complete version wins, in the sink's order (the api_messages upsert of sinks.upsert):
    content blocks, content bytes, then the record's own columns - compared only on a tie."""
    a, b = message_rank(new), message_rank(seen)
    if a != b:
        return a > b
    return column_order(message_fields(new), MESSAGE_TIE) > column_order(message_fields(seen), MESSAGE_TIE)


class _LRU(OrderedDict[str, Any]):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class Pairing:
    def __init__(
        self,
        price: Callable[[Any], float | None] | None = None,
        max_views: int = 20_000,  # calls still open or recently seen; the sink merges the rest
        max_sessions: int = 10_000,
    ) -> None:
        self.price = price
        self.views: _LRU = _LRU(max_views)
        self.counters: _LRU = _LRU(max_sessions)  # session -> (pre counter, post counter)
        # (session, tool, input) -> ids of calls whose Pre came and Post not yet: a permission dialog
        # for that input makes their hook span wall-clock (Claude Code runs PreToolUse before it asks)
        self.pending: _LRU = _LRU(max_views)
        self.asked: _LRU = _LRU(max_views)  # ids of calls that waited on a permission dialog
        self.touched: str | None = None  # the id of the view the last input updated, if any

    # -- per input ---------------------------------------------------------------------------
    def apply(self, env: Envelope | FastEnvelope, data: Any, out: BatchOut,
              secrets: frozenset[str] | None = ALL) -> None:
        """Fold one decoded input: ``env`` and ``data`` are the pydantic models or their fast-path
        mirrors (:mod:`schemas.fast`), which have the same attributes."""
        t = env.type
        self.touched = None
        if t is EventType.HOOK_EVENT:
            stored = env.data
            if sz.SIZES_KEY in stored:  # the publisher's bookkeeping, not part of the payload
                stored = {k: v for k, v in stored.items() if k != sz.SIZES_KEY}
            if secrets is None or secrets:
                stored = redact_json(stored, secrets)
            out.hook_events.append(env if stored is env.data else env.model_copy(update={"data": stored}))
            self._hook(env, data, out, secrets)
        elif t is EventType.TOOL_USE:
            self._emit(self._tool_use(data, secrets), out)
        elif t is EventType.TOOL_RESULT:
            self._emit(self._tool_result(data), out)
        elif t is EventType.TOOL_CALL:
            self._emit(_redacted(data.model_dump(), secrets), out)
        elif t is EventType.USAGE:
            self._usage(data, out)
        elif t is EventType.MESSAGE:
            seen = out.messages.get(data.id)
            if seen is None or message_wins(data, seen):
                out.messages[data.id] = data
        elif t is EventType.FLUSH:
            assert isinstance(data, Flush)
            out.flushes.append(data.marker)
        # workflow events travel on their own topic and never reach this fold

    def _emit(self, view: dict[str, Any], out: BatchOut) -> None:
        key = view["id"]
        seen = self.views.get(key)
        merged = view if seen is None else tc.merge_tool_calls(seen, view)
        self.views.put(key, merged)
        out.tool_calls[key] = merged
        self.touched = key

    def _hook(self, env: Envelope | FastEnvelope, ev: HookEvent, out: BatchOut,
              secrets: frozenset[str] | None) -> None:
        name = ev.hook_event_name
        if name == ASKED and ev.tool_name is not None:
            for waiting in self.pending.get(_input_key(ev.session_id, ev.tool_name, ev.tool_input)) or ():
                self.asked.put(waiting, True)
            return
        if ev.tool_name is None or (name not in PRE and name not in POST):
            return
        # the payload's untyped fields, read from the payload itself: a HookEvent's extra fields are
        # exactly its keys that are not typed, and only untyped keys are read here
        extra = env.data
        tool_input = ev.tool_input
        sizes = sz.carried_sizes(extra)
        key = ev.call_key
        if not ev.tool_use_id and not key:
            pre, post = self.counters.get(ev.session_id) or (
                OrdinalCounter(redact_canonical), OrdinalCounter(redact_canonical))
            self.counters.put(ev.session_id, (pre, post))
            key = (pre if name in PRE else post).key(ev.session_id, ev.tool_name, tool_input)
        view: dict[str, Any] = {
            "id": tool_call_id(ev.tool_use_id, key),
            "tool_use_id": ev.tool_use_id,
            "call_key": None if ev.tool_use_id else key,
            "session_id": ev.session_id,
            "tool_name": ev.tool_name,
            "tool_input": tool_input,
            "command": tc.command_of(ev.tool_name, tool_input),
            "file_path": tc.file_path_of(ev.tool_name, tool_input),
            "input_bytes": sizes.get("input_bytes", sz.json_size(tool_input)),
            "source": "hook",
        }
        view = _redacted(view, secrets)
        if name in PRE:
            view.update(status="started", started_at=env.time, hook_pre_at=env.time)
            self._pre(view["id"], _input_key(ev.session_id, ev.tool_name, tool_input))
        else:
            view.update(hook_post_at=env.time)
            if self._asked(view["id"], _input_key(ev.session_id, ev.tool_name, tool_input)):
                view.update(permission_asked=True)
            response = sz.hook_response(extra, name)
            size = sizes.get("output_bytes")
            if size is None:
                size = sz.text_size(sz.output_text(response))
            view.update(
                status=tc.hook_status(response, name),
                ended_at=env.time,
                output_bytes=size,
                output_tokens_est=sz.estimate_tokens(size),
            )
        self._emit(view, out)

    def _pre(self, call: str, key: str) -> None:
        waiting = self.pending.get(key) or ()
        self.pending.put(key, (*waiting, call) if call not in waiting else waiting)

    def _asked(self, call: str, key: str) -> bool:
        """The call is done: whether a permission dialog was shown for it since its PreToolUse."""
        waiting = self.pending.get(key)
        if waiting and call in waiting:
            self.pending.put(key, tuple(c for c in waiting if c != call))
        return bool(self.asked.pop(call, None))

    def _tool_use(self, r: ToolUseRecord, secrets: frozenset[str] | None) -> dict[str, Any]:
        return _redacted({
            "id": r.tool_use_id,
            "tool_use_id": r.tool_use_id,
            "call_key": r.call_key,
            "session_id": r.session_id,
            "tool_name": r.tool_name,
            "tool_input": r.tool_input,
            "command": tc.command_of(r.tool_name, r.tool_input),
            "file_path": tc.file_path_of(r.tool_name, r.tool_input),
            "status": "started",
            "started_at": r.timestamp,
            "input_bytes": r.input_bytes if r.input_bytes is not None else sz.json_size(r.tool_input),
            "source": "transcript",
        }, secrets)

    def _tool_result(self, r: ToolResultRecord) -> dict[str, Any]:
        size = r.output_bytes if r.output_bytes is not None else sz.text_size(r.output_text)
        return {
            "id": r.tool_use_id,
            "tool_use_id": r.tool_use_id,
            "session_id": r.session_id,
            "status": "error" if r.is_error else "ok",
            "ended_at": r.timestamp,
            "output_bytes": size,
            "output_tokens_est": sz.estimate_tokens(size),
            "source": "transcript",
            "reported_ms": r.duration_ms,  # the tool's own run time, when it states one
        }

    def _usage(self, u: UsageRecord | FastUsage, out: BatchOut) -> None:
        if u.cost_usd is None and self.price is not None:
            cost = self.price(u)
            if cost is not None:
                u = u.model_copy(update={"cost_usd": cost})
        seen = out.usage.get(u.id)
        if seen is None or usage_wins(u, seen):
            out.usage[u.id] = u


def _input_key(session: str, tool: str | None, tool_input: Any) -> str:
    """A pending call's lookup key for a PermissionRequest: session, tool and the exact input."""
    return f"{session}\x00{input_digest(tool or '', tool_input, redact_canonical)}"


def _redacted(view: dict[str, Any], secrets: frozenset[str] | None) -> dict[str, Any]:
    """The view with secrets removed from the fields that carry content (sizes stay as measured)."""
    if secrets is not None and not secrets:
        return view
    for name in ("command", "file_path"):
        if isinstance(view.get(name), str):
            view[name] = redact_text(view[name], secrets)
    if view.get("tool_input") is not None:
        view["tool_input"] = redact_json(view["tool_input"], secrets)
    return view


def tool_call_model(view: dict[str, Any]) -> ToolCall:
    """A view as a ToolCall (fields a view never saw take their defaults; a merge of two views that
    both lacked a field holds None there, e.g. a tool_result delivered twice has no input_bytes)."""
    full = {"tool_use_id": None, "call_key": None, "tool_name": None, "status": "started", "input_bytes": 0,
            **{k: v for k, v in view.items() if v is not None}}
    return ToolCall.model_validate(full)


_TOOL_CALL_DEFAULTS: dict[str, Any] = {name: f.default for name, f in ToolCall.model_fields.items()
                                       if not f.is_required()}
_TOOL_CALL_FIELDS = tuple(ToolCall.model_fields)
# what a field that is None or absent in a view becomes in tool_call_model: its defaults, then the model's
_VIEW_DEFAULTS = {**_TOOL_CALL_DEFAULTS, "tool_use_id": None, "call_key": None, "tool_name": None,
                  "status": "started", "input_bytes": 0}
_encode_json = msgspec.json.Encoder().encode


def tool_call_json(view: dict[str, Any]) -> bytes:
    """The JSON of :func:`tool_call_model` of ``view`` without building the model: the same fields in
    the same order, with the same defaults. A view holds only ToolCall fields, of the types the
    model has (the fold builds them from validated inputs), so validating it again changes nothing;
    times are written as pydantic writes them (``...Z`` for UTC, the offset otherwise)."""
    get = view.get
    row: dict[str, Any] = {}
    for name in _TOOL_CALL_FIELDS:
        value = get(name)
        if value is None:
            if name not in _VIEW_DEFAULTS:
                raise ValueError(f"tool call view without {name}")
            value = _VIEW_DEFAULTS[name]
        row[name] = value
    return _encode_json(row)
