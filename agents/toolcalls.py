"""Pure helpers that turn tool inputs and outputs into :class:`schemas.ToolCall` fields, and the
merge rule that combines two partial views of one tool call.

The merge is commutative, associative and idempotent (a join on a small lattice per field), so the
final row never depends on the order or the number of deliveries. ``sinks`` mirrors it in SQL.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

FILE_TOOLS = {"Read", "Edit", "MultiEdit", "Write", "NotebookEdit", "NotebookRead"}
STATUS_RANK = {"started": 0, "ok": 1, "error": 2, "interrupted": 3}
BYTES_PER_TOKEN = 4.0  # rough size of one token of tool output; documented in the README


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


def json_size(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(repr(value).encode())


def output_text(response: Any) -> str:
    """What a tool handed back to the model, as text, from a hook ``tool_response`` or a transcript
    ``tool_result.content`` (string or list of content blocks)."""
    if response is None:
        return ""
    if isinstance(response, str):
        return response
    if isinstance(response, list):
        parts: list[str] = []
        for block in response:
            if isinstance(block, dict):
                if isinstance(block.get("text"), str):
                    parts.append(block["text"])
                elif block.get("type") == "image":
                    continue
                else:
                    parts.append(output_text(block))
            else:
                parts.append(output_text(block))
        return "\n".join(p for p in parts if p)
    if isinstance(response, dict):
        if "stdout" in response or "stderr" in response:  # Bash
            out = response.get("stdout") or ""
            err = response.get("stderr") or ""
            return f"{out}\n{err}" if out and err else (out or err)
        file = response.get("file")
        if isinstance(file, dict) and isinstance(file.get("content"), str):  # Read
            return str(file["content"])
        if isinstance(response.get("content"), str | list):
            return output_text(response["content"])
        if isinstance(response.get("filenames"), list):  # Glob / Grep (files mode)
            return "\n".join(str(f) for f in response["filenames"])
        return orjson.dumps(response).decode()
    return str(response)


def text_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


SIZES_KEY = "outloop_sizes"  # hook payload field the publisher adds when it redacted the payload


def hook_response(payload: Any, event_name: str | None = None) -> Any:
    """What a Post hook payload (a dict, or a HookEvent's extra fields) says the tool returned."""
    response = payload.get("tool_response", payload.get("tool_result"))
    if response is None and (event_name or payload.get("hook_event_name")) == "PostToolUseFailure":
        response = payload.get("error")
    return response


def hook_sizes(payload: dict[str, Any]) -> dict[str, int]:
    """Input and output sizes of a hook payload as the sessions agent measures them."""
    return {"input_bytes": json_size(payload.get("tool_input")),
            "output_bytes": text_size(output_text(hook_response(payload)))}


def carried_sizes(payload: Any) -> dict[str, int]:
    """The original sizes a redacted hook payload carries (:data:`SIZES_KEY`), the valid ones only."""
    sizes = payload.get(SIZES_KEY) if isinstance(payload, dict) else None
    if not isinstance(sizes, dict):
        return {}
    return {k: v for k, v in sizes.items() if k in ("input_bytes", "output_bytes")
            and isinstance(v, int) and not isinstance(v, bool) and v >= 0}


def estimate_tokens(text_bytes: int) -> int:
    """Output-token estimate of a tool output of ``text_bytes`` bytes (ceil(bytes / 4))."""
    return int(math.ceil(text_bytes / BYTES_PER_TOKEN)) if text_bytes > 0 else 0


def hook_status(response: Any, event_name: str) -> str:
    if event_name == "PostToolUseFailure":
        return "error"
    if isinstance(response, dict):
        if response.get("interrupted") is True:
            return "interrupted"
        if response.get("is_error") is True or response.get("success") is False:
            return "error"
    return "ok"


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
    duration: largest; source: the union."""
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
    return out
