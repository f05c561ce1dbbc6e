"""The live path end to end, as a user runs it: `outloop up`, the hook shim, `outloop query`, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import psutil
import pytest

from outloop.streams.broker import free_port
from outloop.streams.shim import hook_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTLOOP = str(Path(sys.executable).with_name("outloop"))


def test_up_hook_query_and_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "OUTLOOP_HOME": str(tmp_path / "home"), "OUTLOOP_HTTP_PORT": str(port),
           "OUTLOOP_APP_ID": f"up-{port}", "OUTLOOP_PROJECTS": str(tmp_path / "projects")}
    env.pop("OUTLOOP_BROKER", None)
    env.pop("OUTLOOP_DB", None)
    env.pop("OUTLOOP_SPOOL", None)
    # as from a terminal: Ctrl-C interrupts it even when this test runs in a background job (whose
    # children inherit an ignored SIGINT, and Python then leaves it ignored)
    up = subprocess.Popen([OUTLOOP, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    said: list[bytes] = []  # read as it comes: a full pipe would block `outloop up` itself
    reader = threading.Thread(target=lambda: said.extend(iter(up.stderr.readline, b"")) if up.stderr else None,
                              daemon=True)
    reader.start()

    def stderr_tail() -> str:
        return b"".join(said[-40:]).decode(errors="replace")

    try:
        deadline = time.monotonic() + 60
        payloads = [
            {"session_id": "live-1", "hook_event_name": "PreToolUse", "tool_name": "Bash",
             "tool_input": {"command": "pytest -q"}, "tool_use_id": "toolu_live_1", "cwd": "/repo"},
            {"session_id": "live-1", "hook_event_name": "PostToolUse", "tool_name": "Bash",
             "tool_input": {"command": "pytest -q"}, "tool_use_id": "toolu_live_1",
             "tool_response": {"stdout": "3 passed", "stderr": "", "interrupted": False}},
        ]
        for payload in payloads:  # the hook fires while the stack may still be starting: it only spools
            shim = subprocess.run(hook_command(), shell=True, input=orjson.dumps(payload), env=env,
                                  capture_output=True, timeout=10)
            assert shim.returncode == 0 and shim.stdout == b""
        row = None
        while time.monotonic() < deadline and row is None:
            q = subprocess.run([OUTLOOP, "query", "--format", "json",
                                "SELECT status, command, output_bytes FROM tool_calls WHERE id = 'toolu_live_1'"],
                               env=env, capture_output=True, timeout=30)
            rows = orjson.loads(q.stdout) if q.returncode == 0 and q.stdout.strip() else []
            if rows and rows[0]["status"] == "ok":
                row = rows[0]
            else:
                time.sleep(0.5)
        assert up.poll() is None, stderr_tail()
        assert row == {"status": "ok", "command": "pytest -q", "output_bytes": 8}
        children = psutil.Process(up.pid).children(recursive=True)
        assert children  # broker and worker
        # the worker stores rows before `up` has started everything (router, tailer, dashboard): a Ctrl-C
        # then interrupts the start (exit 130); the clean stop under test is the one of a running `up`
        while time.monotonic() < deadline and b"outloop is up" not in b"".join(said):
            time.sleep(0.05)
        assert b"outloop is up" in b"".join(said), stderr_tail()
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stuck = {p.pid: " ".join(p.cmdline()[:3]) for p in children if p.is_running()}
            raise AssertionError(f"`outloop up` still running 60 s after Ctrl-C; children {stuck}; "
                                 f"its stderr:\n{stderr_tail()}") from None
        assert code == 0, stderr_tail()
        gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, f"left running: {[p.pid for p in alive]}"
        spool = tmp_path / "home" / "spool"
        assert not [p for p in spool.iterdir() if p.suffix == ".rec"]  # acknowledged, so out of the spool
        sent = [p for p in (spool / "sent").glob("*.rec") if b'"src":"router"' not in p.read_bytes().split(b"\n")[0]]
        assert len(sent) == 2  # and kept in the sent journal (beside the router's own records)
    finally:
        if up.poll() is None:
            for child in psutil.Process(up.pid).children(recursive=True):  # not left running after a failure
                child.kill()
            up.kill()
            up.wait()
