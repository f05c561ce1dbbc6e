"""Workflow budgets: the decision table, and the sink's checks and reservations on a real DuckDB file
(concurrent checks from threads never over-commit; releases, run ends and expiry free the headroom)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from outloop.agents.quota_budget import answer, estimate_from_history, p90
from outloop.projections import open_sink
from outloop.sinks.writer import DuckSink
from tests.unit import sinkdata as d


@pytest.mark.parametrize(("estimated", "used", "reserved", "limit", "decision", "reserve"), [
    (100, 0, 0, None, "allow", 100),  # no limit: tracked, never denied
    (100, 0, 0, 1000, "allow", 100),
    (100, 700, 100, 1000, "warn", 100),  # 900/1000 = 90%: over the high threshold (85%)
    (50, 700, 100, 1000, "allow", 50),  # 850/1000 = 85%: not over the high threshold
    (60, 700, 100, 1000, "warn", 60),  # 86%
    (201, 700, 100, 1000, "deny", 0),  # more than the headroom
    (200, 700, 100, 1000, "warn", 200),  # exactly the headroom
    (None, 0, 0, 1000, "warn", 0),  # no estimate at all
])
def test_decision_table(estimated: int | None, used: int, reserved: int, limit: int | None, decision: str,
                        reserve: int) -> None:
    a = answer(estimated, "given" if estimated is not None else "none", used, reserved, limit)
    assert (a.decision, a.reserve_tokens) == (decision, reserve)
    assert a.reasons


def test_estimate_from_past_runs() -> None:
    assert p90([]) is None
    assert p90(list(range(1, 11))) == 9
    assert estimate_from_history(None, [100, 200, 300]) == (300, "p90 of 3 past runs")
    assert estimate_from_history(50, [100]) == (50, "given")
    assert estimate_from_history(None, []) == (None, "none")


@pytest.fixture
def sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DuckSink]:
    monkeypatch.setenv("OUTLOOP_QUOTA_FIVE_HOUR_TOKENS", "1000000")
    monkeypatch.setenv("OUTLOOP_HOME", str(tmp_path))
    now = [d.clock()]
    with open_sink(tmp_path / "sink.duckdb", clock=lambda: now[0]) as s:
        # 200k tokens used in the current block (23:30 the day before the clock)
        s.write_batch(d.with_offsets([d.usage_msg(id="m1:r", timestamp=d.clock() - timedelta(minutes=30),
                                                  input_tokens=150_000, output_tokens=50_000)]))
        s.now = now  # type: ignore[attr-defined]
        yield s


def test_oversized_workflow_is_denied(sink: DuckSink) -> None:
    big = sink.check_budget("deploy", 900_000)
    assert big["decision"] == "deny" and big["reserved_tokens"] == 0 and big["status"] == "none"
    assert "headroom 800,000 is too small" in big["reasons"][0]


def test_concurrent_checks_never_over_commit(sink: DuckSink) -> None:
    answers: list[dict[str, Any]] = []
    start = threading.Barrier(20)

    def ask() -> None:
        start.wait()
        answers.append(sink.check_budget("build", 100_000))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [a for a in answers if a["decision"] != "deny"]
    assert len(granted) == 8  # 800k of headroom, 100k each
    assert sum(a["reserved_tokens"] for a in answers) == 800_000
    _cols, rows = sink.query("SELECT sum(reserved_tokens) FROM budget_checks WHERE status = 'reserved'")
    assert rows == [[800_000]]
    # releasing one frees its share for the next check
    assert sink.release_budget(granted[0]["id"]) and not sink.release_budget(granted[0]["id"])
    assert sink.check_budget("build", 100_000)["decision"] != "deny"
    assert sink.check_budget("build", 100_000)["decision"] == "deny"


def test_reservations_expire_and_end_with_their_run(sink: DuckSink) -> None:
    first = sink.check_budget("adw_plan", 700_000, run_id="run1", ttl_s=60)
    assert first["decision"] == "warn"  # 900k of 1M: over 85%
    assert sink.check_budget("adw_plan", 200_000)["decision"] == "deny"
    sink.write_batch(d.with_offsets(d.workflow_msgs("run1")))  # run1 ended (140 tokens): its reservation ends
    assert sink.check_budget("adw_plan", 200_000, ttl_s=60)["decision"] == "allow"
    sink.now[0] += timedelta(seconds=61)  # type: ignore[attr-defined]
    assert sink.check_budget("adw_plan", 700_000)["decision"] == "warn"  # the 200k one expired
    # without an estimate, the p90 of the workflow's past runs (run1: 140 tokens)
    auto = sink.check_budget("adw_plan")
    assert (auto["estimated_tokens"], auto["estimate_basis"]) == (140, "p90 of 1 past runs")


def test_quota_at_the_watermark_and_replays_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLOOP_QUOTA_FIVE_HOUR_TOKENS", "100")
    monkeypatch.setenv("OUTLOOP_HOME", str(tmp_path))
    batch = d.with_offsets([d.usage_msg(id=f"m{i}:r", timestamp=d.T0 + timedelta(minutes=i), input_tokens=10,
                                        output_tokens=5) for i in range(6)])
    tables = ("quota_snapshots", "quota_forecasts", "throttle_decisions")

    def dump(sink: DuckSink) -> list[Any]:
        return [sink.query(f"SELECT * FROM {t} ORDER BY id")[1] for t in tables]

    with open_sink(tmp_path / "q.duckdb", clock=d.clock) as sink:
        sink.write_batch(batch)
        first = dump(sink)
        next(p for p in sink.projections if p.name == "quota")._last = 0.0  # as if the refresh interval had passed
        sink.write_batch(batch)  # the same records again (redelivered)
        assert dump(sink) == first
    snapshots, _forecasts, decisions = first
    assert [r[2] for r in snapshots] == ["five_hour", "month", "seven_day"]
    assert snapshots[0][1] == d.T0 + timedelta(minutes=5)  # the watermark: the latest usage time
    assert decisions[0][2:5] == ["high", "warn", "five_hour"]  # 90 tokens of 100
