"""``outloop quota``, ``quota forecast --at`` and ``quota backtest`` run as the installed command on a real
DuckDB file: only events up to --at count, official status-line figures win over estimates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from outloop.quota_cli import parse_fractions
from outloop.sinks.schema import migrate

OUTLOOP = str(Path(sys.executable).with_name("outloop"))
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sessions a day apart (12:00-14:00 every 3 min, 4,000 tokens a response) and a status line."""
    path = tmp_path_factory.mktemp("quota") / "q.duckdb"
    con = duckdb.connect(str(path))
    migrate(con)
    for day in (0, 1):
        for m in range(0, 120, 3):
            ts = T0 + timedelta(days=day, minutes=m)
            con.execute("INSERT INTO usage (id, session_id, model, \"timestamp\", input_tokens, output_tokens, "
                        "cache_read_input_tokens, cache_creation_input_tokens, cost_usd, source) "
                        "VALUES (?, 's', 'claude-sonnet-4-5', ?, 1000, 1000, 1000, 1000, 0.01, 'transcript')",
                        [f"m{day}-{m}:r", ts])
    payload = {"hook_event_name": "Status", "session_id": "s",
               "rate_limits": {"five_hour": {"used_percentage": 42.5, "resets_at": "2026-01-06T17:00:00Z"}}}
    con.execute("INSERT INTO hook_events (id, session_id, hook_event_name, received_at, source, payload) "
                "VALUES ('st1', 's', 'Status', ?, 'hook', ?)",
                [T0 + timedelta(days=1, minutes=30), json.dumps(payload)])
    con.close()
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OUTLOOP_HTTP_PORT": "1", **(env or {})}  # no worker answers: the file is read
    return subprocess.run([OUTLOOP, "quota", *args], capture_output=True, text=True, timeout=120, env=full)


def test_forecast_at_uses_only_events_up_to_it(db: Path) -> None:
    at = (T0 + timedelta(days=1, minutes=60)).isoformat()
    proc = run("forecast", "--window", "five_hour", "--at", at, "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    fc = json.loads(proc.stdout)
    assert fc["start"] == (T0 + timedelta(days=1)).isoformat()
    assert fc["end"] == (T0 + timedelta(days=1, hours=5)).isoformat()
    assert fc["used_tokens"] == 21 * 4000  # responses at 0, 3, ..., 60 minutes
    assert fc["used_tokens"] <= fc["p10"] <= fc["projected_tokens"] <= fc["p90"]


def test_status_prefers_the_official_figure(db: Path) -> None:
    at = (T0 + timedelta(days=1, minutes=40)).isoformat()
    proc = run("--json", "--db", str(db), "--at", at, env={"OUTLOOP_QUOTA_FIVE_HOUR_TOKENS": "100000"})
    assert proc.returncode == 0, proc.stderr
    five = json.loads(proc.stdout)["windows"][0]
    assert (five["window"], five["percent"], five["basis"]) == ("five_hour", 42.5, "official")
    # 20 minutes after it the status line is too old (15 minutes at most): the estimate counts
    late = run("--json", "--db", str(db), "--at", (T0 + timedelta(days=1, minutes=50)).isoformat(),
               env={"OUTLOOP_QUOTA_FIVE_HOUR_TOKENS": "100000"})
    five = json.loads(late.stdout)["windows"][0]
    assert (five["basis"], five["percent"]) == ("estimate", 68.0)  # 17 responses x 4,000 of 100,000


def test_backtest_and_bad_arguments(db: Path) -> None:
    proc = run("backtest", "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    bt = json.loads(proc.stdout)
    assert bt["blocks"] == 2 and bt["points"] == 6
    assert set(bt["mape"]) == {"model", "linear", "persistence", "mean_of_earlier"}
    nine = json.loads(run("backtest", "--db", str(db), "--json", "--fractions", "0.1,0.5,0.9").stdout)
    assert set(nine["mape_by_fraction"]) == {"0.1", "0.5", "0.9"}
    assert run("forecast", "--window", "year", "--db", str(db)).returncode == 2
    assert run("forecast", "--at", "yesterday", "--db", str(db)).returncode == 2
    assert run("--db", str(db), env={"OUTLOOP_QUOTA_LEVELS": "9,8,7"}).returncode == 2


@pytest.mark.parametrize(("text", "fractions"), [("0.25,0.5,0.75", (0.25, 0.5, 0.75)), ("0.1", (0.1,)),
                                                 ("0.5,2", None), ("0", None), ("", None), ("a,b", None)])
def test_backtest_fractions(text: str, fractions: tuple[float, ...] | None) -> None:
    if fractions is None:
        with pytest.raises(ValueError):
            parse_fractions(text)
    else:
        assert parse_fractions(text) == fractions


def test_backtest_without_windows_reports_no_error_figures(tmp_path: Path) -> None:
    """An empty database has nothing to backtest: no MAPE of 0% and no ratio of inf."""
    path = tmp_path / "empty.duckdb"
    con = duckdb.connect(str(path))
    migrate(con)
    con.close()
    proc = run("backtest", "--db", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "no five_hour window to backtest" in proc.stdout and "MAPE model" not in proc.stdout
    assert "inf" not in proc.stdout
    bt = json.loads(run("backtest", "--db", str(path), "--json").stdout)
    assert (bt["points"], bt["mape"], bt["ratio_to_best_baseline"]) == (0, None, None)


def test_status_of_old_usage_points_to_its_time(db: Path) -> None:
    """Nothing used in the five hours before now (the fixture's usage is of January 2026): the status says
    where the last usage is and how to see its windows, which the dashboard shows (it showed 0s only)."""
    proc = run("--db", str(db))
    assert proc.returncode == 0, proc.stderr
    last = (T0 + timedelta(days=1, minutes=117)).isoformat()
    assert f"no usage in the five hours before now; the last at {last}: 'outloop quota --at {last}'" in proc.stdout
    assert "the five hours before now" not in run("--db", str(db), "--at", last).stdout
