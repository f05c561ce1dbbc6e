"""The dashboard's request rules (pure), its thinning of a cumulative line, the time its quota panel is
assessed at, and the server itself on a real loopback socket over a real DuckDB file."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pytest

from outloop.agents.quota_risk import QuotaConfig
from outloop.client import query_file
from outloop.dashboard import Dashboard, refusal
from outloop.dashdata import cumulative, quota_at
from outloop.sinks.schema import migrate
from outloop.streams.httpguard import allowed_hosts

ALLOWED = allowed_hosts("127.0.0.1")
T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(("method", "path", "headers", "expected"), [
    ("GET", "/", {"Host": "127.0.0.1:8000"}, None),
    ("GET", "/api/quota", {"Host": "localhost:8000", "Origin": "http://localhost:8000"}, None),
    ("GET", "/api/quota", {"Host": "[::1]:8000", "Origin": "http://[::1]:8000", "Sec-Fetch-Site": "same-origin"}, None),
    ("HEAD", "/dashboard.js", {"Host": "127.0.0.1:8000", "Sec-Fetch-Site": "none"}, None),
    ("GET", "/api/quota", {}, 403),  # no Host at all
    ("GET", "/api/quota", {"Host": "attacker.example:8000"}, 403),  # DNS rebinding
    ("GET", "/api/quota", {"Host": "127.0.0.1:8000", "Origin": "http://attacker.example"}, 403),
    ("GET", "/api/quota", {"Host": "127.0.0.1:8000", "Origin": "https://127.0.0.1:8000"}, 403),
    ("GET", "/api/quota", {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:9999"}, 403),  # another local page
    ("GET", "/api/quota", {"Host": "127.0.0.1:8000", "Origin": "null"}, 403),  # a sandboxed frame or a file
    ("GET", "/api/quota", {"Host": "127.0.0.1:8000", "Sec-Fetch-Site": "cross-site"}, 403),
    ("GET", "/api/quota", {"Host": "127.0.0.1:8000", "Sec-Fetch-Site": "same-site"}, 403),
    ("POST", "/api/quota", {"Host": "127.0.0.1:8000"}, 405),
    ("DELETE", "/", {"Host": "127.0.0.1:8000"}, 405),
    ("GET", "/api/secrets", {"Host": "127.0.0.1:8000"}, 404),
    ("GET", "/../etc/passwd", {"Host": "127.0.0.1:8000"}, 404),
])
def test_refusal(method: str, path: str, headers: dict[str, str], expected: int | None) -> None:
    refused = refusal(method, path, headers, ALLOWED, 8000)
    assert (refused[0] if refused else None) == expected


def test_cumulative_thins_to_its_limit_and_keeps_the_end() -> None:
    points = [(T0 + timedelta(minutes=i), 10) for i in range(1000)]
    line = cumulative(points, limit=50)
    assert len(line) <= 50 and line[-1] == [points[-1][0].isoformat(), 10_000]
    assert [v for _, v in line] == sorted(v for _, v in line)
    assert cumulative(points[:3]) == [[T0.isoformat(), 10], [(T0 + timedelta(minutes=1)).isoformat(), 20],
                                      [(T0 + timedelta(minutes=2)).isoformat(), 30]]


def test_quota_is_assessed_now_unless_nothing_was_used_in_the_last_five_hours() -> None:
    assert quota_at(T0 - timedelta(hours=1), T0) == (T0, "now")
    assert quota_at(None, T0) == (T0, "now")
    old = T0 - timedelta(days=3)
    at, why = quota_at(old, T0)
    assert at == old and "last usage" in why


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_server_answers_each_panel_from_a_real_database(tmp_path: Path) -> None:
    db = tmp_path / "o.duckdb"
    con = duckdb.connect(str(db))
    migrate(con)
    con.execute("INSERT INTO dead_letters (id, topic, reason, detail, \"at\") VALUES "
                "('dl:1', 'outloop.events', 'undecodable', 'not JSON', ?)", [T0])
    con.close()
    board = Dashboard("127.0.0.1", 0, lambda sql, params: query_file(db, sql, params), lambda: {"worker": {"ok": True}},
                      QuotaConfig, now=lambda: T0).start()
    try:
        for panel in ("quota", "patterns", "context", "routing", "recommendations", "dead_letters", "health"):
            status, body = _get(board.url + "api/" + panel)
            assert status == 200 and "data" in body, (panel, body)
        assert _get(board.url + "api/dead_letters")[1]["data"]["total"] == 1
        assert _get(board.url + "api/recommendations")[1]["data"]["note"].startswith("none yet")
        assert _get(board.url + "api/quota", {"Origin": "http://attacker.example"})[0] == 403
    finally:
        board.stop()


def test_report_says_when_the_quota_was_assessed(tmp_path: Path) -> None:
    """Old transcripts only: the static report, like the dashboard, says its quota windows are those of the
    last usage, not of the day it was written (it showed January's windows under a December date, unsaid)."""
    from outloop.dashdata import quota
    from outloop.htmlreport import page

    db = tmp_path / "o.duckdb"
    con = duckdb.connect(str(db))
    migrate(con)
    con.execute("INSERT INTO usage (id, session_id, model, \"timestamp\", input_tokens, output_tokens, "
                "cache_read_input_tokens, cache_creation_input_tokens, cost_usd, source) "
                "VALUES ('m:r', 's', 'claude-sonnet-4-5', ?, 10, 10, 10, 10, 0.01, 'transcript')",
                [T0 - timedelta(days=40)])
    con.close()
    figures = {"quota": quota(lambda sql, params: query_file(db, sql, params), T0, QuotaConfig())}
    text = page(figures, {}, T0, str(db))
    last = (T0 - timedelta(days=40)).isoformat()[:16]
    assert f"assessed as of the last usage ({last}Z): none in the five hours before now; 1 usage records" in text
