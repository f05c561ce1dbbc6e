"""The renewal forecast of a five-hour window: gaps between calls, tokens per call, simulated paths."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from outloop.agents.quota import Block, UsageRow
from outloop.agents.quota_forecast import ModelParams, forecast
from outloop.agents.quota_renewal import (
    PRIOR_END_SHARE,
    PRIOR_GAPS,
    PRIOR_TURN_GAPS,
    GapModel,
    RenewalParams,
    TurnModel,
    context_growth,
    gap_model,
    simulate,
    tokens_per_call,
    turn_model,
)

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def call(seconds: float, context: int, output: int = 100) -> UsageRow:
    """A call ``seconds`` after 12:00 that read ``context`` tokens (mostly from the cache) and wrote ``output``."""
    return UsageRow(T0 + timedelta(seconds=seconds), 10, output, 90, context - 100)


def window(rows: list[UsageRow]) -> Block:
    return Block(T0, T0 + timedelta(hours=5), tuple(rows))


@pytest.mark.parametrize(("gaps", "seconds", "survival"), [
    ((10.0, 20.0, 30.0, 40.0), 0, 1.0),
    ((10.0, 20.0, 30.0, 40.0), 20, 0.75),  # a gap equal to the idle time still counts: its call comes now
    ((10.0, 20.0, 30.0, 40.0), 25, 0.5),
    ((10.0, 20.0, 30.0, 40.0), 41, 0.0),
])
def test_survival_curve(gaps: tuple[float, ...], seconds: float, survival: float) -> None:
    model = GapModel(gaps, tuple(float(i + 1) for i in range(len(gaps))))
    assert model.survival(seconds) == pytest.approx(survival)


def test_conditional_draw_only_returns_gaps_at_least_the_idle_time() -> None:
    model = GapModel((5.0, 60.0, 3600.0), (1.0, 2.0, 3.0))
    rng = random.Random(1)
    assert {model.draw(rng, 30) for _ in range(200)} == {60.0, 3600.0}
    assert model.draw(rng, 4000) is None


def test_gap_model_weighs_the_users_gaps_against_the_prior() -> None:
    rows = [call(s, 1000) for s in (0, 10, 20, 30)]  # three gaps of 10 s
    model = gap_model(rows, prior_strength=3.0)
    assert model.total == pytest.approx(6.0)  # 3 gaps + 3 pseudo-gaps
    assert model.survival(10) == pytest.approx((3 + 3 * sum(w for g, w in PRIOR_GAPS if g >= 10)) / 6)
    assert model.survival(11) == pytest.approx(3 * sum(w for g, w in PRIOR_GAPS if g >= 11) / 6)


@pytest.mark.parametrize(("contexts", "per_call", "growth"), [
    ([1000], 1000, 0.0),
    ([1000, 5000, 2000], 2000, 0.0),  # median of the last calls; too few calls for a growth
    ([10_000 + 1000 * i for i in range(10)], 17_000, 1000.0),  # grows 1000 a call
    ([50_000 - 1000 * i for i in range(10)], 43_000, 0.0),  # a shrinking context does not grow
])
def test_tokens_per_call_and_context_growth(contexts: list[int], per_call: float, growth: float) -> None:
    w = window([call(i, c, output=0) for i, c in enumerate(contexts)])
    assert tokens_per_call(w, 5) == pytest.approx(per_call)
    assert context_growth(w, 5) == pytest.approx(growth)


def test_simulation_of_a_regular_caller_and_of_a_stopped_one() -> None:
    p = RenewalParams(paths=50)
    every_minute = GapModel((60.0,), (1.0,))
    finals, _ = simulate(random.Random(0), every_minute, 0.0, 600.0, 1000.0, 0.0, 5000, None, p)
    assert set(finals) == {15000.0}  # calls at 0, 60, ..., 540 s (600 s is past) : ten more calls
    grown, crossed = simulate(random.Random(0), every_minute, 30.0, 600.0, 1000.0, 100.0, 0, 3000, p)
    assert set(grown) == {sum(1000 + 100 * k for k in range(1, 11))}  # first call 30 s from now
    assert set(crossed) == {150.0}  # 1100 + 1200 + 1300 passes 3000 at the third call (30 + 2 x 60 s)
    never = GapModel((60.0,), (1.0,))
    stopped, _ = simulate(random.Random(0), never, 120.0, 600.0, 1000.0, 0.0, 5000, None, p)
    assert set(stopped) == {5000.0}  # idle longer than any gap ever seen: no more calls


def test_five_hour_forecast_of_an_active_session_rises_with_its_context() -> None:
    # yesterday: a 2-hour session, a call every 30 s; today: 30 minutes so far, still going
    past = [call(s - 24 * 3600, 20_000) for s in range(0, 7200, 30)]
    small = [call(s, 20_000) for s in range(0, 1800, 30)]
    big = [call(s, 80_000) for s in range(0, 1800, 30)]
    at = T0 + timedelta(minutes=30)
    p = ModelParams(renewal=RenewalParams(paths=400))
    a, b = forecast("five_hour", past + small, at, params=p), forecast("five_hour", past + big, at, params=p)
    assert a.model["p_resume"] > 0.9 and a.used_tokens < a.p10 <= a.projected_tokens <= a.p90
    assert b.projected_tokens - b.used_tokens == pytest.approx(4 * (a.projected_tokens - a.used_tokens), rel=0.1)


def test_simulation_work_is_bounded_for_a_heavy_user() -> None:
    every_minute = GapModel((60.0,), (1.0,))  # ten calls a path in 600 s (at 60, 120, ..., 600)
    finals, _ = simulate(random.Random(0), every_minute, 0.0, 600.0, 1.0, 0.0, 0, None,
                         RenewalParams(paths=1000, work=1000, min_paths=50))
    assert len(finals) == 100  # 1000 calls simulated: enough
    few, _ = simulate(random.Random(0), every_minute, 0.0, 600.0, 1.0, 0.0, 0, None,
                      RenewalParams(paths=1000, work=10, min_paths=50))
    assert len(few) == 50  # never fewer than min_paths


def test_the_point_stays_inside_the_interval() -> None:
    # a day of calls every 5 s without a stop, then a new window with one call: nearly every path goes on
    # for five hours, and the few that stop at once would pull the 1/final-weighted median below p10
    rows = [call(5 * i, 50_000) for i in range(3000)]
    rows.append(call(3000 * 5 + 6 * 3600, 50_000))
    f = forecast("five_hour", rows, rows[-1].ts + timedelta(seconds=1),
                 params=ModelParams(renewal=RenewalParams(paths=300)))
    assert f.used_tokens == 50_100
    assert f.p10 <= f.projected_tokens <= f.p90


def typed(seconds: float, turn: str | None, context: int = 20_000) -> UsageRow:
    return call(seconds, context)._replace(turn=turn)


def test_turn_model_keeps_the_gaps_after_each_kind_of_response_apart() -> None:
    # turns of four tool calls 10 s apart, each ending with an answer the user takes 5 min to answer
    rows = [typed(330 * k + 10 * i, "tool" if i < 3 else "end") for k in range(5) for i in range(4)]
    model = turn_model(rows, prior_strength=2.0, end_strength=10.0)
    tool, end = model.of("tool"), model.of("end")
    assert tool.total == pytest.approx(15 + 2) and end.total == pytest.approx(4 + 2)  # own gaps + the prior
    assert tool.survival(11) == pytest.approx(2 * sum(w for g, w in PRIOR_TURN_GAPS["tool"] if g >= 11) / 17)
    assert end.survival(300) == pytest.approx((4 + 2 * sum(w for g, w in PRIOR_TURN_GAPS["end"] if g >= 300)) / 6)
    assert model.p_end == pytest.approx((4 + 10 * PRIOR_END_SHARE) / (19 + 10))
    assert model.of(None) is model.all and model.all.total == pytest.approx(19 + 2)


def test_rows_without_a_turn_state_give_the_pooled_model() -> None:
    rows = [call(s, 1000) for s in (0, 10, 20, 30)]
    model = turn_model(rows, prior_strength=3.0, end_strength=10.0)
    assert model.by_turn == {} and model.of("tool") is model.all
    assert model.all.gaps == gap_model(rows, 3.0).gaps and model.all.cum == gap_model(rows, 3.0).cum
    p = RenewalParams(paths=200)
    pooled, _ = simulate(random.Random(3), gap_model(rows, 3.0), 0.0, 600.0, 100.0, 0.0, 0, None, p)
    same, _ = simulate(random.Random(3), model, 0.0, 600.0, 100.0, 0.0, 0, None, p, "tool")
    assert pooled == same  # a history that never says its turn state forecasts as before


def test_ten_quiet_minutes_mean_a_slow_tool_or_a_user_who_left() -> None:
    # the day before: turns of tool calls seconds apart (a few slow 15-minute builds among them); the user
    # answered within 2 minutes, or left for the night after one answer in five
    rows: list[UsageRow] = []
    t = -80 * 3600.0
    for k in range(40):
        for i in range(6):
            rows.append(typed(t, "tool"))
            t += 900 if (k % 8 == 0 and i == 2) else 5
        rows.append(typed(t, "end"))
        t += 10 * 3600 if k % 5 == 4 else 90
    at = T0 + timedelta(minutes=10)
    p = ModelParams(renewal=RenewalParams(paths=400))
    after_tool = forecast("five_hour", [*rows, typed(0, "tool")], at, params=p)
    after_end = forecast("five_hour", [*rows, typed(0, "end")], at, params=p)
    assert rows[-1].ts < T0 - timedelta(hours=5) and after_tool.used_tokens == 20_100  # one call in this window
    assert after_tool.model["p_resume"] > 0.9 and after_tool.projected_tokens > after_tool.used_tokens
    assert after_end.model["p_resume"] < 0.5 and after_end.projected_tokens == after_end.used_tokens
    assert after_tool.model["last_turn"] == "tool" and after_end.model["last_turn"] == "end"


def test_forecast_percentiles_show_the_atom_of_the_paths_that_stop() -> None:
    # an answer an hour ago, after a history where answers were followed by long absences half the time
    rows = [typed(-30 * 3600 + 600 * k, "end") for k in range(20)] + [typed(0, "end")]
    f = forecast("five_hour", rows, T0 + timedelta(hours=1), params=ModelParams(renewal=RenewalParams(paths=400)))
    below, upto = f.cdf(f.used_tokens)
    assert below == 0.0 and upto > 0.5  # most paths stop where the usage is now
    assert f.p10 == f.used_tokens and f.model["interval_mass"] >= 0.8
    assert f.cdf(f.p90 + 1)[0] >= 0.9 and f.cdf(f.percentiles[-1])[1] == 1.0 and len(f.percentiles) == 101


def test_paths_stop_at_max_calls_and_a_typed_session_mixes_both_kinds_of_gap() -> None:
    every_second = GapModel((1.0,), (1.0,))
    capped, _ = simulate(random.Random(0), every_second, 0.0, 3600.0, 1.0, 0.0, 0, None,
                         RenewalParams(paths=20, min_paths=20, max_calls=100))
    assert set(capped) == {100.0}  # 3,601 calls fit in the hour; the bound keeps 100
    # tool calls 10 s apart; an answer is followed by 1,000 s; one response in four ends its turn
    model = TurnModel(every_second, {"tool": GapModel((10.0,), (1.0,)), "end": GapModel((1000.0,), (1.0,))}, 0.25)
    finals, _ = simulate(random.Random(0), model, 0.0, 3600.0, 1.0, 0.0, 0, None, RenewalParams(paths=2000), "tool")
    mean_gap = 0.75 * 10 + 0.25 * 1000  # 257.5 s: about 14 calls in the hour
    assert sum(finals) / len(finals) == pytest.approx(3600 / mean_gap + 1, rel=0.1)
    assert min(finals) < max(finals)  # the paths differ by how many answers they drew
