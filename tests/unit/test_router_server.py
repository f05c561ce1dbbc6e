"""The router component behind the real hook shim: Claude Code payloads on the shim's stdin, the
router answering over its Unix socket (in this process), the shim's stdout and exit code, the
decision records in the spool, and the fail-open paths (no router, a router that never answers)."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from outloop.router.component import ask, ping
from outloop.router.server import Recorder, Server
from outloop.router.state import Router
from outloop.streams.forwarder import envelope_for
from outloop.streams.shim import hook_command
from outloop.streams.spool import Spool

CMD = shlex.split(hook_command())


def claude_payload(event: str, command: str, tool_use_id: str, session: str = "3f1c9a52-sess", **more: object
                   ) -> bytes:
    """A hook payload with the fields Claude Code sends for a Bash call."""
    body: dict[str, object] = {
        "session_id": session, "transcript_path": f"/home/u/.claude/projects/-repo/{session}.jsonl",
        "cwd": "/repo", "permission_mode": "default", "hook_event_name": event, "tool_name": "Bash",
        "tool_input": {"command": command, "description": "Run the tests"}, "tool_use_id": tool_use_id}
    body.update(more)
    return json.dumps(body).encode()


def post_payload(command: str, tool_use_id: str, stdout: str, **more: object) -> bytes:
    return claude_payload("PostToolUse", command, tool_use_id, tool_response={
        "stdout": stdout, "stderr": "", "interrupted": False, "isImage": False}, **more)


class Running:
    def __init__(self, home: Path, rules: dict[str, object]) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        (home / "routes.json").write_text(json.dumps(rules))
        self.spool = Spool(home / "spool")
        self.router = Router(home / "routes.json", home / "db.routing.json")
        self.recorder = Recorder(self.spool)
        self.server = Server(self.router, str(home / "router.sock"), self.recorder)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
        env["OUTLOOP_HOME"] = str(self.home)
        env.update(extra)
        return env

    def shim(self, body: bytes, **extra: str) -> tuple[subprocess.CompletedProcess[bytes], float]:
        t0 = time.monotonic()
        proc = subprocess.run(CMD, input=body, capture_output=True, env=self.env(**extra), timeout=10)
        return proc, time.monotonic() - t0

    def decisions(self, n: int, timeout: float = 5.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while True:
            recs = [self.spool.read(i) for i in self.spool.ready()]
            found = [e for e in (orjson.loads(r.raw) for r in recs if r.source == "router")
                     if e["type"] == "routing.decision"]
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


@pytest.fixture
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    rules = getattr(request, "param", {"rules": {"pytest": {"mode": "enforce", "threshold": 0}},
                                       "guard_mode": "enforce"})
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


def test_enforce_answers_updated_input_and_spools_payload_and_decision(running: Running) -> None:
    body = claude_payload("PreToolUse", "pytest -q", "toolu_01")
    proc, _ = running.shim(body)
    assert proc.returncode == 0
    out = json.loads(proc.stdout)["hookSpecificOutput"]
    assert out["hookEventName"] == "PreToolUse" and out["permissionDecision"] == "allow"
    assert "--outloop-run" in out["updatedInput"]["command"] and out["updatedInput"]["description"] == "Run the tests"
    assert " --outloop-run --run-id tu-toolu_01 " in out["updatedInput"]["command"]  # the run is named after the call
    hooks = [running.spool.read(i) for i in running.spool.ready()]
    assert [h.raw for h in hooks if h.source is None] == [body]  # the payload is spooled as before
    (decision,) = running.decisions(1)
    assert decision["type"] == "routing.decision" and decision["subject"] == "3f1c9a52-sess"
    data = decision["data"]
    assert (data["rule"], data["mode"], data["action"], data["answered"]) == ("pytest", "enforce", "rewrite", True)
    assert data["tool_use_id"] == "toolu_01" and data["latency_ms"] >= 0
    rec = next(r for r in map(running.spool.read, running.spool.ready())
               if r.source == "router" and b"routing.decision" in r.raw)
    env = envelope_for(rec)
    assert not isinstance(env, str) and env.type.value == "routing.decision" and env.id == data["decision_id"]


@pytest.mark.parametrize("running", [{}], indirect=True)
def test_shadow_answers_nothing_but_records(running: Running) -> None:
    proc, _ = running.shim(claude_payload("PreToolUse", "pytest -q", "toolu_02"))
    assert (proc.returncode, proc.stdout) == (0, b"")
    (decision,) = running.decisions(1)
    assert (decision["data"]["mode"], decision["data"]["answered"]) == ("shadow", False)


def test_loop_guard_end_to_end_with_real_payloads(running: Running) -> None:
    failing = "F\n=== FAILURES ===\nE   assert 1 == 2\n1 failed in 0.02s"
    for i in range(2):
        pre, _ = running.shim(claude_payload("PreToolUse", "pytest tests/test_a.py", f"toolu_l{i}"))
        assert pre.returncode == 0 and b"deny" not in pre.stdout
        post, _ = running.shim(post_payload("pytest tests/test_a.py", f"toolu_l{i}", failing))
        assert (post.returncode, post.stdout) == (0, b"")
    third, _ = running.shim(claude_payload("PreToolUse", "pytest tests/test_a.py", "toolu_l2"))
    out = json.loads(third.stdout)["hookSpecificOutput"]
    assert out["permissionDecision"] == "deny"
    assert "2 times in a row" in out["permissionDecisionReason"] and "1 failed" in out["permissionDecisionReason"]
    again, _ = running.shim(claude_payload("PreToolUse", "pytest tests/test_a.py", "toolu_l3"))
    assert json.loads(again.stdout)["hookSpecificOutput"]["permissionDecision"] == "deny"  # denied again


def test_loop_guard_never_fires_when_the_output_changed(running: Running) -> None:
    outputs = ["1 failed in 0.02s", "1 failed in 0.02s", "1 passed in 0.01s", "1 passed in 0.01s"]
    for i, text in enumerate(outputs):
        pre, _ = running.shim(claude_payload("PreToolUse", "go test ./...", f"toolu_c{i}"))
        assert b"deny" not in pre.stdout, i
        running.shim(post_payload("go test ./...", f"toolu_c{i}", text))
        if i == 1:  # the third run would be denied: the agent edits a file instead
            running.shim(claude_payload("PreToolUse", "x", "toolu_edit", tool_name="Edit",
                                        tool_input={"file_path": "/repo/a.go", "old_string": "1", "new_string": "2"}))
    last, _ = running.shim(claude_payload("PreToolUse", "go test ./...", "toolu_c9"))
    assert b"deny" in last.stdout  # two identical passing runs in a row since the change


@pytest.mark.serial  # a wall-clock bound of 1 s: measured alone
def test_router_down_answers_nothing_within_the_budget(tmp_path: Path) -> None:
    r = Running(tmp_path / "h", {})
    proc, took = r.shim(claude_payload("PreToolUse", "pytest -q", "toolu_03"))
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert took < 1.0
    assert len(r.spool.ready()) == 1


@pytest.mark.serial  # a wall-clock bound of 1 s: measured alone
def test_router_that_never_answers_costs_at_most_the_budget(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(home / "router.sock"))
    silent.listen(8)  # accepts (the kernel's backlog) and never answers
    try:
        r = Running(home, {})
        fast, _ = r.shim(claude_payload("PreToolUse", "true", "toolu_04"), OUTLOOP_ROUTER="0")
        proc, took = r.shim(claude_payload("PreToolUse", "pytest -q", "toolu_05"), OUTLOOP_ROUTE_BUDGET_MS="300")
        assert (proc.returncode, proc.stdout) == (0, b"")
        assert 0.3 <= took < 0.3 + 1.0, took  # the budget, plus the interpreter start
        assert len(r.spool.ready()) == 2  # both spooled all the same
    finally:
        silent.close()


def test_rules_file_change_takes_effect_within_seconds(running: Running) -> None:
    body = claude_payload("PreToolUse", "pytest -q", "toolu_06")
    assert b"updatedInput" in ask(body, running.server.path)
    (running.home / "routes.json").write_text(json.dumps({"rules": {"pytest": {"mode": "shadow"}}}))
    deadline = time.monotonic() + 5
    while ask(body, running.server.path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ask(body, running.server.path) == b""


def test_bad_rules_file_keeps_the_last_good_rules(running: Running) -> None:
    body = claude_payload("PreToolUse", "pytest -q", "toolu_07")
    (running.home / "routes.json").write_text("{not json")
    running.router.refresh()
    assert running.router.rules_error and b"updatedInput" in ask(body, running.server.path)


def test_snapshot_confidence_gates_the_structured_summariser(running: Running) -> None:
    (running.home / "routes.json").write_text(json.dumps({"rules": {"pytest": {"mode": "enforce"},
                                                                      "generic": {"mode": "enforce"}}}))
    (running.home / "db.routing.json").write_text(json.dumps({"patterns": {"test:pytest:*": 40}, "rules": {}}))
    running.router.refresh()
    d = orjson.loads(ask(claude_payload("PreToolUse", "pytest -q", "toolu_08"), running.server.path))
    assert "--family generic" in d["hookSpecificOutput"]["updatedInput"]["command"]  # below the threshold
    (running.home / "db.routing.json").write_text(json.dumps({"patterns": {"test:pytest:*": 90}, "rules": {}}))
    running.router.refresh()
    d = orjson.loads(ask(claude_payload("PreToolUse", "pytest -q", "toolu_09"), running.server.path))
    assert "--family pytest" in d["hookSpecificOutput"]["updatedInput"]["command"]


def test_rules_and_tools_are_recorded_once_per_version(running: Running) -> None:
    def registry() -> list[dict[str, object]]:
        recs = [running.spool.read(i) for i in running.spool.ready()]
        return [e for e in (orjson.loads(r.raw) for r in recs if r.source == "router")
                if e["type"] in ("routing.rule", "routing.tool")]

    rules = running.router.rules.rules
    expected = len(rules) + len({r.family for r in rules})
    deadline = time.monotonic() + 5
    while len(registry()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    first = registry()
    assert len(first) == expected
    names = {e["data"]["name"] for e in first if e["type"] == "routing.rule"}  # type: ignore[index]
    assert {"pytest", "generic", "git-status"} <= names
    tools = {e["data"]["name"]: e["data"] for e in first if e["type"] == "routing.tool"}  # type: ignore[index]
    assert tools["pytest"]["rules"] == ["pytest"] and "COMMAND" in tools["pytest"]["entry"]
    assert running.server.publish_registry() == 0  # nothing changed: nothing recorded again
    (running.home / "routes.json").write_text(json.dumps({"rules": {"mypy": {"mode": "advise"}}}))
    running.router.refresh()
    assert running.server.publish_registry() > 0


def test_garbage_is_answered_with_nothing(running: Running) -> None:
    for junk in (b"", b"\xff\xfe", b"[1,2]", b'{"hook_event_name":"PreToolUse"}', b'{"session_id":"s"}'):
        assert ask(junk, running.server.path) == b""
    assert ping(running.server.path)


def test_hook_with_routing_within_twice_a_bare_interpreter_start(running: Running) -> None:
    """The whole PreToolUse hook, answered by the router, against ``python -c pass`` (the reference
    of the shim's own timing test), medians of interleaved runs."""
    import statistics
    import sys

    body = claude_payload("PreToolUse", "pytest -q", "toolu_t")
    hook, bare = [], []
    for _ in range(15):
        t0 = time.perf_counter()
        proc = subprocess.run(CMD, input=body, capture_output=True, env=running.env())
        hook.append(time.perf_counter() - t0)
        assert b"updatedInput" in proc.stdout
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], capture_output=True, env=running.env())
        bare.append(time.perf_counter() - t0)
    assert statistics.median(hook) < 2 * statistics.median(bare), (hook, bare)


def test_an_adw_asks_the_router_through_the_client(running: Running, tmp_path: Path) -> None:
    """OutloopClient.route gets the whole decision (recorded like a hook's), and the rewritten command
    when a rule is enforced; with no router it is a pass with the command unchanged."""
    from outloop.client import OutloopClient

    client = OutloopClient(router_socket=running.server.path)
    d = client.route("pytest -q", cwd=str(tmp_path), tool_use_id="toolu_adw1")
    assert (d.action, d.mode, d.rule, d.kind) == ("rewrite", "enforce", "pytest", "structured")
    assert "--outloop-run" in d.command and "pytest -q" in d.command and d.decision_id
    (recorded,) = running.decisions(1)
    assert recorded["data"]["decision_id"] == d.decision_id
    passed = client.route("git push origin main", tool_use_id="toolu_adw2")
    assert (passed.action, passed.command) == ("pass", "git push origin main")
    gone = OutloopClient(router_socket=str(tmp_path / "no-router.sock")).route("pytest -q")
    assert (gone.action, gone.command) == ("pass", "pytest -q") and "no router" in gone.reason
