"""Routing end to end, as a user runs it: `outloop up` (broker, worker, forwarder, router), the real
hook shim fed a Claude Code PreToolUse payload for `pytest -q` in a small real project with one
failing test, `outloop routes`, `outloop query`, Ctrl-C.

* shadow (the default): the hook prints nothing, the decision reaches DuckDB, the rules reach
  ``routing_rules`` and ``adw_tools``;
* `outloop routes mode pytest enforce`: within seconds the hook answers ``updatedInput``; running
  the updated command exits 1 like the raw one and prints the failing test's id, file:line and
  assertion message in a few lines, and the full log exists (needs the runner, outloop/runner/main.py);
* the agent runs the updated command and its transcript reaches the projects folder: the tailer
  measures the run from the runner's log (fidelity, net saving), and the decision's row in
  ``routing_decisions`` and ``cost_savings_log`` hold the measurement; `outloop savings --json` shows it;
* `outloop up` stopped: the hook answers nothing, within the budget.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import psutil
import pytest

from outloop.runner.rewrite import runner_path
from outloop.streams.broker import free_port
from outloop.streams.shim import hook_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTLOOP = str(Path(sys.executable).with_name("outloop"))
FAILING = '''def add(a, b):
    return a + b


def test_adds():
    assert add(1, 1) == 2


def test_adds_wrong():
    assert add(2, 2) == 5, "two and two"
'''


def _payload(project: Path, tool_use_id: str) -> bytes:
    return json.dumps({
        "session_id": "e2e-routing-1", "transcript_path": "/home/u/.claude/projects/-p/e2e-routing-1.jsonl",
        "cwd": str(project), "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": "Bash",
        "tool_input": {"command": "pytest -q", "description": "Run the tests"}, "tool_use_id": tool_use_id,
    }).encode()


def _query(env: dict[str, str], sql: str) -> list[dict[str, object]]:
    q = subprocess.run([OUTLOOP, "query", "--format", "json", sql], env=env, capture_output=True, timeout=30)
    return orjson.loads(q.stdout) if q.returncode == 0 and q.stdout.strip() else []


def _until(check, timeout: float, every: float = 0.3):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def test_routing_shadow_enforce_and_router_down(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "test_calc.py").write_text(FAILING)
    home = tmp_path / "h"
    home.mkdir()
    (home / "routes.json").write_text(json.dumps({"rules": {"pytest": {"threshold": 0}}}))  # no pattern history yet
    projects = tmp_path / "projects" / "-proj"
    projects.mkdir(parents=True)
    port = free_port()
    env = {**os.environ, "OUTLOOP_HOME": str(home), "OUTLOOP_HTTP_PORT": str(port), "OUTLOOP_APP_ID": f"rt-{port}",
           "OUTLOOP_PROJECTS": str(projects.parent)}
    for name in ("OUTLOOP_BROKER", "OUTLOOP_DB", "OUTLOOP_SPOOL", "OUTLOOP_ROUTES", "OUTLOOP_ROUTER_SOCKET"):
        env.pop(name, None)
    up = subprocess.Popen([OUTLOOP, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    said: list[bytes] = []
    threading.Thread(target=lambda: said.extend(iter(up.stderr.readline, b"")) if up.stderr else None,
                     daemon=True).start()

    def hook(tool_use_id: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(hook_command(), shell=True, input=_payload(project, tool_use_id), env=env,
                              capture_output=True, timeout=10, cwd=project)

    try:
        assert _until(lambda: b"outloop is up" in b"".join(said), 90), b"".join(said).decode(errors="replace")
        shadow = hook("toolu_e2e_shadow")
        assert (shadow.returncode, shadow.stdout) == (0, b"")
        rows = _until(lambda: _query(env, "SELECT mode, action, rule, kind, answered FROM routing_decisions "
                                          "WHERE tool_use_id = 'toolu_e2e_shadow'"), 60)
        assert rows == [{"mode": "shadow", "action": "rewrite", "rule": "pytest", "kind": "structured",
                         "answered": False}]
        rule_rows = _until(lambda: _query(env, "SELECT name, mode FROM routing_rules WHERE name = 'pytest'"), 30)
        assert rule_rows == [{"name": "pytest", "mode": "shadow"}]
        assert _query(env, "SELECT count(*) AS n FROM adw_tools WHERE name = 'pytest'") == [{"n": 1}]

        changed = subprocess.run([OUTLOOP, "routes", "mode", "pytest", "enforce"], env=env, capture_output=True,
                                 timeout=30)
        assert changed.returncode == 0, changed.stderr
        t0 = time.monotonic()
        enforced = _until(lambda: hook("toolu_e2e_enforce").stdout, 10, every=0.1)
        took = time.monotonic() - t0
        assert enforced and took < 5, took
        answer = json.loads(enforced)["hookSpecificOutput"]
        assert answer["permissionDecision"] == "allow"
        command = answer["updatedInput"]["command"]
        assert "--outloop-run" in command and "pytest -q" in shlex.split(command)
        assert _until(lambda: _query(env, "SELECT mode FROM routing_rules WHERE name = 'pytest'")
                      == [{"mode": "enforce"}], 30)
        printed, log = _run_rewritten(command, project, home)
        _measured_live(env, projects / "e2e-routing-1.jsonl", printed, log)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(up.pid).children(recursive=True):
                    child.kill()
                up.kill()
                up.wait()
    t0 = time.monotonic()
    down = hook("toolu_e2e_down")  # the router went with `outloop up`
    assert (down.returncode, down.stdout) == (0, b"")
    assert time.monotonic() - t0 < 1.0


def _run_rewritten(command: str, project: Path, home: Path) -> tuple[str, Path]:
    """Run the updated command as the agent's Bash tool would; returns what it printed and its log."""
    raw = subprocess.run(["bash", "-c", "pytest -q"], cwd=project, capture_output=True, timeout=120,
                         env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    if not Path(runner_path()).exists():
        pytest.skip("the runner (outloop/runner/main.py) is not in this tree yet: the rewritten command cannot run")
    routed = subprocess.run(["bash", "-c", command], cwd=project, capture_output=True, timeout=120,
                            env={**os.environ, "OUTLOOP_HOME": str(home),
                                 "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert routed.returncode == raw.returncode == 1
    text = routed.stdout.decode(errors="replace") + routed.stderr.decode(errors="replace")
    assert "test_calc.py::test_adds_wrong" in text
    assert "test_calc.py:10" in text
    assert "two and two" in text
    assert len(text.splitlines()) <= 25, text
    logs = list((home / "runs").glob("*.log"))
    assert logs and "test_adds_wrong" in logs[0].read_text(errors="replace")
    return text, logs[0]


def _api(mid: str, ctx: int, tools: list[tuple[str, str, dict[str, str]]], text: str = "") -> dict[str, object]:
    content: list[dict[str, object]] = [{"type": "tool_use", "id": t, "name": n, "input": i} for t, n, i in tools]
    content += [{"type": "text", "text": text}] if text else []
    return {"type": "assistant", "sessionId": "e2e-routing-1", "uuid": f"u-{mid}", "requestId": f"r-{mid}",
            "timestamp": "2026-12-06T10:00:00.000Z",
            "message": {"id": mid, "model": "claude-sonnet-4-5-20250929", "role": "assistant", "content": content,
                        "usage": {"input_tokens": 3, "cache_read_input_tokens": ctx, "cache_creation_input_tokens": 0,
                                  "output_tokens": 40}}}


def _measured_live(env: dict[str, str], transcript: Path, printed: str, log: Path) -> None:
    """The session's transcript as Claude Code writes it: the rewritten call's result is what the runner
    printed; the agent then reads the failing test and says why; one more API call."""
    def result(tid: str, text: str, uuid: str) -> dict[str, object]:
        return {"type": "user", "sessionId": "e2e-routing-1", "uuid": uuid, "timestamp": "2026-12-06T10:00:01.000Z",
                "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tid, "content": text}]}}

    records = [_api("m0", 20_000, [("toolu_e2e_enforce", "Bash", {"command": "pytest -q"})]),
               result("toolu_e2e_enforce", printed, "u-r0"),
               _api("m1", 21_000, [("toolu_e2e_read", "Read", {"file_path": "test_calc.py"})],
                    "test_calc.py::test_adds_wrong fails: two and two"),
               result("toolu_e2e_read", "def add(a, b): ...", "u-r1"),
               _api("m2", 21_500, [])]
    transcript.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    sql = ("SELECT s.basis, s.run_id, s.raw_tokens, s.compact_tokens, s.carry_calls, s.net_tokens, s.fidelity, "
           "d.net_tokens AS decision_net, d.fidelity AS decision_fidelity, d.mode, d.latency_ms IS NOT NULL AS timed "
           "FROM cost_savings_log s JOIN routing_decisions d USING (decision_id) "
           "WHERE s.tool_use_id = 'toolu_e2e_enforce' AND d.net_tokens IS NOT NULL")
    rows = _until(lambda: _query(env, sql), 60)
    raw, compact = -(-len(log.read_text(errors="replace")) // 4), -(-len(printed) // 4)  # uncalibrated: 4 chars
    assert rows == [{"basis": "measured", "run_id": log.stem, "raw_tokens": raw, "compact_tokens": compact,
                     "carry_calls": 2, "net_tokens": (raw - compact) * 2, "fidelity": 1.0,
                     "decision_net": (raw - compact) * 2, "decision_fidelity": 1.0, "mode": "enforce", "timed": True}]
    shown = subprocess.run([OUTLOOP, "savings", "--json"], env=env, capture_output=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert {"rule": "pytest", "basis": "measured"}.items() <= orjson.loads(shown.stdout)[0].items()
