"""Builders of output-topic records for the sink tests, and a Python reference of what the tables
must hold (built from ``agents.toolcalls.merge_tool_calls`` alone, independent of the SQL)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from outloop.agents.toolcalls import merge_tool_calls
from outloop.schemas.events import DeadLetter, Envelope, EventType, ToolCall, UsageRecord

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PREFIX = "t"


def clock() -> datetime:
    return datetime(2025, 6, 2, tzinfo=UTC)


def tool_view(id: str, **fields: Any) -> dict[str, Any]:
    base = {"id": id, "tool_use_id": None if id.startswith("syn:") else id, "call_key": None,
            "session_id": "s1", "tool_name": "Bash", "status": "started", "input_bytes": 0, "source": "hook"}
    return ToolCall.model_validate({**base, **fields}).model_dump()


def tool_msg(view: dict[str, Any]) -> tuple[str, bytes, bytes]:
    value = ToolCall.model_validate(view).model_dump_json().encode()
    return f"{PREFIX}.tool-calls", view["session_id"].encode(), value


def usage_msg(**fields: Any) -> tuple[str, bytes, bytes]:
    base = {"id": "msg_1:req_1", "session_id": "s1", "model": "claude-sonnet-4-5", "timestamp": T0,
            "input_tokens": 10, "output_tokens": 5}
    record = UsageRecord.model_validate({**base, **fields})
    return f"{PREFIX}.usage", record.session_id.encode(), record.model_dump_json().encode()


def envelope_msg(topic: str, type: EventType, id: str, subject: str, data: dict[str, Any],
                 time: datetime | None = T0) -> tuple[str, bytes, bytes]:
    env = Envelope(id=id, type=type, source="test", time=time, subject=subject, data=data)
    return f"{PREFIX}.{topic}", subject.encode(), env.model_dump_json().encode()


def hook_msg(id: str, **data: Any) -> tuple[str, bytes, bytes]:
    payload = {"session_id": "s1", "hook_event_name": "PreToolUse", "tool_name": "Bash",
               "tool_input": {"command": "ls"}, "tool_use_id": "toolu_1", **data}
    return envelope_msg("hook-events", EventType.HOOK_EVENT, id, payload["session_id"], payload)


def workflow_msgs(run_id: str = "run1") -> list[tuple[str, bytes, bytes]]:
    def at(seconds: int) -> str:
        return (T0 + timedelta(seconds=seconds)).isoformat()

    events = [
        (EventType.WORKFLOW_STARTED, {"workflow": "adw_plan", "session_id": "s1", "started_at": at(0)}),
        (EventType.WORKFLOW_PHASE_CHANGED, {"phase": "plan", "seq": 1, "at": at(5)}),
        (EventType.WORKFLOW_PHASE_CHANGED, {"phase": "build", "seq": 2, "at": at(9)}),
        (EventType.WORKFLOW_ENDED, {"status": "succeeded", "ended_at": at(180), "input_tokens": 100,
                                    "output_tokens": 40, "cost_usd": 0.25}),
    ]
    return [envelope_msg("workflow-runs", kind, f"{run_id}:{seq}", run_id, {"run_id": run_id, **data})
            for seq, (kind, data) in enumerate(events)]


def dead_letter_msg(raw: bytes, offset: int = 7) -> tuple[str, bytes | None, bytes]:
    dl = DeadLetter(id="dl:abc", topic=f"{PREFIX}.events", partition=0, offset=offset, key=None,
                    reason="not_json", detail="bad", raw=raw, at=T0)
    return f"{PREFIX}.dlq", None, dl.model_dump_json().encode()


def flush_msg(topic: str, marker: str, partition: int) -> tuple[str, None, bytes]:
    value = orjson.dumps({"control": "flush", "marker": marker, "partition": partition})
    return f"{PREFIX}.{topic}", None, value


def with_offsets(items: list[tuple[str, bytes | None, bytes]], partition: int = 0
                 ) -> list[tuple[str, int, int, bytes | None, bytes | None]]:
    """Messages as the consumer hands them over: consecutive offsets per topic."""
    next_offset: dict[str, int] = {}
    out = []
    for topic, key, value in items:
        offset = next_offset.get(topic, 0)
        next_offset[topic] = offset + 1
        out.append((topic, partition, offset, key, value))
    return out


def random_views(rng: random.Random, calls: int = 40, tag: str = "") -> list[dict[str, Any]]:
    """Partial views of ``calls`` tool calls: hook Pre/Post, transcript use/result, syn views."""
    views: list[dict[str, Any]] = []
    for n in range(calls):
        tid, key = f"toolu_{tag}{n:03d}", f"s1:{tag}digest{n}:0"
        cmd = {"command": f"pytest tests/{n % 5}", "timeout": n}
        start = T0 + timedelta(seconds=n, microseconds=rng.randrange(1_000_000))
        end = start + timedelta(milliseconds=rng.randrange(1, 90_000), microseconds=rng.randrange(1000))
        common = {"tool_name": "Bash", "tool_input": cmd, "command": cmd["command"], "input_bytes": 40 + n}
        kinds = rng.sample(["pre", "post", "use", "result", "syn_pre", "syn_post"], rng.randrange(1, 7))
        for kind in kinds:
            if kind == "pre":
                views.append(tool_view(tid, **common, started_at=start, hook_pre_at=start))
            elif kind == "post":
                views.append(tool_view(tid, **common, status=rng.choice(["ok", "error"]), ended_at=end,
                                       output_bytes=rng.randrange(5000),
                                       output_tokens_est=rng.randrange(1250), hook_post_at=end,
                                       permission_asked=rng.choice([None, None, True])))
            elif kind == "use":
                views.append(tool_view(tid, **common, call_key=key, started_at=start, source="transcript"))
            elif kind == "result":
                views.append(tool_view(tid, status="ok", ended_at=end - timedelta(milliseconds=3),
                                       output_bytes=rng.randrange(5000), source="transcript", tool_name=None,
                                       reported_ms=rng.choice([None, 7.0, 480.25])))  # the tool's own figure
            elif kind == "syn_pre":
                views.append(tool_view(f"syn:{key}", **common, call_key=key, started_at=start))
            else:
                views.append(tool_view(f"syn:{key}", **common, call_key=key, status="interrupted",
                                       ended_at=end + timedelta(milliseconds=1),
                                       duration_ms=rng.random() * 1000))
    return views


def expected_tool_calls(views: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What tool_calls must hold: every view of an id merged, then each syn row merged into the
    real row carrying its call_key (keeping the real id) and dropped."""
    rows: dict[str, dict[str, Any]] = {}
    for v in views:
        rows[v["id"]] = merge_tool_calls(rows[v["id"]], v) if v["id"] in rows else v
    real_by_key = {r["call_key"]: r["id"] for r in rows.values()
                   if not r["id"].startswith("syn:") and r["call_key"]}
    for syn_id in [i for i in rows if i.startswith("syn:")]:
        real = real_by_key.get(rows[syn_id]["call_key"])
        if real is not None:
            merged = merge_tool_calls(rows[real], rows.pop(syn_id))
            rows[real] = {**merged, "id": real}
    return rows
