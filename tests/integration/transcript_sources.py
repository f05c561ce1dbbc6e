"""Transcript lines for the tailer's tests, taken at test time: real Claude Code transcripts of
traces-dev when ``../shared`` is beside the checkout, else the project's generated sample. And what a
set of transcript versions must leave in DuckDB, computed straight from the files by the importer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from outloop.sample import write_sample
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import iter_paths
from tests.conftest import TRACES

TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def source_transcripts(tmp: Path, count: int) -> list[list[bytes]]:
    """The lines (newline kept) of ``count`` main session transcripts that hold usage, smallest first."""
    folder = TRACES / "claude-code-transcripts"
    if not folder.is_dir():
        folder = tmp / "sample"
        write_sample(folder)
    files = sorted((p for p in folder.rglob("*.jsonl") if not p.name.startswith("agent-")),
                   key=lambda p: (p.stat().st_size, p.name))
    out = []
    for path in files:
        lines = path.read_bytes().splitlines(keepends=True)
        if any(b'"usage"' in line for line in lines) and any(b'"tool_use"' in line for line in lines):
            out.append(lines)
        if len(out) == count:
            return out
    raise AssertionError(f"fewer than {count} transcripts with usage and tool uses under {folder}")


def expected_rows(versions: Path) -> dict[str, Any]:
    """Row counts and token sums the transcripts under ``versions`` must give, by the importer."""
    stats = ImportStats()
    envs = list(iter_paths([versions], stats, messages=True))
    calls = {e.data["tool_use_id"] for e in envs if e.type in ("transcript.tool_use", "transcript.tool_result")}
    usage: dict[str, dict[str, Any]] = {}
    for e in envs:
        if e.type == "usage.record" and (e.id not in usage or _total(e.data) > _total(usage[e.id])):
            usage[e.id] = e.data
    messages = {e.id for e in envs if e.type == "transcript.message"}
    return {"tool_calls": len(calls), "usage": len(usage), "api_messages": len(messages),
            "tokens": {k: sum(u[k] for u in usage.values()) for k in TOKENS}}


def _total(u: dict[str, Any]) -> int:
    return sum(u[k] for k in TOKENS)


def stored_rows(query: Any) -> dict[str, Any]:
    """The same figures from DuckDB; ``query(sql)`` returns rows."""
    counts = {t: int(query(f"SELECT count(*) FROM {t}")[0][0]) for t in ("tool_calls", "usage", "api_messages")}
    sums = query("SELECT " + ", ".join(f"coalesce(sum({k}), 0)" for k in TOKENS) + " FROM usage")[0]
    return {**counts, "tokens": {k: int(v) for k, v in zip(TOKENS, sums, strict=True)}}
