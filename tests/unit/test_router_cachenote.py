"""The cache-break note end to end behind the real hook shim: a real Claude Code PreToolUse payload whose
``transcript_path`` is a real transcript (3cfce0ff, cut right after an API call that rebuilt a large cache
after a 22-minute pause; its times moved so that the call was made 2 s ago), the router answering over
its socket. Off by default: nothing printed. On: the first PreToolUse after the pause carries the one-line
``additionalContext`` note (never a deny: the tool call goes ahead) and the next one does not; a missing
transcript adds nothing (fails open)."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from outloop.agents.cachenote import main_calls
from outloop.agents.context import cache_breaks
from outloop.agents.pricing import PriceTable
from outloop.router.component import ping
from tests.conftest import traces_dir
from tests.unit.test_router_server import Running

SOURCE = "3cfce0ff-0725-47be-a572-f8af8122b71e"


def _running(tmp_path: Path, rules: dict[str, Any]) -> Iterator[Running]:
    r = Running(tmp_path / "h", rules)
    r.recorder.start()
    r.server.bind()
    thread = threading.Thread(target=r.server.serve, daemon=True)
    thread.start()
    assert ping(r.server.path)
    yield r
    r.server.close()
    thread.join(5)
    r.recorder.stop()


@pytest.fixture
def transcript(tmp_path: Path) -> tuple[Path, int]:
    """The real transcript up to its first idle cache break, moved in time to end 2 s ago; the break's
    cache write (tokens)."""
    src = next((traces_dir() / "claude-code-transcripts").rglob(f"{SOURCE}.jsonl"))
    lines = src.read_bytes().split(b"\n")
    apis, _ = main_calls(lines)
    brk = next(b for b in cache_breaks(SOURCE, [a for a in apis if a.at], [], PriceTable.default())
               if b.cause == "idle")
    assert brk.at is not None and brk.tokens >= 20_000
    cut = max(i for i, line in enumerate(lines) if brk.usage_id.split(":")[0].encode() in line) + 1
    shift = datetime.now(UTC) - timedelta(seconds=2) - brk.at
    out = []
    for line in lines[:cut]:
        if not line.strip():
            continue
        rec = orjson.loads(line)
        if isinstance(rec.get("timestamp"), str):
            at = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")) + shift
            rec["timestamp"] = at.isoformat().replace("+00:00", "Z")
        out.append(orjson.dumps(rec))
    path = tmp_path / "projects" / f"{SOURCE}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n".join(out) + b"\n")
    return path, brk.tokens


def _pre(transcript: Path, tid: str) -> bytes:
    """A real captured Bash PreToolUse payload, made to belong to the transcript's session."""
    root = traces_dir() / "claude-code-hooks" / "templar@a46211b7"
    pre = copy.deepcopy(next(p for p in json.loads((root / "pre_tool_use.json").read_text())
                             if p.get("tool_name") == "Bash"))
    pre.update(session_id=SOURCE, transcript_path=str(transcript), tool_use_id=tid)
    return json.dumps(pre).encode()


def _decision(running: Running, tid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        found = [d["data"] for d in running.decisions(0, timeout=0) if d["data"]["tool_use_id"] == tid]
        if found or time.monotonic() > deadline:
            assert found, f"no decision recorded for {tid}"
            return found[0]
        time.sleep(0.02)


def test_off_by_default_nothing_is_added(tmp_path: Path, transcript: tuple[Path, int]) -> None:
    for running in _running(tmp_path, {}):
        proc, _ = running.shim(_pre(transcript[0], "toolu_c0"))
        assert (proc.returncode, proc.stdout) == (0, b"")
        assert "cache break" not in _decision(running, "toolu_c0")["reason"]


def test_the_first_call_after_the_pause_gets_the_note_once(tmp_path: Path, transcript: tuple[Path, int]) -> None:
    path, tokens = transcript
    for running in _running(tmp_path, {"cache_note": True}):
        proc, _ = running.shim(_pre(path, "toolu_c1"))
        assert proc.returncode == 0
        out = json.loads(proc.stdout)["hookSpecificOutput"]
        assert out["hookEventName"] == "PreToolUse" and "permissionDecision" not in out  # the call goes ahead
        note = out["additionalContext"]
        assert "\n" not in note and f"~{tokens:,} tokens" in note and "pause" in note and "$" in note
        first = _decision(running, "toolu_c1")
        assert first["reason"].endswith("cache break note added") and first["latency_ms"] < 150
        again, _ = running.shim(_pre(path, "toolu_c2"))
        assert (again.returncode, again.stdout) == (0, b"")  # one note per pause


def test_a_large_threshold_or_a_missing_transcript_adds_nothing(tmp_path: Path,
                                                                  transcript: tuple[Path, int]) -> None:
    path, tokens = transcript
    for running in _running(tmp_path, {"cache_note": True, "cache_note_min_tokens": 10 * tokens}):
        proc, _ = running.shim(_pre(path, "toolu_c3"))
        assert (proc.returncode, proc.stdout) == (0, b"")
    for running in _running(tmp_path / "b", {"cache_note": True}):
        proc, _ = running.shim(_pre(path.with_name("gone.jsonl"), "toolu_c4"))
        assert (proc.returncode, proc.stdout) == (0, b"")
        assert "cache break" not in _decision(running, "toolu_c4")["reason"]
