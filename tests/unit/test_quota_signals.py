"""Rate-limit stops as official quota signals: the transcript record Claude Code writes for one, the
``ApiError`` event the importer makes of it, its reset time, and the throttle decision it drives (pure,
and through the sink on a real DuckDB file)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from outloop.agents.quota import UsageRow
from outloop.agents.quota_risk import QuotaConfig
from outloop.agents.quota_signals import merge_official, parse_reset, rate_limit_stops, window_of
from outloop.agents.quota_status import Official, assess
from outloop.projections import open_sink
from outloop.schemas.events import EventType
from outloop.streams.importers import ImportStats
from outloop.streams.importers.transcripts import iter_records
from tests.unit import sinkdata as d

STOP_AT = datetime(2026, 1, 17, 3, 18, 27, tzinfo=UTC)
TEXT = "You're out of extra usage · resets 11pm (America/Denver)"


def stop_record(uuid: str = "u-stop", **fields: Any) -> dict[str, Any]:
    """The shape Claude Code writes when the API refuses a request for a rate limit (FORMATS.md)."""
    return {"type": "assistant", "uuid": uuid, "sessionId": "s1", "timestamp": "2026-01-17T03:18:27.438Z",
            "isApiErrorMessage": True, "error": "rate_limit",
            "message": {"id": "m-syn", "model": "<synthetic>", "role": "assistant", "stop_reason": "stop_sequence",
                        "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 0},
                        "content": [{"type": "text", "text": TEXT}]}, **fields}


@pytest.mark.parametrize(("text", "seen", "expected"), [
    (TEXT, STOP_AT, datetime(2026, 1, 17, 6, 0, tzinfo=UTC)),  # 20:18 in Denver (UTC-7): 23:00 there
    ("5-hour limit reached ∙ resets 3:30pm (Europe/Paris)", datetime(2026, 1, 5, 15, 0, tzinfo=UTC),
     datetime(2026, 1, 6, 14, 30, tzinfo=UTC)),  # 16:00 in Paris: 15:30 has passed, the next day's
    ("Weekly limit reached ∙ resets Jan 9, 10am (Europe/Paris)", datetime(2026, 1, 5, 15, 0, tzinfo=UTC),
     datetime(2026, 1, 9, 9, 0, tzinfo=UTC)),
    ("Claude AI usage limit reached|1767960000", STOP_AT, datetime.fromtimestamp(1767960000, UTC)),
    ("5-hour limit reached ∙ resets 3pm", STOP_AT, None),  # no zone: the local time cannot be placed
    ("resets 3pm (Nowhere/Atlantis)", STOP_AT, None),
    ("Request timed out", STOP_AT, None),
])
def test_parse_reset(text: str, seen: datetime, expected: datetime | None) -> None:
    assert parse_reset(text, seen) == expected


def test_window_of() -> None:
    assert window_of("Weekly limit reached ∙ resets Mon 9am") == "seven_day"
    assert window_of("Opus weekly limit reached") == "seven_day"
    assert window_of(TEXT) == "five_hour"


def test_importer_makes_an_api_error_event_of_the_record() -> None:
    plain = stop_record("u-plain")
    del plain["isApiErrorMessage"]  # a synthetic record that is no API error: no event, as before
    envs = list(iter_records([stop_record(), plain], Path("t.jsonl"), ImportStats()))
    assert [(e.type, e.id) for e in envs] == [(EventType.HOOK_EVENT, "apierr:u-stop")]
    env = envs[0]
    assert env.data["hook_event_name"] == "ApiError" and env.data["error"] == "rate_limit"
    assert env.data["text"] == TEXT and env.time == STOP_AT.replace(microsecond=438000)
    assert env.subject == "s1" and env.source == "transcript"


def test_a_stop_puts_its_window_at_100_percent_until_the_reset() -> None:
    rows = [(STOP_AT, json.dumps({"error": "rate_limit", "text": TEXT}))]
    found = rate_limit_stops(rows, STOP_AT + timedelta(minutes=30))
    assert found == {"five_hour": Official(100.0, datetime(2026, 1, 17, 6, tzinfo=UTC), STOP_AT, "rate_limit_stop")}
    assert rate_limit_stops(rows, datetime(2026, 1, 17, 6, tzinfo=UTC)) == {}  # reset
    assert rate_limit_stops(rows, STOP_AT - timedelta(seconds=1)) == {}  # not seen yet
    timeout = [(STOP_AT, json.dumps({"error": "unknown", "text": "Request timed out"}))]
    assert rate_limit_stops(timeout, STOP_AT) == {}
    no_zone = [(STOP_AT, {"error": "rate_limit", "text": "5-hour limit reached ∙ resets 3pm"})]
    assert rate_limit_stops(no_zone, STOP_AT + timedelta(hours=4, minutes=59))  # one span at most
    assert rate_limit_stops(no_zone, STOP_AT + timedelta(hours=5)) == {}


def test_a_newer_status_line_figure_wins_over_a_stop() -> None:
    stop = Official(100.0, None, STOP_AT, "rate_limit_stop")
    older, newer = Official(40.0, None, STOP_AT - timedelta(minutes=1)), Official(3.0, None, STOP_AT + timedelta(1))
    assert merge_official({"five_hour": older}, {"five_hour": stop}) == {"five_hour": stop}
    assert merge_official({"five_hour": newer}, {"five_hour": stop}) == {"five_hour": newer}


def test_throttle_engages_on_a_stop_without_any_configured_limit() -> None:
    rows = [UsageRow(STOP_AT - timedelta(minutes=m), 100, 50, 0, 1000) for m in range(1, 30)]
    at = STOP_AT + timedelta(minutes=5)
    official = rate_limit_stops([(STOP_AT, {"error": "rate_limit", "text": TEXT})], at)
    status = assess(rows, at, QuotaConfig(), official, kinds=("five_hour",))
    d_ = status.decision
    assert (d_.level, d_.action, d_.window, d_.basis) == ("critical", "warn", "five_hour", "official")
    assert status.windows[0]["official"]["source"] == "rate_limit_stop"  # type: ignore[index]
    after = datetime(2026, 1, 17, 6, 1, tzinfo=UTC)
    released = assess(rows, after, QuotaConfig(), rate_limit_stops([(STOP_AT, {"error": "rate_limit",
                                                                               "text": TEXT})], after))
    assert released.decision.level == "low"


def test_the_sink_stores_a_critical_decision_at_the_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLOOP_HOME", str(tmp_path))
    monkeypatch.delenv("OUTLOOP_QUOTA_FIVE_HOUR_TOKENS", raising=False)
    t0 = STOP_AT - timedelta(minutes=20)
    usage = [d.usage_msg(id=f"m{i}:r", timestamp=t0 + timedelta(minutes=i), input_tokens=10, output_tokens=5)
             for i in range(6)]
    stop = d.envelope_msg("hook-events", EventType.HOOK_EVENT, "apierr:u1", "s1",
                          {"session_id": "s1", "hook_event_name": "ApiError", "error": "rate_limit", "text": TEXT},
                          time=STOP_AT)
    batch = d.with_offsets([*usage, stop])
    with open_sink(tmp_path / "q.duckdb", clock=d.clock) as sink:
        sink.write_batch(batch)
        first = sink.query("SELECT * FROM throttle_decisions ORDER BY id")[1]
        next(p for p in sink.projections if p.name == "quota")._last = 0.0  # as if the refresh interval had passed
        sink.write_batch(batch)  # redelivered: nothing changes
        assert sink.query("SELECT * FROM throttle_decisions ORDER BY id")[1] == first
    # one status per hour of data, at its latest usage or stop: 02:59:27 (usage) and the stop at 03:18:27
    assert [row[1] for row in first] == [t0 + timedelta(minutes=1), STOP_AT]
    _id, at, level, action, window, percent, basis, _abnormal, _reason = first[1]
    assert at == STOP_AT  # the stop is the latest time of its hour's data, past the last usage
    assert (level, action, window, percent, basis) == ("critical", "warn", "five_hour", 100.0, "official")


_API_ERRORS = """
import json, sys, pathlib
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import iter_paths
out = [[env.time.isoformat(), env.data] for env in iter_paths([pathlib.Path(sys.argv[1])], ImportStats())
       if env.type.value == "hook.event" and env.data.get("hook_event_name") == "ApiError"]
json.dump(out, sys.stdout)
"""


@pytest.mark.traces
def test_the_rate_limit_stop_of_the_dev_traces_resets_at_the_end_of_its_block(traces: Path) -> None:
    """Read in a child process (the traces never swell this one), as the backtest's rows are."""
    import subprocess
    import sys

    from outloop.agents.quota import blocks
    from tests.unit.test_quota_backtest import usage_rows

    proc = subprocess.run([sys.executable, "-c", _API_ERRORS, str(traces)], capture_output=True, text=True,
                          timeout=300, check=True)
    found = [(datetime.fromisoformat(t), data) for t, data in json.loads(proc.stdout)]
    stops = [(t, data) for t, data in found if data["error"] == "rate_limit"]
    assert len(stops) == 1 and len(found) > len(stops)  # the others: timeouts, a refused key
    seen, data = stops[0]
    block = next(b for b in blocks(usage_rows(traces)) if b.start <= seen < b.end)
    assert parse_reset(data["text"], seen) == block.end  # Claude Code's reset is the block's end
    assert rate_limit_stops([(seen, data)], seen)["five_hour"].resets_at == block.end


def test_a_late_usage_record_recomputes_its_hour_and_the_hours_after(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The quota rows are kept at one point per hour of data; a record that arrives after a later hour was
    computed makes the sink recompute its hour and every later one: the rows equal those of an in-order ingest."""
    monkeypatch.setenv("OUTLOOP_HOME", str(tmp_path))
    t10 = datetime(2026, 1, 17, 10, 5, tzinfo=UTC)
    times = [t10, t10 + timedelta(minutes=35), t10 + timedelta(minutes=75)]  # 10:05, 10:40, 11:20
    usage = [d.usage_msg(id=f"m{i}:r", timestamp=t, input_tokens=10 + i, output_tokens=5) for i, t in enumerate(times)]

    def rows(sink: Any) -> list[Any]:
        return [sink.query(f'SELECT * FROM {t} ORDER BY id')[1] for t in
                ("quota_snapshots", "quota_forecasts", "throttle_decisions")]

    with open_sink(tmp_path / "in-order.duckdb", clock=d.clock) as sink:
        sink.write_batch(d.with_offsets(usage))
        want = rows(sink)
    with open_sink(tmp_path / "late.duckdb", clock=d.clock) as sink:
        sink.write_batch(d.with_offsets(usage[2:]))  # 11:20 first: its point is computed alone
        assert [r[1] for r in rows(sink)[2]] == [times[2]]
        next(p for p in sink.projections if p.name == "quota")._last = 0.0  # as if the refresh interval had passed
        sink.write_batch([(t, p, o + 1, k, v) for t, p, o, k, v in d.with_offsets(usage[:2])])
        got = rows(sink)
    assert got == want
    snapshots, forecasts, decisions = want
    assert sorted({r[1] for r in snapshots}) == [times[1], times[2]]  # the latest usage of each hour
    assert {r[1] for r in forecasts} == {times[2]} and [r[1] for r in decisions] == [times[1], times[2]]


def test_rows_of_the_former_version_at_refresh_watermarks_are_replaced_by_the_points(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database whose quota rows were written at each refresh's watermark (version 1) is rebuilt at open:
    those rows go, and the next refresh stores the hourly points of the stored usage."""
    monkeypatch.setenv("OUTLOOP_HOME", str(tmp_path))
    t10 = datetime(2026, 1, 17, 10, 5, tzinfo=UTC)
    usage = [d.usage_msg(id=f"m{i}:r", timestamp=t10 + timedelta(minutes=35 * i)) for i in range(3)]
    with open_sink(tmp_path / "old.duckdb", clock=d.clock) as sink:
        sink.write_batch(d.with_offsets(usage))
        want = sink.query('SELECT * FROM quota_snapshots ORDER BY id')[1]
        with sink.transaction() as con:  # as version 1 left it: a row at a watermark of its own
            con.execute("INSERT INTO quota_snapshots SELECT 'five_hour:x', TIMESTAMPTZ '2026-01-17 10:10:00+00', "
                        "* EXCLUDE (id, \"at\") FROM quota_snapshots LIMIT 1")
            con.execute("UPDATE projection_versions SET version = '1' WHERE name = 'quota'")
    with open_sink(tmp_path / "old.duckdb", clock=d.clock) as sink:
        assert sink.query("SELECT count(*) FROM quota_snapshots")[1] == [[0]]
        sink.write_batch([])
        assert sink.query('SELECT * FROM quota_snapshots ORDER BY id')[1] == want
