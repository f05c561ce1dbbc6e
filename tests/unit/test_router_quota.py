"""The quota's part of the PreToolUse answer, end to end: real Claude Code payloads on the real hook
shim, the router answering from the routing snapshot that holds the latest throttle decision."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outloop.router.component import ping
from tests.unit.test_router_server import Running, claude_payload


def _quota(level: str, minutes_ago: float = 10) -> dict[str, object]:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"at": at.isoformat(), "level": level, "action": "warn", "window": "five_hour",
            "reason": f"five_hour window at {'88' if level == 'high' else '97'}% (official)"}


def start(home: Path, quota: dict[str, object]) -> Running:
    home.mkdir(parents=True)
    (home / "db.routing.json").write_text(json.dumps({"patterns": {}, "rules": {}, "quota": quota}))
    r = Running(home, {"rules": {"pytest": {"mode": "enforce", "threshold": 0}}})
    r.recorder.start()
    r.server.bind()
    threading.Thread(target=r.server.serve, daemon=True).start()
    assert ping(r.server.path)
    return r


@pytest.fixture
def stop() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        r.server.close()
        r.recorder.stop()


def task_payload(tool_use_id: str) -> bytes:
    return json.dumps({"session_id": "9d2e-sess", "transcript_path": "/home/u/.claude/projects/-repo/9d2e.jsonl",
                       "cwd": "/repo", "permission_mode": "default", "hook_event_name": "PreToolUse",
                       "tool_name": "Task", "tool_use_id": tool_use_id,
                       "tool_input": {"description": "Explore", "prompt": "Find the config loader",
                                      "subagent_type": "Explore"}}).encode()


def test_high_risk_warns_once_per_session_beside_the_routing_answer(tmp_path: Path, stop: list[Running]) -> None:
    r = start(tmp_path / "h", _quota("high"))
    stop.append(r)
    first, _ = r.shim(claude_payload("PreToolUse", "ls -la", "toolu_q1"))
    out = json.loads(first.stdout)["hookSpecificOutput"]
    assert out["additionalContext"].startswith("outloop quota: high - five_hour window at 88% (official)")
    second, _ = r.shim(claude_payload("PreToolUse", "ls -la", "toolu_q2"))
    assert (second.returncode, second.stdout) == (0, b"")  # warned once for this level
    rewrite, _ = r.shim(claude_payload("PreToolUse", "pytest -q", "toolu_q3", session="other-sess"))
    spec = json.loads(rewrite.stdout)["hookSpecificOutput"]  # another session: warned, and still routed
    assert "--outloop-run" in spec["updatedInput"]["command"] and spec["additionalContext"].startswith("outloop")
    records = {d["data"]["tool_use_id"]: d["data"] for d in r.decisions(3)}
    assert records["toolu_q1"]["answered"] and "quota high" in records["toolu_q1"]["reason"]
    assert not records["toolu_q2"]["answered"]


def test_critical_denies_expensive_tools_only_when_configured(tmp_path: Path, stop: list[Running],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    off = start(tmp_path / "off", _quota("critical"))
    stop.append(off)
    proc, _ = off.shim(task_payload("toolu_t1"))
    assert "permissionDecision" not in json.loads(proc.stdout)["hookSpecificOutput"]  # warned, not denied
    monkeypatch.setenv("OUTLOOP_QUOTA_DENY", "1")
    on = start(tmp_path / "on", _quota("critical"))
    stop.append(on)
    denied, _ = on.shim(task_payload("toolu_t2"))
    spec = json.loads(denied.stdout)["hookSpecificOutput"]
    assert spec["permissionDecision"] == "deny" and "critical" in spec["permissionDecisionReason"]
    (record,) = on.decisions(1)
    assert (record["data"]["rule"], record["data"]["action"], record["data"]["answered"]) == ("quota", "deny", True)
    stale = start(tmp_path / "stale", _quota("critical", minutes_ago=6 * 60))
    stop.append(stale)
    t0 = time.monotonic()
    late, _ = stale.shim(task_payload("toolu_t3"))
    assert (late.returncode, late.stdout) == (0, b"") and time.monotonic() - t0 < 10  # an old decision: nothing
