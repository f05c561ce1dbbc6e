"""Workflow budgets against `outloop up`, as ADWs use them: 20 concurrent clients asking for the same
headroom never over-commit it; an oversized workflow is denied; the quota view answers over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from outloop.client import OutloopClient, QueryError, WorkerClient
from outloop.streams.broker import free_port
from tests import SESSION_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTLOOP = str(Path(sys.executable).with_name("outloop"))


def test_concurrent_budget_checks_against_outloop_up(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "OUTLOOP_HOME": str(tmp_path / "home"), "OUTLOOP_HTTP_PORT": str(port),
           "OUTLOOP_APP_ID": f"budget-{port}", "OUTLOOP_QUOTA_FIVE_HOUR_TOKENS": "1000000",
           "OUTLOOP_DISCOVER_INTERVAL": "1",
           "OUTLOOP_SESSION_TIMEOUT": str(SESSION_TIMEOUT)}  # the group's first join is held 1 s, not 3
    for name in ("OUTLOOP_BROKER", "OUTLOOP_DB", "OUTLOOP_SPOOL"):
        env.pop(name, None)
    up = subprocess.Popen([OUTLOOP, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    said: list[bytes] = []
    threading.Thread(target=lambda: said.extend(iter(up.stderr.readline, b"")) if up.stderr else None,
                     daemon=True).start()
    try:
        worker = WorkerClient("127.0.0.1", port)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (worker.health() or {}).get("ok"):
            assert up.poll() is None, b"".join(said[-30:]).decode(errors="replace")
            time.sleep(0.3)
        assert (worker.health() or {}).get("ok"), b"".join(said[-30:]).decode(errors="replace")

        big = OutloopClient(port=port).check_budget("release", 2_000_000)
        assert big["decision"] == "deny" and big["reserved_tokens"] == 0

        answers: list[dict[str, Any]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(20)

        def ask() -> None:
            client = OutloopClient(port=port)  # a client of its own: its own connection
            start.wait()
            try:
                answers.append(client.check_budget("plan-build-test", 150_000))
            except (QueryError, OSError) as exc:
                errors.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and len(answers) == 20
        granted = [a for a in answers if a["decision"] != "deny"]
        assert len(granted) == 6  # 6 x 150k = 900k fits in 1M; a seventh would not
        assert sum(a["reserved_tokens"] for a in answers) == 900_000 <= 1_000_000
        assert len({a["id"] for a in answers}) == 20
        assert OutloopClient(port=port).release_budget(granted[0]["id"])
        assert OutloopClient(port=port).check_budget("plan-build-test", 100_000)["decision"] != "deny"
        q = subprocess.run([OUTLOOP, "query", "--format", "json", "SELECT decision, count(*) AS n, "
                            "sum(reserved_tokens) AS r FROM budget_checks GROUP BY ALL ORDER BY 1"],
                           env=env, capture_output=True, timeout=30)
        rows = {r["decision"]: r["n"] for r in orjson.loads(q.stdout)}
        assert rows["deny"] == 15 and sum(rows.values()) == 22
        view = worker._request("/quota")
        assert set(view) == {"snapshots", "forecasts", "decision"}
        # discovery runs in the worker's sink (no tool call or usage stored: nothing to recommend), on demand
        # and on its timer, and feedback for an unknown id is refused
        assert worker._request("/discover", {}) == []
        with pytest.raises(QueryError, match="no recommendation"):
            worker._request("/recommendations/feedback", {"id": "rec-0", "action": "accept"})
        fb = subprocess.run([OUTLOOP, "recommendations", "reject", "rec-0"], env=env, capture_output=True,
                            text=True, timeout=30)  # the CLI through the worker: its reason, no class names
        assert fb.returncode == 1 and fb.stderr.strip() == "error: no recommendation 'rec-0'", fb.stderr
        log = tmp_path / "home" / "logs" / "worker.log"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "discovery: 0 new drafts" not in log.read_text(errors="replace"):
            time.sleep(0.2)
        assert "discovery: 0 new drafts" in log.read_text(errors="replace")
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)
