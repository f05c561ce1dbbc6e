"""With `outloop up` running, as a user finds it: a second `up` on the same home exits at once naming
the first (and no hook event sent meanwhile is lost), `query`/`patterns --db FILE` answer from FILE,
and `replay --db FILE` runs beside it on a port and a log folder of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson
import psutil
import pytest

from outloop.client import WorkerClient
from outloop.replay import replay
from outloop.sample import write_sample
from outloop.streams.broker import free_port
from outloop.streams.shim import hook_command
from tests import SESSION_TIMEOUT
from tests.integration.test_pipeline import settings_for
from tests.polling import wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTLOOP = str(Path(sys.executable).with_name("outloop"))


@dataclass
class Up:
    """A running `outloop up` and what it printed so far."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    home: Path
    port: int
    said: list[bytes] = field(default_factory=list)

    def stderr(self) -> str:
        return b"".join(self.said[-40:]).decode(errors="replace")


def start_up(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """`outloop up` as from a terminal (Ctrl-C works even in a background test job), its stderr read
    as it comes (a full pipe would block it)."""
    proc = subprocess.Popen([OUTLOOP, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    said: list[bytes] = []
    threading.Thread(target=lambda: said.extend(iter(proc.stderr.readline, b"")) if proc.stderr else None,
                     daemon=True).start()
    return proc, said


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of a process and its children (after a failure)."""
    if proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("instances")
    port = free_port()
    env = {**os.environ, "OUTLOOP_HOME": str(tmp / "home"), "OUTLOOP_HTTP_PORT": str(port),
           "OUTLOOP_APP_ID": f"inst-{port}", "OUTLOOP_SESSION_TIMEOUT": str(SESSION_TIMEOUT),
           "TMPDIR": str(tmp / "tmp")}
    for name in ("OUTLOOP_BROKER", "OUTLOOP_DB", "OUTLOOP_SPOOL"):
        env.pop(name, None)
    (tmp / "tmp").mkdir()
    proc, said = start_up(env)
    running = Up(proc, env, tmp / "home", port, said)
    try:
        wait(lambda: proc.poll() is not None or b"outloop is up" in b"".join(said), 90, "outloop up ready",
             logs=(tmp / "home" / "logs" / "worker.log",))
        assert proc.poll() is None, running.stderr()
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        stop_tree(proc)


def hook(env: dict[str, str], session: str, n: int) -> None:
    payload = {"session_id": session, "hook_event_name": "PreToolUse", "tool_name": "Bash",
               "tool_input": {"command": f"echo {n}"}, "tool_use_id": f"toolu_{session}_{n}", "cwd": "/repo"}
    shim = subprocess.run(hook_command(), shell=True, input=orjson.dumps(payload), env=env, capture_output=True,
                          timeout=10)
    assert shim.returncode == 0 and shim.stdout == b""


def live_count(up: Up, sql: str) -> int:
    _, rows = WorkerClient("127.0.0.1", up.port).query(sql)
    return int(rows[0][0])


def test_a_second_up_exits_at_once_with_the_first_ones_pid_and_no_hook_event_is_lost(up: Up) -> None:
    sent: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def send() -> None:  # hook events through the real shim, before, during and after the second attempt
        try:
            while not stop.is_set():
                hook(up.env, "second-up", len(sent))
                sent.append(len(sent))
                time.sleep(0.02)
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    second = None
    try:
        wait(lambda: len(sent) >= 10 or bool(errors), 60, "hook events sent before the second up")
        started = time.monotonic()
        second, said = start_up(up.env)
        try:
            code = second.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"a second `outloop up` on the same home still runs after 30 s; it said:\n"
                                 f"{b''.join(said).decode(errors='replace')}") from None
        elapsed = time.monotonic() - started
        during = len(sent)
        wait(lambda: len(sent) >= during + 10 or bool(errors), 60, "hook events sent after the second up")
    finally:
        stop.set()
        sender.join(timeout=30)
        if second is not None:
            stop_tree(second)
    assert not errors, errors
    message = " ".join(b"".join(said).decode(errors="replace").split())  # as one line, however it was wrapped
    assert code != 0, message
    assert f"outloop is already running (pid {up.proc.pid})" in message, message
    assert elapsed < 15, f"the second up took {elapsed:.1f}s to give up"
    assert up.proc.poll() is None, up.stderr()
    n = len(sent)
    wait(lambda: live_count(up, "SELECT count(*) FROM hook_events WHERE session_id = 'second-up'") >= n, 90,
         f"all {n} hook events in the live database", logs=(up.home / "logs" / "worker.log",))
    assert live_count(up, "SELECT count(DISTINCT tool_use_id) FROM hook_events WHERE session_id = 'second-up'") == n
    spool = up.home / "spool"
    assert not [p for p in spool.iterdir() if p.suffix == ".rec"]  # nothing waits in the spool either


def test_query_and_patterns_with_db_answer_from_that_file_beside_a_live_worker(
        up: Up, tmp_path: Path, broker: str) -> None:
    hook(up.env, "query-live", 0)  # a row only the live database holds
    sample = tmp_path / "sample"
    write_sample(sample, sessions=2)
    other = tmp_path / "other.duckdb"
    summary = replay([sample], settings_for(tmp_path, broker, db=other))
    assert summary.tool_calls > 0

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([OUTLOOP, *args], env=up.env, capture_output=True, timeout=60)

    q = cli("query", "--db", str(other), "--format", "json", "SELECT count(*) AS n FROM tool_calls")
    assert q.returncode == 0, q.stderr
    assert orjson.loads(q.stdout) == [{"n": summary.tool_calls}]
    con = duckdb.connect(str(other), read_only=True)
    try:
        top = [r[0] for r in con.execute("SELECT signature FROM operation_patterns ORDER BY occurrence_count DESC, "
                                         "confidence_score DESC, signature LIMIT 5").fetchall()]
    finally:
        con.close()
    p = cli("patterns", "--db", str(other), "--json", "--top", "5")
    assert p.returncode == 0, p.stderr
    assert [r["signature"] for r in orjson.loads(p.stdout)] == top and top
    # the live worker's own file, named directly or through a link, is answered by the worker (the sink
    # holds it: a read-only open of it would fail)
    link = tmp_path / "link"
    link.symlink_to(up.home, target_is_directory=True)
    sql = "SELECT count(*) AS n FROM hook_events WHERE session_id = 'query-live'"
    wait(lambda: live_count(up, sql) == 1, 60, "the hook event in the live database")
    for args in ((), ("--db", str(up.home / "outloop.duckdb")), ("--db", str(link / "outloop.duckdb"))):
        q = cli("query", *args, "--format", "json", sql)
        assert q.returncode == 0, (args, q.stderr)
        assert orjson.loads(q.stdout) == [{"n": 1}], args


def test_replay_with_db_runs_beside_a_live_up_on_its_own_port_and_logs(up: Up, tmp_path: Path) -> None:
    sample = tmp_path / "sample"
    write_sample(sample, sessions=2)
    target = tmp_path / "replayed.duckdb"
    live_log = up.home / "logs" / "worker.log"
    before = live_log.stat().st_size
    r = subprocess.run([OUTLOOP, "replay", str(sample), "--db", str(target), "--json", "--timeout", "30"],
                       env=up.env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    summary = orjson.loads(r.stdout)
    assert summary["tool_calls"] > 0
    con = duckdb.connect(str(target), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM tool_calls").fetchone() == (summary["tool_calls"],)
    finally:
        con.close()
    assert up.proc.poll() is None, up.stderr()
    with live_log.open("rb") as f:  # the replay's worker wrote nothing into the live instance's log
        f.seek(before)
        added = f.read().decode(errors="replace")
    assert "address already in use" not in added.lower(), added
    assert not list(Path(up.env["TMPDIR"]).glob("outloop-replay-*"))  # its private home is gone
    # the live worker's own database is refused at once, naming the worker
    started = time.monotonic()
    r = subprocess.run([OUTLOOP, "replay", str(sample)], env=up.env, capture_output=True, timeout=60)
    assert r.returncode != 0
    health = WorkerClient("127.0.0.1", up.port).health()
    assert health is not None
    said = " ".join(r.stderr.decode(errors="replace").split())
    assert f"is the database of the running worker (pid {health['pid']})" in said, said
    assert time.monotonic() - started < 15
