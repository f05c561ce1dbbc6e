"""The sessions agent as it was before the fast path, the reference of ``test_sessions_equivalence``:
every input through the pydantic models (``streams.codec.decode_checked``), the fold as it was (the
``Pairing`` below is the former ``agents.pairing``, unchanged but for what the run times are measured
from: hook receive times, a permission dialog between them, the tool's own figure), every output
built and encoded as a pydantic model (``ToolCall`` for tool calls)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from outloop.agents import toolcalls as tc
from outloop.agents.pairing import usage_wins  # the tie rule is the product's; this oracle checks the fast path
from outloop.agents.sessions import (
    _CARRY_CONTENT,
    _NOTHING,
    Message,
    Record,
    SessionOutputs,
    flush_value,
    forwarded_reason,
)
from outloop.agents.sessions import (
    _ROUTING as ROUTING,
)
from outloop.agents.sessions import _redacted as redacted
from outloop.schemas import sizes as sz
from outloop.schemas.events import (
    Envelope,
    EventType,
    Flush,
    HookEvent,
    ToolCall,
    ToolResultRecord,
    ToolUseRecord,
    UsageRecord,
)
from outloop.schemas.ids import OrdinalCounter, input_digest, tool_call_id
from outloop.streams.codec import Decoded, Rejected, dead_letter, decode_checked, encode
from outloop.streams.redact import ALL, redact_canonical, redact_json, redact_text, scan

PRE = {"PreToolUse"}
POST = {"PostToolUse", "PostToolUseFailure"}


@dataclass
class BatchOut:
    """What one batch produces, deduplicated within the batch."""

    hook_events: list[Envelope] = field(default_factory=list)
    tool_calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    usage: dict[str, UsageRecord] = field(default_factory=dict)
    flushes: list[str] = field(default_factory=list)


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
        price: Callable[[UsageRecord], float | None] | None = None,
        max_views: int = 20_000,  # calls still open or recently seen; the sink merges the rest
        max_sessions: int = 10_000,
    ) -> None:
        self.price = price
        self.views: _LRU = _LRU(max_views)
        self.counters: _LRU = _LRU(max_sessions)  # session -> (pre counter, post counter)
        self.open: dict[str, list[str]] = {}  # (session, input digest) -> calls whose Post has not come
        self.asked: set[str] = set()  # calls a permission dialog was shown for while open

    # -- per input ---------------------------------------------------------------------------
    def apply(self, env: Envelope, data: Any, out: BatchOut, secrets: frozenset[str] | None = ALL) -> None:
        t = env.type
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

    def _hook(self, env: Envelope, ev: HookEvent, out: BatchOut, secrets: frozenset[str] | None) -> None:
        name = ev.hook_event_name
        digest = f"{ev.session_id}\x00{input_digest(ev.tool_name or '', ev.tool_input, redact_canonical)}"
        if name == "PermissionRequest" and ev.tool_name is not None:
            self.asked.update(self.open.get(digest, ()))
            return
        if ev.tool_name is None or (name not in PRE and name not in POST):
            return
        extra = ev.model_extra or {}
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
            if view["id"] not in self.open.setdefault(digest, []):
                self.open[digest].append(view["id"])
        else:
            if view["id"] in self.open.get(digest, ()):
                self.open[digest].remove(view["id"])
            if view["id"] in self.asked:
                self.asked.discard(view["id"])
                view.update(permission_asked=True)
            view.update(hook_post_at=env.time)
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
            "reported_ms": r.duration_ms,
        }

    def _usage(self, u: UsageRecord, out: BatchOut) -> None:
        if u.cost_usd is None and self.price is not None:
            cost = self.price(u)
            if cost is not None:
                u = u.model_copy(update={"cost_usd": cost})
        seen = out.usage.get(u.id)
        if seen is None or usage_wins(u, seen):
            out.usage[u.id] = u


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


def session_records(pairing: Pairing, messages: Iterable[Message], names: SessionOutputs, now: datetime,
                    stats: dict[str, int]) -> list[Record]:
    """The former ``emit_session_batch`` of ``agents.sessions``, collecting its sends in order."""
    out: list[Record] = []
    per_partition: dict[int, BatchOut] = {}

    def reject(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
               reason: Rejected) -> None:
        dl = dead_letter(value, reason, topic, partition, offset, key, now=now)
        out.append((names.dead_letters, key, encode(dl), partition))
        stats["dead_letters"] += 1

    def emit_partition(partition: int, batch: BatchOut) -> None:
        for env in batch.hook_events:
            out.append((names.hook_events, env.subject.encode(), encode(env), partition))
        for view in batch.tool_calls.values():
            call = tool_call_model(view)
            out.append((names.tool_calls, call.session_id.encode(), encode(call), partition))
        for usage in batch.usage.values():
            out.append((names.usage, usage.session_id.encode(), encode(usage), partition))
        for marker in batch.flushes:
            value = flush_value(marker, partition)
            for t in names.flushed():
                out.append((t, None, value, partition))

    for topic, partition, offset, key, value, headers in messages:
        result = decode_checked(value)
        forwarded = forwarded_reason(headers)
        if forwarded and isinstance(result, Decoded):
            result = Rejected(forwarded, "hook input the forwarder sent raw")
        if not isinstance(result, Decoded):
            reject(topic, partition, offset, key, value, result)
            continue
        if result.envelope.type.value.startswith("workflow."):
            reject(topic, partition, offset, key, value,
                   Rejected("wrong_topic", f"{result.envelope.type.value} belongs on the workflow topic"))
            continue
        if result.envelope.type in ROUTING:  # the router's records pass through (added with them)
            table = ROUTING[result.envelope.type]
            out.append((getattr(names, table), key, redacted(value or b"", result), partition))
            stats["events"] += 1
            continue
        batch = per_partition.setdefault(partition, BatchOut())
        kind = result.envelope.type
        secrets = scan(value or b"") if kind in _CARRY_CONTENT else _NOTHING
        try:
            pairing.apply(result.envelope, result.data, batch, secrets=secrets)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            reject(topic, partition, offset, key, value, Rejected("agent_error", f"{type(exc).__name__}: {exc}"[:500]))
            continue
        if result.envelope.type is EventType.FLUSH:
            emit_partition(partition, per_partition.pop(partition))
        stats["events"] += 1
    for partition, batch in per_partition.items():
        emit_partition(partition, batch)
    return out
