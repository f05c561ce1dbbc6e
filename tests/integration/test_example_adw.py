"""The example ADW (examples/adw_fix_tests.py) end to end against a real `outloop up` (embedded broker,
worker, router) in a temporary OUTLOOP_HOME: it must finish with the tests passing, and everything it
published must be queryable afterwards: the run with its phases and status, its three tool results
(with signatures), the router's two decisions joined to them by tool_use_id, its released budget check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from outloop.client import OutloopClient, WorkerClient
from outloop.streams.broker import free_port
from tests import SESSION_TIMEOUT
from tests.polling import wait

# slow: `outloop up` takes a few seconds to start (broker, worker, router); the example itself runs in ~2 s
pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTLOOP = str(Path(sys.executable).with_name("outloop"))
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adw_fix_tests.py"


def _query(worker: WorkerClient, sql: str) -> list[dict[str, Any]]:
    columns, rows = worker.query(sql)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_example_adw_runs_end_to_end_and_its_events_are_queryable(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "OUTLOOP_HOME": str(tmp_path / "home"), "OUTLOOP_HTTP_PORT": str(port),
           "OUTLOOP_APP_ID": f"adw-{port}", "OUTLOOP_PROJECTS": "off",
           "OUTLOOP_SESSION_TIMEOUT": str(SESSION_TIMEOUT)}  # a 1 s first join instead of 3 s
    for name in ("OUTLOOP_BROKER", "OUTLOOP_DB", "OUTLOOP_SPOOL", "OUTLOOP_ROUTER_SOCKET", "OUTLOOP_RUNS_DIR"):
        env.pop(name, None)
    started = time.monotonic()
    up = subprocess.Popen([OUTLOOP, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    said: list[bytes] = []
    threading.Thread(target=lambda: said.extend(iter(up.stderr.readline, b"")) if up.stderr else None,
                     daemon=True).start()
    try:
        worker = WorkerClient("127.0.0.1", port)
        wait(lambda: up.poll() is None and bool((worker.health() or {}).get("ok")) and any(
            b"outloop is up" in line for line in said), 90, "outloop up ready", step=0.3)
        run_id = "adw-example-run"
        ready = time.monotonic()
        done = subprocess.run([sys.executable, str(EXAMPLE), "--run-id", run_id, "--project",
                               str(tmp_path / "project")], env=env, capture_output=True, timeout=120)
        printed = done.stdout.decode(errors="replace")
        assert done.returncode == 0, printed + done.stderr.decode(errors="replace")
        assert "events sent 8, dropped 0" in printed
        assert "received by the subscription: 2" in printed
        print(f"outloop up ready in {ready - started:.1f} s; the example ran in {time.monotonic() - ready:.1f} s")

        (run,) = _query(worker, f"SELECT * FROM workflow_runs WHERE run_id = '{run_id}'")
        assert run["workflow"] == "fix-tests" and run["status"] == "succeeded"
        assert run["phase"] == "verify" and run["phase_seq"] == 3 and run["events"] == 5
        events = _query(worker, f"SELECT type, data FROM workflow_events WHERE run_id = '{run_id}' ORDER BY \"at\", id")
        assert [e["type"] for e in events] == ["workflow.started"] + ["workflow.phase_changed"] * 3 + [
            "workflow.ended"]
        calls = _query(worker, "SELECT id, tool_name, status, source, signature, output_bytes FROM tool_calls "
                            f"WHERE session_id = '{run_id}' ORDER BY id")
        assert [(c["id"], c["tool_name"], c["status"], c["source"]) for c in calls] == [
            (f"{run_id}:fix", "Edit", "ok", "adw"), (f"{run_id}:test", "Bash", "error", "adw"),
            (f"{run_id}:verify", "Bash", "ok", "adw")]
        assert calls[1]["signature"] == calls[2]["signature"] == "test:unittest:test_calc"
        assert all(c["output_bytes"] > 0 for c in calls)
        decisions = _query(worker, "SELECT d.tool_use_id, d.mode, t.status FROM routing_decisions d JOIN tool_calls t "
                                f"ON t.id = d.tool_use_id WHERE d.session_id = '{run_id}' ORDER BY 1")
        assert [(d["tool_use_id"], d["mode"], d["status"]) for d in decisions] == [
            (f"{run_id}:test", "shadow", "error"), (f"{run_id}:verify", "shadow", "ok")]
        (check,) = _query(worker, "SELECT workflow, decision, status FROM budget_checks")
        assert check == {"workflow": "fix-tests", "decision": "allow", "status": "released"}

        # the totals an ADW that calls a model publishes, and a run that raised, through the same client
        client = OutloopClient(port=port, router_socket=str(tmp_path / "home" / "router.sock"))
        with pytest.raises(RuntimeError), client.start_workflow("plan", run_id="adw-totals") as run:
            run.phase("plan")
            run.add_usage(1200, 300, 50_000, 2_000, cost_usd=0.25)
            run.add_usage(800, 100, cost_usd=0.05)
            raise RuntimeError("the model gave up")
        client.close()
        wait(lambda: bool(_query(worker, "SELECT 1 FROM workflow_runs WHERE run_id = 'adw-totals' "
                                         "AND ended_at IS NOT NULL")), 30, "the second run stored")
        (totals,) = _query(worker, "SELECT status, input_tokens, output_tokens, cache_read_input_tokens, "
                                   "cache_creation_input_tokens, cost_usd FROM workflow_runs "
                                   "WHERE run_id = 'adw-totals'")
        assert totals == {"status": "failed", "input_tokens": 2000, "output_tokens": 400,
                          "cache_read_input_tokens": 50_000, "cache_creation_input_tokens": 2_000,
                          "cost_usd": pytest.approx(0.30)}
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)
