"""The ADW client without a running outloop: subscriptions read a real DuckDB file (read-only, as when no
worker runs), publishing and budget checks fail safe when nothing answers, tool results become valid
``tool.call`` records, and a workflow run numbers its phases and adds up its totals."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from outloop import OutloopClient, QueryError
from outloop.client_events import EventSender, WorkflowRun, tool_call
from outloop.client_watch import Decision
from outloop.sinks.schema import migrate
from outloop.streams.broker import free_port
from outloop.streams.publisher import PublishError

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _db(tmp_path: Path) -> Path:
    db = tmp_path / "outloop.duckdb"
    con = duckdb.connect(str(db))
    migrate(con)
    con.close()
    return db


def _decide(db: Path, decision_id: str, at: datetime, session: str = "s1") -> None:
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO routing_decisions (decision_id, session_id, mode, action, decided_at) "
                "VALUES (?, ?, 'shadow', 'pass', ?)", [decision_id, session, at])
    con.close()


def _throttle(db: Path, at: datetime, level: str) -> None:
    con = duckdb.connect(str(db))
    con.execute("""INSERT INTO throttle_decisions (id, "at", level, action) VALUES (?, ?, ?, 'warn')""",
                [f"throttle:{at.isoformat()}:five_hour:{level}", at, level])
    con.close()


def _client(db: Path) -> OutloopClient:
    return OutloopClient(port=free_port(), db=db)  # nothing listens there: reads go to the file


def test_subscription_delivers_each_decision_once_in_time_order(tmp_path: Path) -> None:
    db = _db(tmp_path)
    _decide(db, "rd:b", T0 + timedelta(seconds=2))
    _decide(db, "rd:a", T0 + timedelta(seconds=1))
    _throttle(db, T0 + timedelta(seconds=1, milliseconds=500), "high")
    sub = _client(db).subscribe(since=T0, poll=0.05)
    first = sub.poll_once()
    assert [(d.kind, d.id) for d in first] == [("routing", "rd:a"), ("throttle", first[1].id), ("routing", "rd:b")]
    assert first[1].row["level"] == "high" and first[0].at == T0 + timedelta(seconds=1)
    assert sub.poll_once() == []  # nothing new: nothing again
    _decide(db, "rd:c", T0 + timedelta(seconds=3))
    _decide(db, "rd:late", T0 + timedelta(seconds=1, milliseconds=1))  # arrives late, within the lookback
    assert [d.id for d in sub.poll_once()] == ["rd:late", "rd:c"]
    _decide(db, "rd:too-late", T0 - timedelta(seconds=400))  # before `since`: never
    _decide(db, "rd:d", T0 + timedelta(seconds=4))
    assert next(sub).id == "rd:d" and sub.last_error is None  # the iterator form
    sub.close()
    assert list(sub) == [] and sub.closed
    timed = _client(db).subscribe(poll=0.05, timeout=0.3)
    assert list(timed) == []  # nothing new within its timeout: the iteration ends on its own


def test_subscription_without_since_skips_what_was_stored_before_it_started(tmp_path: Path) -> None:
    db = _db(tmp_path)
    now = datetime.now(UTC)
    _decide(db, "rd:old", now - timedelta(seconds=10))
    sub = _client(db).subscribe(("routing",), poll=0.05)
    assert sub.poll_once() == []
    _decide(db, "rd:new", now - timedelta(seconds=5))  # its time is earlier than the start, it arrived after
    assert [d.id for d in sub.poll_once()] == ["rd:new"]


def test_subscription_pages_through_more_than_a_page_and_forgets_beyond_the_lookback(tmp_path: Path) -> None:
    db = _db(tmp_path)
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO routing_decisions (decision_id, session_id, mode, action, decided_at) "
                "SELECT 'rd:' || lpad(i::VARCHAR, 5, '0'), 's', 'shadow', 'pass', ?::TIMESTAMPTZ + to_milliseconds(i) "
                "FROM range(2500) t(i)", [T0])
    con.close()
    sub = _client(db).subscribe(("routing",), since=T0, lookback=1.0)
    got = sub.poll_once()
    assert len(got) == 2500 and len({d.id for d in got}) == 2500 and got[0].id == "rd:00000"
    _decide(db, "rd:beyond", T0 + timedelta(milliseconds=100))  # 2.4 s older than the newest: beyond 1 s
    _decide(db, "rd:within", T0 + timedelta(milliseconds=2000))
    assert [d.id for d in sub.poll_once()] == ["rd:within"]


def test_callback_form_runs_in_a_thread_until_closed(tmp_path: Path) -> None:
    db = _db(tmp_path)
    got: list[Decision] = []
    _throttle(db, T0 + timedelta(minutes=1), "critical")  # before: the thread opens the file read-only, and
    # one process cannot hold it read-only and writable at once (the sink writes from a process of its own)
    sub = _client(db).subscribe(("throttle",), got.append, since=T0, poll=0.05)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.close()
    assert sub.thread is not None
    sub.thread.join(5)
    assert not sub.thread.is_alive() and [d.row["level"] for d in got] == ["critical"]


def test_a_failing_poll_is_kept_and_retried(tmp_path: Path) -> None:
    sub = _client(tmp_path / "missing.duckdb").subscribe(since=T0)
    assert sub.poll_once() == [] and "no database" in (sub.last_error or "")


def test_views_and_view_read_the_named_views(tmp_path: Path) -> None:
    db = _db(tmp_path)
    client = _client(db)
    names = client.views()
    assert {"v_session_summary", "cost_savings_log", "v_daily_usage"} <= set(names)
    assert client.view("v_session_summary", where="session_id = ?", params=["x"], order_by="1", limit=5) == []
    with pytest.raises(QueryError, match="no view named"):
        client.view("routing_decisions; DROP TABLE usage")


def test_publishing_fails_safe_when_no_broker_answers() -> None:
    port = free_port()
    clock = [100.0]
    sender = EventSender(lambda: f"127.0.0.1:{port}", timeout=1.0, clock=lambda: clock[0])
    run = WorkflowRun(sender, "r1", "wf", None)
    started = time.monotonic()
    assert run.phase("plan") is False
    assert run.phase("build") is False  # at once: the broker was unreachable less than retry_after ago
    assert time.monotonic() - started < 8
    assert sender.dropped == 2 and sender.sent == 0 and sender.last_error
    strict = EventSender(lambda: None, strict=True)
    with pytest.raises(PublishError, match="no broker"):
        strict.send(lambda p: p.workflow_phase_changed("r1", "x", 1))


def test_no_worker_means_no_broker_and_an_allowed_budget_on_request(tmp_path: Path) -> None:
    client = _client(tmp_path / "none.duckdb")
    assert client._bootstrap() is None
    assert client.start_workflow("wf").started is False
    with pytest.raises(QueryError):
        client.check_budget("wf", 10)
    answer = client.check_budget("wf", 10, on_error="allow")
    assert answer["decision"] == "allow" and answer["id"] is None and "no outloop worker" in answer["reasons"][0]
    client.router_socket = str(tmp_path / "router.sock")  # nothing listens there: the command passes unchanged
    d = client.route("pytest -q", cwd=str(tmp_path))
    assert (d.action, d.command) == ("pass", "pytest -q") and "no router" in d.reason


def test_tool_call_record_and_workflow_totals() -> None:
    t = datetime(2026, 12, 1, tzinfo=UTC)
    call = tool_call("s", "Bash", {"command": "pytest -q"}, output="1 failed", is_error=True, started_at=t,
                     ended_at=t + timedelta(seconds=2), tool_use_id="tu-1")
    assert (call.id, call.command, call.status, call.source) == ("tu-1", "pytest -q", "error", "adw")
    assert call.output_bytes == 8 and call.output_tokens_est == 2 and call.duration_ms == 2000
    edit = tool_call("s", "Edit", {"file_path": "/a.py", "old_string": "x", "new_string": "y"}, output_bytes=40)
    assert edit.file_path == "/a.py" and edit.id.startswith("adw:") and edit.status == "ok"
    run = WorkflowRun(EventSender(lambda: None), "r", "wf", None)
    run.add_usage(10, 5, 100, 20, cost_usd=0.5)
    run.add_usage(1, 1, cost_usd=0.25)
    assert run.totals == {"input_tokens": 11, "output_tokens": 6, "cache_read_input_tokens": 100,
                          "cache_creation_input_tokens": 20} and run.cost_usd == 0.75
    with pytest.raises(ValueError):
        run.add_usage(-1)
    with pytest.raises(ValueError):
        run.end("done")
    with run:
        run.phase("only")
    assert run.ended == "succeeded" and run.seq == 1 and run.end() is False
    failing = WorkflowRun(EventSender(lambda: None), "r2", "wf", None)
    with pytest.raises(RuntimeError), failing:
        raise RuntimeError("the workflow broke")
    assert failing.ended == "failed"
