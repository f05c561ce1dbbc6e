"""One context's timeline from Claude Code transcript records: the distinct API calls in order, the tool
steps with their recorded outputs, and the compactions. Pure: records in, timeline out.

Savings, fidelity and the estimator's calibration all need the same facts: which API call first saw a
tool output (it is written to the cache there), how many later calls re-read it before a compaction (the
*carry*), how large the context was at each call, and what the agent did next. A context is one
transcript file: a main session, or a sub-agent file (``agent-*.jsonl``, which shares the parent's
``sessionId`` but has a context of its own).

Records are taken in file order and deduplicated by ``uuid`` (a resumed session repeats records); one
API response written as several records (one per content block, growing ``output_tokens``) is one call
whose usage is the record with the largest total.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from outloop.schemas.sizes import output_text

TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
_EXIT = re.compile(r"\AExit code (\d+)\b")
TEXT_CAP = 20_000  # characters of assistant text kept per call (what fidelity looks for in messages)


@dataclass(slots=True)
class ApiCall:
    """One distinct API response (``message.id:requestId``)."""

    key: str
    model: str | None
    timestamp: str | None
    usage: dict[str, int]
    cache_5m: int | None = None
    cache_1h: int | None = None
    tool_use_ids: list[str] = field(default_factory=list)
    text: str = ""

    @property
    def context_tokens(self) -> int:
        """Tokens the call read as its prompt: fresh input, cache reads and cache writes."""
        u = self.usage
        return u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]

    @property
    def total_tokens(self) -> int:
        return sum(self.usage.values())

    def usage_record(self) -> dict[str, Any]:
        """The call's usage in the shape the price table reads."""
        return {"model": self.model, **self.usage, "cache_creation_5m_tokens": self.cache_5m,
                "cache_creation_1h_tokens": self.cache_1h}


@dataclass(slots=True)
class ToolStep:
    """One tool call and its recorded result. ``seen_by`` is the index of the first API call whose
    prompt held the result (None when no later call came: the session ended)."""

    tool_use_id: str
    tool_name: str
    tool_input: dict[str, Any]
    issued_by: int
    output: str | None = None
    is_error: bool = False
    exit_code: int | None = None
    seen_by: int | None = None


@dataclass
class Timeline:
    session_id: str
    context_id: str
    calls: list[ApiCall] = field(default_factory=list)
    steps: list[ToolStep] = field(default_factory=list)
    compactions: list[int] = field(default_factory=list)  # index of the first call after each boundary
    added_chars: dict[int, int] = field(default_factory=dict)  # call index -> tool-result chars added before it

    def segment_end(self, index: int) -> int:
        """The index one past the last call that still re-reads what call ``index`` saw."""
        return next((c for c in self.compactions if c > index), len(self.calls))

    def carry(self, step: ToolStep) -> int:
        """API calls whose prompt held the step's output: from the first that saw it to the next compaction."""
        if step.seen_by is None:
            return 0
        return self.segment_end(step.seen_by) - step.seen_by


def _usage(raw: Any) -> dict[str, int] | None:
    if not isinstance(raw, Mapping):
        return None
    out = {}
    for kind in TOKEN_KINDS:
        value = raw.get(kind) or 0
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return None
        out[kind] = value
    return out


class TimelineBuilder:
    """Builds one context's timeline record by record: :func:`build_timeline` feeds it a whole file, the
    live measurer (``outloop.router.follow``) each new piece of a growing one. Records before the first
    one with a ``sessionId`` are skipped. ``late`` counts the records of an API call that was not the
    last one any more (Claude Code writes a response's records together; a later one could change what
    an earlier call said)."""

    def __init__(self, context_id: str) -> None:
        self.t = Timeline("", context_id)
        self.started = False
        self.by_key: dict[str, int] = {}
        self.by_tool: dict[str, ToolStep] = {}
        self.uuids: set[str] = set()
        self.pending: list[ToolStep] = []  # results recorded since the last call
        self.late = 0

    def add(self, rec: Any) -> None:
        """Take the next record of the file."""
        if not isinstance(rec, Mapping):
            return
        if not self.started:
            sid = rec.get("sessionId")
            if not isinstance(sid, str):
                return
            self.t.session_id, self.started = sid, True
        self.record(rec)

    def assistant(self, rec: Mapping[str, Any]) -> None:
        msg = rec.get("message")
        if not isinstance(msg, Mapping) or msg.get("model") == "<synthetic>":
            return
        usage = _usage(msg.get("usage"))
        if usage is None or not msg.get("id"):
            return
        key = f"{msg['id']}:{rec.get('requestId') or ''}"
        index = self.by_key.get(key)
        if index is None:
            index = self.by_key[key] = len(self.t.calls)
            model = msg.get("model")
            self.t.calls.append(ApiCall(key, sys.intern(model) if isinstance(model, str) else model,
                                        rec.get("timestamp"), usage))
            for step in self.pending:
                step.seen_by = index
            self.pending = []
        elif index != len(self.t.calls) - 1:
            self.late += 1
        call = self.t.calls[index]
        if sum(usage.values()) > call.total_tokens:
            call.usage = usage
        cc = msg["usage"].get("cache_creation") if isinstance(msg["usage"], Mapping) else None
        if isinstance(cc, Mapping):
            call.cache_5m = cc.get("ephemeral_5m_input_tokens")
            call.cache_1h = cc.get("ephemeral_1h_input_tokens")
        for block in msg.get("content") or ():
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "tool_use" and block.get("id") and block["id"] not in self.by_tool:
                raw = block.get("input")
                inp: dict[str, Any] = raw if isinstance(raw, dict) else {}
                step = ToolStep(block["id"], sys.intern(str(block.get("name") or "")), inp, index)
                self.by_tool[block["id"]] = step
                self.t.steps.append(step)
                call.tool_use_ids.append(block["id"])
            elif block.get("type") == "text" and isinstance(block.get("text"), str) and len(call.text) < TEXT_CAP:
                call.text = (call.text + "\n" + block["text"])[:TEXT_CAP]

    def user(self, rec: Mapping[str, Any]) -> None:
        msg = rec.get("message")
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if not isinstance(content, list):
            return
        for block in content:
            if not isinstance(block, Mapping) or block.get("type") != "tool_result":
                continue
            step = self.by_tool.get(str(block.get("tool_use_id")))
            if step is None or step.output is not None:
                continue  # an orphan result (its tool_use is in an earlier file) or a repeat
            step.output = output_text(block.get("content"))
            step.is_error = block.get("is_error") is True
            m = _EXIT.match(step.output)
            step.exit_code = int(m.group(1)) if m else (None if step.is_error else 0)
            self.pending.append(step)
            nxt = len(self.t.calls)
            self.t.added_chars[nxt] = self.t.added_chars.get(nxt, 0) + len(step.output)

    def record(self, rec: Mapping[str, Any]) -> None:
        uuid = rec.get("uuid")
        if isinstance(uuid, str):
            if uuid in self.uuids:
                return
            self.uuids.add(uuid)
        kind = rec.get("type")
        if kind == "assistant":
            self.assistant(rec)
        elif kind == "user":
            self.user(rec)
        elif kind == "system" and rec.get("subtype") == "compact_boundary":
            self.t.compactions.append(len(self.t.calls))


def build_timeline(records: Iterable[Mapping[str, Any]], context_id: str) -> Timeline:
    """The timeline of one transcript file's records (in file order)."""
    builder = TimelineBuilder(context_id)
    for rec in records:
        builder.add(rec)
    return builder.t
