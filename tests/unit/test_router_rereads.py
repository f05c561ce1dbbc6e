"""The unchanged re-read rule end to end behind the real hook shim: real Claude Code Read payloads
(captured PreToolUse / PostToolUse, pointed at real files here) and a PreCompact payload on the shim's
stdin, the router answering over its socket. enforce: a second Read of an unchanged file is denied with
the reason; shadow: nothing printed, the decision recorded; a Read after the file changed, after a
compaction, or of lines not read before is never denied."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outloop.router.component import ping
from tests.conftest import traces_dir
from tests.unit.test_router_server import Running

SESSION = "86086794-dc10-420c-98ef-0ab24d2f6a69"


def _captured(name: str) -> dict[str, Any]:
    root = traces_dir() / "claude-code-hooks" / "templar@a46211b7"
    return next(p for p in json.loads((root / name).read_text())
                if p.get("tool_name") == "Read" and set(p["tool_input"]) == {"file_path"})


@pytest.fixture(scope="module")
def captured() -> tuple[dict[str, Any], dict[str, Any]]:
    return _captured("pre_tool_use.json"), _captured("post_tool_use.json")


class Reads:
    """Real Read payloads made to read files of this test, through the real shim."""

    def __init__(self, running: Running, captured: tuple[dict[str, Any], dict[str, Any]], project: Path) -> None:
        self.running, self.captured, self.project = running, captured, project

    def _payloads(self, path: Path, tid: str, **rng: int) -> tuple[dict[str, Any], dict[str, Any]]:
        pre, post = copy.deepcopy(self.captured[0]), copy.deepcopy(self.captured[1])
        lines = path.read_text().splitlines()
        first = rng.get("offset", 1)
        count = min(rng.get("limit", len(lines)), len(lines) - first + 1)
        for p in (pre, post):
            p.update(session_id=SESSION, cwd=str(self.project), tool_use_id=tid,
                     tool_input={"file_path": str(path), **rng})
        post["tool_response"]["file"].update(filePath=str(path), startLine=first, numLines=count,
                                             totalLines=len(lines),
                                             content="\n".join(lines[first - 1:first - 1 + count]))
        return pre, post

    def read(self, path: Path, tid: str, **rng: int) -> bytes:
        """A whole Read (Pre, then Post); the Pre's answer."""
        pre, post = self._payloads(path, tid, **rng)
        proc, _ = self.running.shim(json.dumps(pre).encode())
        assert proc.returncode == 0
        if not proc.stdout:
            done, _ = self.running.shim(json.dumps(post).encode())
            assert (done.returncode, done.stdout) == (0, b"")
            self._settle(tid)
        return proc.stdout

    def ask(self, path: Path, tid: str, **rng: int) -> bytes:
        """A Read's PreToolUse only; the answer."""
        proc, _ = self.running.shim(json.dumps(self._payloads(path, tid, **rng)[0]).encode())
        assert proc.returncode == 0
        return proc.stdout

    def compact(self) -> None:
        body = {"session_id": SESSION, "transcript_path": self.captured[0]["transcript_path"], "cwd": str(self.project),
                "hook_event_name": "PreCompact", "trigger": "auto", "custom_instructions": ""}
        proc, _ = self.running.shim(json.dumps(body).encode())
        assert (proc.returncode, proc.stdout) == (0, b"")
        self._settle(None)

    def _settle(self, tid: str | None) -> None:
        """Wait until the router applied what the shim passed on without waiting (PostToolUse, PreCompact)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            state = self.running.router.sessions.get(SESSION)
            if state is not None and (not state.reads.reads if tid is None else tid not in state.reads.pending):
                return
            time.sleep(0.01)
        raise AssertionError(f"the router did not apply {tid or 'the compaction'}")

    def decisions(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        """The re-read rule's recorded decisions, once those of ``ids`` are all in the spool."""
        deadline = time.monotonic() + 5
        while True:
            found = {d["data"]["tool_use_id"]: d["data"] for d in self.running.decisions(0, timeout=0)
                     if d["data"]["rule"] == "unchanged-reread"}
            if ids <= set(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


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
def project(tmp_path: Path) -> Path:
    p = tmp_path / "repo"
    p.mkdir()
    (p / "config.go").write_text("".join(f"// line {i}\n" for i in range(1, 81)))
    return p


def test_enforce_denies_a_second_read_of_an_unchanged_file(tmp_path: Path, project: Path, captured: Any) -> None:
    for running in _running(tmp_path, {"reread_mode": "enforce"}):
        reads = Reads(running, captured, project)
        src = project / "config.go"
        assert reads.read(src, "toolu_r1") == b""
        out = json.loads(reads.ask(src, "toolu_r2"))["hookSpecificOutput"]
        assert out["permissionDecision"] == "deny"
        assert str(src) in out["permissionDecisionReason"] and "toolu_r1" in out["permissionDecisionReason"]
        assert json.loads(reads.ask(src, "toolu_r3", offset=5, limit=10))["hookSpecificOutput"][
            "permissionDecision"] == "deny"  # lines already read
        src.write_text(src.read_text() + "// one more\n")
        assert reads.ask(src, "toolu_r4") == b""  # the file changed: goes through
        assert reads.read(src, "toolu_r5") == b""
        reads.compact()
        assert reads.ask(src, "toolu_r6") == b""  # after a compaction: goes through
        assert reads.read(project / "config.go", "toolu_r7", offset=1, limit=20) == b""
        assert reads.ask(src, "toolu_r8", offset=10, limit=20) == b""  # lines 21-29 were never read
        found = reads.decisions({"toolu_r2", "toolu_r3"})
        assert {t for t, d in found.items() if d["action"] == "deny"} == {"toolu_r2", "toolu_r3"}
        assert all(found[t]["answered"] and found[t]["mode"] == "enforce" for t in ("toolu_r2", "toolu_r3"))


def test_shadow_answers_nothing_and_records_the_decision(tmp_path: Path, project: Path, captured: Any) -> None:
    for running in _running(tmp_path, {}):
        reads = Reads(running, captured, project)
        src = project / "config.go"
        assert reads.read(src, "toolu_s1") == b""
        assert reads.ask(src, "toolu_s2") == b""
        d = reads.decisions({"toolu_s2"})["toolu_s2"]
        assert (d["mode"], d["action"], d["answered"]) == ("shadow", "deny", False)
        assert "already read" in d["reason"]
