"""A direct computation over transcript files, written independently of the importers, to check
what the pipeline materializes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Truth:
    tool_use_ids: set[str] = field(default_factory=set)
    usage_ids: set[str] = field(default_factory=set)
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    damaged_lines: int = 0


def _records(path: Path, truth: Truth) -> list[dict]:
    if path.name == "chat.json":
        data = json.loads(path.read_text())
        return [r for r in data if isinstance(r, dict)]
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            truth.damaged_lines += 1
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def transcript_truth(root: Path) -> Truth:
    truth = Truth()
    best: dict[str, tuple[int, int, int, int]] = {}
    files = sorted(root.rglob("*.jsonl")) + sorted(root.rglob("chat.json"))
    for path in files:
        for rec in _records(path, truth):
            if rec.get("type") != "assistant":
                continue
            msg = rec.get("message")
            if not isinstance(msg, dict):
                continue
            for block in msg.get("content") or []:
                if isinstance(block, dict) and block.get("type") == "tool_use" and block.get("id"):
                    truth.tool_use_ids.add(block["id"])
            usage = msg.get("usage")
            if not isinstance(usage, dict) or not msg.get("id") or msg.get("model") == "<synthetic>":
                continue
            key = f"{msg['id']}:{rec.get('requestId') or ''}"
            row = (int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0),
                   int(usage.get("cache_read_input_tokens") or 0),
                   int(usage.get("cache_creation_input_tokens") or 0))
            if key not in best or sum(row) > sum(best[key]):
                best[key] = row
    truth.usage_ids = set(best)
    for inp, out, cr, cc in best.values():
        truth.input += inp
        truth.output += out
        truth.cache_read += cr
        truth.cache_creation += cc
    return truth
