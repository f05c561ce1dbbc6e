"""Quota windows, burn rates and the forecast: pure functions, time passed in, table tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from outloop.agents.quota import Tokens, UsageRow, blocks, burn, daily_rates, month_bounds, window_at
from outloop.agents.quota_forecast import forecast

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def row(minutes: float, total: int = 1000, cost: float | None = 0.01) -> UsageRow:
    """A response ``minutes`` after 12:00 with ``total`` tokens split over the four kinds."""
    q = total // 4
    return UsageRow(T0 + timedelta(minutes=minutes), q, q, q, total - 3 * q, cost, "claude-sonnet-4-5")


# timeline (minutes after 12:00) -> expected block starts (hours after 12:00) and their row counts
#  12:20 |  13:50 |                      a block is 12:00-17:00
#  12:20 |  17:10 |                      17:10 is past the block's end: new block at 17:00
#  12:20 |  (6 h gap) 18:30 |            a gap over 5 h: new block at 18:00
BLOCK_CASES = [
    ([20, 110], [(0, 2)]),
    ([20, 310], [(0, 1), (5, 1)]),
    ([20, 390], [(0, 1), (6, 1)]),
    ([20, 21, 299, 300, 301], [(0, 3), (5, 2)]),  # 17:00 itself is past the end
    ([], []),
]


@pytest.mark.parametrize(("minutes", "expected"), BLOCK_CASES)
def test_blocks_follow_ccusage(minutes: list[float], expected: list[tuple[int, int]]) -> None:
    found = blocks([row(m) for m in reversed(minutes)])  # order of the input does not matter
    assert [((b.start - T0) / timedelta(hours=1), len(b.rows)) for b in found] == expected
    assert all(b.end - b.start == timedelta(hours=5) for b in found)


def test_tokens_keep_kinds_apart() -> None:
    t = Tokens.of([UsageRow(T0, 1, 2, 3, 4, 0.5), UsageRow(T0, 10, 20, 30, 40, None)])
    assert (t.input, t.output, t.cache_write, t.cache_read, t.total, t.cost_usd, t.requests) == (
        11, 22, 33, 44, 110, 0.5, 2)


@pytest.mark.parametrize(("at_min", "open_", "rows_in"), [
    (30, True, 2), (10, True, 1), (299, True, 3), (301, False, 0), (5, False, 0)])
def test_window_at_uses_rows_up_to_at_only(at_min: int, open_: bool, rows_in: int) -> None:
    rows = [row(10), row(20), row(200)]
    w = window_at("five_hour", rows, T0 + timedelta(minutes=at_min))
    assert (w is not None) == open_
    if w is not None:
        assert len(w.rows) == rows_in


def test_month_window_and_bounds() -> None:
    assert month_bounds(datetime(2026, 12, 31, 23, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    w = window_at("month", [row(-60 * 24 * 10), row(0), row(10)], T0 + timedelta(hours=1))
    assert w is not None and len(w.rows) == 2


def test_burn_rates() -> None:
    rows = [row(0, 6000), row(30, 6000), row(90, 12000)]
    w = window_at("five_hour", rows, T0 + timedelta(hours=2))
    assert w is not None
    b = burn("five_hour", w, T0 + timedelta(hours=2))
    assert b.used.total == 24000
    assert b.per_hour == pytest.approx(12000)  # 24k over the 2 h since 12:00
    assert b.recent_per_hour == pytest.approx(12000)  # the last hour holds the 12k row at 13:30


def test_daily_rates_today_against_usual() -> None:
    rows = [row(-60 * 24 * d, 1000) for d in range(1, 8)] + [row(-60, 5000), row(-30, 5000)]
    today, usual = daily_rates(rows, T0)
    assert (today, usual) == (10000.0, 1000.0)


def test_forecast_uses_only_rows_up_to_at_and_is_deterministic() -> None:
    past = [row(m - 60 * 24, 5000) for m in range(0, 120, 3)]  # yesterday: a 2-hour session
    now = [row(m, 5000) for m in range(0, 60, 3)]
    at = T0 + timedelta(minutes=61)
    a = forecast("five_hour", past + now, at)
    b = forecast("five_hour", past + now + [row(90, 10**9)], at)  # a later row changes nothing
    assert a == b
    assert a.used_tokens == 100000
    assert a.used_tokens <= a.p10 <= a.projected_tokens <= a.p90
    assert a.start == T0 and a.end == T0 + timedelta(hours=5)


def test_forecast_of_an_ended_session_is_what_was_used() -> None:
    past = [row(m - 60 * 24 * d, 5000) for d in (1, 2, 3) for m in range(0, 60, 3)]
    now = [row(m, 5000) for m in range(0, 30, 3)]
    f = forecast("five_hour", past + now, T0 + timedelta(hours=3))  # idle for 2.5 h
    assert f.projected_tokens == f.used_tokens == f.p10 == 50000
    # only the three overnight gaps and the weak prior are 2.5 h or longer: a return within the window
    # stays possible (about 1 in 10), a few calls of 5000 tokens at most for the upper end
    assert f.model["p_resume"] < 0.15
    assert f.p90 - f.used_tokens <= 0.5 * f.used_tokens


def test_forecast_of_an_idle_window_stays_inside_its_interval() -> None:
    """Nothing used in the window (old transcripts, weeks later): most paths stay at 0, so the projection
    is 0 too, not the usage of the rare paths where activity resumes (it was 1.2M-7.3M tokens above a
    p90 of 0 on the dev traces, varying from one second to the next)."""
    past = [row(m - 60 * 24 * d, 50_000) for d in range(1, 8) for m in range(0, 60, 3)]  # a week of 1-hour sessions
    for days in (20, 40, 300):
        f = forecast("five_hour", past, T0 + timedelta(days=days, minutes=7))
        assert f.used_tokens == 0 and f.p10 == 0
        assert f.p10 <= f.projected_tokens <= f.p90, f
        assert f.mean_tokens >= f.projected_tokens  # the rare resumed paths stay in the mean


def test_forecast_time_to_limit() -> None:
    past = [row(m - 60 * 24 * d, 5000) for d in (1, 2) for m in range(0, 240, 3)]
    now = [row(m, 5000) for m in range(0, 60, 3)]
    at = T0 + timedelta(minutes=60)
    f = forecast("five_hour", past + now, at, limit_tokens=150000)
    assert f.p_exceed is not None and f.p_exceed > 0.5
    assert f.time_to_limit_s is not None and 0 < f.time_to_limit_s < 4 * 3600
    far = forecast("five_hour", past + now, at, limit_tokens=10**12)
    assert far.time_to_limit_s is None and far.p_exceed == 0.0



def test_forecast_of_a_window_not_yet_opened_stays_inside_its_interval() -> None:
    # a short session three days ago; nothing since: most paths stay at 0 tokens until the window's end
    past = [row(m - 60 * 24 * 3, 5000) for m in range(0, 30, 3)]
    f = forecast("five_hour", past, T0)
    assert f.used_tokens == 0
    assert f.p10 <= f.projected_tokens <= f.p90
