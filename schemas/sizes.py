"""Sizes and token estimates of tool inputs and outputs, as every layer measures them: the publisher
(which records the original sizes of what it redacts), the importers and the sessions agent."""

from __future__ import annotations

import math
from typing import Any

import orjson

BYTES_PER_TOKEN = 4.0  # rough size of one token of tool output; documented in the README


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
