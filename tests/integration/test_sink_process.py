"""The sink process beside the worker: it answers queries, refuses writes, never outlives the worker,
and takes the worker down with it when it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from outloop.runtime import Stack
from outloop.sinks.query import QueryRejected
from outloop.sinks.service import SinkProcess, SinkQueryError, SinkUnavailable
from tests.integration.test_pipeline import settings_for
from tests.polling import wait

pytestmark = pytest.mark.integration


def test_sink_process_answers_refuses_and_stops(tmp_path: Path, broker: str) -> None:
    proc = SinkProcess(tmp_path / "db.duckdb", broker, topic_prefix="sp-" + tmp_path.name, max_batch=100,
                       memory_limit="128MB", log_level="warning", home=tmp_path).start()
    try:
        wait(proc.ping, 60, "the sink process answering", step=0.05)
        assert proc.query("SELECT current_setting('memory_limit') AS m")[1][0][0].startswith("122")
        assert proc.query("SELECT count(*) FROM tool_calls") == (["count_star()"], [[0]])
        with pytest.raises(QueryRejected):
            proc.query("DELETE FROM tool_calls")
        with pytest.raises(SinkQueryError, match="no_such_table"):
            proc.query("SELECT * FROM no_such_table")
        progress = proc.progress()
        assert progress is not None and progress["records"] == 0
        # a client without the key is refused and the sink keeps serving
        from multiprocessing.connection import Client

        with pytest.raises(Exception):  # noqa: B017,PT011 - AuthenticationError or a reset connection
            Client(proc.spec.address, family="AF_UNIX", authkey=b"wrong").send(("query", ("SELECT 1",)))
        assert proc.ping()
    finally:
        assert proc.stop(timeout=30) == 0
    assert not proc.alive()
    with pytest.raises(SinkUnavailable):
        proc.request("ping", timeout=1)


_ORPHAN = """
import sys, time
from pathlib import Path
from outloop.sinks.service import SinkProcess
p = SinkProcess(Path(sys.argv[1]), sys.argv[2], topic_prefix=sys.argv[3], max_batch=100,
                memory_limit=None, log_level="warning", home=Path(sys.argv[1]).parent).start()
print(p.pid, flush=True)
while not p.ping():
    time.sleep(0.05)
print("ready", flush=True)
time.sleep(600)
"""


def test_sink_process_dies_with_its_parent(tmp_path: Path, broker: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN, str(tmp_path / "db.duckdb"), broker,
                               "orphan-" + tmp_path.name], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "ready"
        parent.kill()  # SIGKILL: no chance to stop the child itself
        parent.wait()
        wait(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie", 20,
             "the sink process gone after its parent", step=0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
    # the file lock is released: another owner can open the database
    import duckdb

    duckdb.connect(str(tmp_path / "db.duckdb")).close()


def test_worker_stops_when_its_sink_process_dies(tmp_path: Path, broker: str) -> None:
    stack = Stack(settings_for(tmp_path, broker)).start()
    try:
        assert stack.worker is not None
        health = stack.client.health()
        assert health is not None and health["ok"]
        sink_pid = health["sink_pid"]
        assert sink_pid in {c.pid for c in psutil.Process(stack.worker.pid).children()}
        os.kill(sink_pid, signal.SIGKILL)
        assert stack.worker.wait(timeout=60) != 0, "the worker went on without its sink"
    finally:
        stack.stop()
