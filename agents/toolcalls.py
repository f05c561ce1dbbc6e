"""Pure helpers that turn tool inputs and outputs into :class:`schemas.ToolCall` fields, and the
merge rule that combines two partial views of one tool call.

The merge is commutative, associative and idempotent (a join on a small lattice per field), so the
final row never depends on the order or the number of deliveries. ``sinks`` mirrors it in SQL.
"""

from __future__ import annotations

from typing import Any

import orjson

FILE_TOOLS = {"Read", "Edit", "MultiEdit", "Write", "NotebookEdit", "NotebookRead"}
STATUS_RANK = {"started": 0, "ok": 1, "error": 2, "interrupted": 3}


def command_of(tool_name: str, tool_input: Any) -> str | None:
    """The Bash command string exactly as issued, else None."""
    if tool_name == "Bash" and isinstance(tool_input, dict):
        cmd = tool_input.get("command")
        return cmd if isinstance(cmd, str) else None
    return None


def file_path_of(tool_name: str, tool_input: Any) -> str | None:
    if not isinstance(tool_input, dict):
        return None
    if tool_name in FILE_TOOLS or tool_name.startswith("Notebook"):
        for key in ("file_path", "notebook_path", "path"):
            value = tool_input.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def hook_status(response: Any, event_name: str) -> str:
    if event_name == "PostToolUseFailure":
        return "error"
    if isinstance(response, dict):
        if response.get("interrupted") is True:
            return "interrupted"
        if response.get("is_error") is True or response.get("success") is False:
            return "error"
    return "ok"


# Where a tool call's run time (``run_ms``) comes from, as :func:`run_time` decides from the merged call:
# * tool-reported: the tool's own figure in the transcript's ``toolUseResult`` (``reported_ms``);
# * hook: PostToolUse minus PreToolUse receive times (``hook_post_at - hook_pre_at``);
# * hook-wallclock: both hook times, but Claude Code showed a permission dialog between them (a
#   PermissionRequest for the same input; it runs PreToolUse before it asks): no run time;
# * transcript-wallclock: only the transcript's times (tool_use record to tool_result record): a
#   wait for the user's permission, or behind other calls of the same turn, cannot be told apart:
#   no run time, ``duration_ms`` is wall-clock only.
DURATION_SOURCES = ("tool-reported", "hook", "hook-wallclock", "transcript-wallclock")


def run_time(call: dict[str, Any]) -> tuple[float | None, str | None]:
    """(run_ms, duration_source) of a merged call (:data:`DURATION_SOURCES`); (None, None) when no
    source says anything. A pure function of merged fields, so every path computes the same."""
    if call.get("reported_ms") is not None:
        return float(call["reported_ms"]), "tool-reported"
    pre, post = call.get("hook_pre_at"), call.get("hook_post_at")
    if pre is not None and post is not None:
        if call.get("permission_asked"):
            return None, "hook-wallclock"
        return max(0.0, (post - pre).total_seconds() * 1000.0), "hook"
    if call.get("ended_at") is not None and "transcript" in (call.get("source") or "").split("+"):
        return None, "transcript-wallclock"
    return None, None


def _least(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _greatest(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def merge_sources(a: str, b: str) -> str:
    if a == b:
        return a
    return "+".join(sorted(set(a.split("+")) | set(b.split("+"))))


def merge_tool_calls(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Combine two views (dicts of ToolCall fields) of the same call. Order-independent.

    Identity and text fields: the smallest non-null; status: the highest rank
    (started < ok < error < interrupted); started_at: earliest; ended_at: latest; sizes and
    duration: largest; source: the union; hook_pre_at: earliest; hook_post_at, reported_ms: latest,
    largest; permission_asked: true when any view says so."""
    out: dict[str, Any] = {}
    for field in ("id", "tool_use_id", "call_key", "session_id", "tool_name", "command", "file_path"):
        out[field] = _least(a.get(field), b.get(field))
    ia, ib = a.get("tool_input"), b.get("tool_input")
    if ia is None or ib is None:
        out["tool_input"] = ib if ia is None else ia
    else:
        out["tool_input"] = ia if orjson.dumps(ia, option=orjson.OPT_SORT_KEYS) <= orjson.dumps(
            ib, option=orjson.OPT_SORT_KEYS) else ib
    sa, sb = a.get("status", "started"), b.get("status", "started")
    out["status"] = sa if STATUS_RANK[sa] >= STATUS_RANK[sb] else sb
    out["started_at"] = _least(a.get("started_at"), b.get("started_at"))
    out["ended_at"] = _greatest(a.get("ended_at"), b.get("ended_at"))
    for field in ("duration_ms", "input_bytes", "output_bytes", "output_tokens_est"):
        out[field] = _greatest(a.get(field), b.get(field))
    if out["started_at"] is not None and out["ended_at"] is not None:
        derived = max(0.0, (out["ended_at"] - out["started_at"]).total_seconds() * 1000.0)
        out["duration_ms"] = _greatest(out["duration_ms"], derived)
    out["source"] = merge_sources(a.get("source", ""), b.get("source", ""))
    out["hook_pre_at"] = _least(a.get("hook_pre_at"), b.get("hook_pre_at"))
    for field in ("hook_post_at", "reported_ms", "permission_asked"):
        out[field] = _greatest(a.get(field), b.get(field))
    return out
