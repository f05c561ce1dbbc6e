"""The fixed overhead of a session broken down where the data allows: memory files and MCP tools.

Every API call of a session starts with the same prefix: the system prompt, the tool definitions (the
built-in tools and every MCP tool offered), the memory files (``CLAUDE.md`` and the like) and the first
messages. The usage records give its size (``agents.context.fixed_overhead``), not its parts. Two parts
can be told:

* **Memory files**, measured where the project folder is at hand (the session's ``cwd`` from its hook
  payloads exists on this machine): the files Claude Code loads at start, ``CLAUDE.md``,
  ``CLAUDE.local.md`` and ``.claude/CLAUDE.md`` in the ``cwd`` and each folder above it (not ``/``),
  and the user's ``~/.claude/CLAUDE.md``. Their size in bytes and estimated tokens (characters / the
  estimator's characters per token). ``@path`` imports inside them are not followed: a lower bound.
  :func:`memory_files` takes the reader as an argument, so the rule is tested on any folder tree.
* **MCP tools**: the ``mcp__server__tool`` names called, how often and the tokens of their outputs
  (from the tool calls), and the MCP servers the project configures (``.mcp.json`` in the ``cwd``,
  where at hand). The tools *offered* (their definitions, part of every call's prefix) are in neither
  transcripts nor hook payloads, so the offered-but-never-called count is not known (None), only the
  servers configured and never called.

``rest_tokens`` = the first prompt minus the memory files (None without a usage record or a measurement):
system prompt, tool definitions and the first messages together (an estimate: the memory files are
estimated, the prompt is measured).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

import orjson

from outloop.agents.context import Call

MEMORY_NAMES = ("CLAUDE.md", "CLAUDE.local.md", ".claude/CLAUDE.md")
MAX_MEMORY_BYTES = 1 << 20  # a memory file larger than this is counted by its size, not read

Reader = Callable[[str], bytes | None]  # the bytes of a file, None when there is none


def read_file(path: str) -> bytes | None:
    """The real reader: a regular file's first ``MAX_MEMORY_BYTES`` bytes, None when absent or unreadable."""
    try:
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read(MAX_MEMORY_BYTES)
    except OSError:
        return None


def memory_paths(cwd: str, home: str | None) -> list[str]:
    """The memory files Claude Code would load for a session started in ``cwd``, nearest first."""
    out: list[str] = []
    folder = PurePosixPath(cwd)
    while str(folder) != folder.anchor and str(folder) not in ("", "."):
        out += [str(folder / name) for name in MEMORY_NAMES]
        folder = folder.parent
    if home:
        out.append(str(PurePosixPath(home) / ".claude" / "CLAUDE.md"))
    return list(dict.fromkeys(out))


def memory_files(cwd: str, home: str | None, read: Reader, chars_per_token: float) -> list[dict[str, Any]]:
    """The memory files found for ``cwd``: path, bytes, estimated tokens."""
    found = []
    for path in memory_paths(cwd, home):
        data = read(path)
        if data is None:
            continue
        chars = len(data.decode("utf-8", "replace"))
        found.append({"path": path, "bytes": len(data), "tokens": math.ceil(chars / chars_per_token)})
    return found


def mcp_servers(cwd: str, read: Reader) -> list[str] | None:
    """The MCP servers the project's ``.mcp.json`` configures (None: no such file or not JSON)."""
    data = read(str(PurePosixPath(cwd) / ".mcp.json"))
    if data is None:
        return None
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    servers = parsed.get("mcpServers") if isinstance(parsed, dict) else None
    return sorted(str(k) for k in servers) if isinstance(servers, dict) else []


def mcp_server(tool_name: str) -> str | None:
    """``mcp__server__tool`` -> ``server``."""
    parts = tool_name.split("__")
    return parts[1] if len(parts) >= 3 and parts[0] == "mcp" and parts[1] else None


def overhead_row(session_id: str, calls: Iterable[Call], prefix_tokens: int,
                 memory: Mapping[str, Any] | None, cwd: str | None = None) -> dict[str, Any]:
    """The ``context_overhead`` row: ``memory`` is the session's measurement (cwd, files, servers,
    measured_at) or None when its project folder was not at hand; ``cwd`` the session's folder as its
    hook payloads name it (None: not known)."""
    mcp = [c for c in calls if c.status != "started" and mcp_server(c.tool_name) is not None]
    called = sorted({c.tool_name for c in mcp})
    servers_called = sorted({s for s in (mcp_server(t) for t in called) if s})
    files = list(memory["files"]) if memory else []
    mem_tokens = sum(int(f["tokens"]) for f in files) if memory else None
    configured = memory.get("servers") if memory else None
    return {
        "session_id": session_id, "cwd": memory["cwd"] if memory else cwd,
        "fixed_prefix_tokens": prefix_tokens, "memory_tokens": mem_tokens,
        "memory_files": orjson.dumps(files).decode() if memory else None,
        "rest_tokens": prefix_tokens - mem_tokens if mem_tokens is not None and prefix_tokens > 0 else None,
        "mcp_tools_called": orjson.dumps(called).decode(), "mcp_calls": len(mcp),
        "mcp_output_tokens": sum(c.tokens for c in mcp), "mcp_tools_offered": None,
        "mcp_servers_configured": orjson.dumps(configured).decode() if configured is not None else None,
        "mcp_servers_unused": (orjson.dumps(sorted(set(configured) - set(servers_called))).decode()
                               if configured is not None else None),
        "measured_at": memory["measured_at"] if memory else None,
    }
