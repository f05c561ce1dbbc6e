"""Pattern folds: idempotent counts, rolling windows over event time, confidence, status, sequences."""

from __future__ import annotations

import math
import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from outloop.agents.patterns import (
    ConfidenceWeights,
    Occurrence,
    PatternStats,
    PatternTable,
    StatusRules,
    Welford,
    agg,
    confidence,
    dominant_effect,
    effect_counts,
    initialize,
    result,
    status_of,
)
from outloop.agents.sequences import SequenceConfig, SequenceMiner

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
SIG = "test:pytest:tests/unit"


def occ(
    i: int,
    at: datetime,
    session: str = "s1",
    tokens: int | None = 1000,
    duration: float | None = 2000.0,
    success: bool | None = True,
    command: str | None = "pytest -q tests/unit",
    sig: str = SIG,
    effect: str = "writes files",
) -> Occurrence:
    return Occurrence(sig, f"toolu_{i}", session, at, "test", effect, tokens, duration, success, command)


def test_fold_shape_and_idempotency() -> None:
    state = initialize(SIG)
    o = occ(1, T0)
    state = agg(state, o)
    before = result(state)
    for _ in range(3):
        assert state.add(o) is False  # redelivery
    state = agg(state, o)
    assert result(state) == before
    assert before["occurrences"] == 1 and before["distinct_sessions"] == 1


def test_replay_of_a_whole_history_counts_nothing_twice() -> None:
    history = [occ(i, T0 + timedelta(hours=i), session=f"s{i % 3}") for i in range(50)]
    table = PatternTable()
    assert table.extend(history) == 50
    first = table.rows()
    assert table.extend(history) == 0  # replay
    assert table.extend(reversed(history)) == 0
    assert table.rows() == first
    assert first[0]["occurrences"] == 50 and first[0]["distinct_sessions"] == 3


def test_order_does_not_matter_inside_the_retention() -> None:
    history = [
        occ(i, T0 + timedelta(minutes=7 * i), session=f"s{i % 4}", tokens=100 + i, duration=10.0 * i)
        for i in range(40)
    ]
    shuffled = history[:]
    random.Random(3).shuffle(shuffled)
    a, b = PatternStats(SIG), PatternStats(SIG)
    for o in history:
        a.add(o)
    for o in shuffled:
        b.add(o)
    ra, rb = a.result(), b.result()
    for key in (
        "occurrences",
        "distinct_sessions",
        "windows",
        "output_tokens",
        "ok",
        "failed",
        "first_seen_ms",
        "last_seen_ms",
        "samples",
    ):
        assert ra[key] == rb[key], key
    assert ra["tokens"]["mean"] == pytest.approx(rb["tokens"]["mean"])
    assert ra["duration_ms"]["std"] == pytest.approx(rb["duration_ms"]["std"])


def test_rolling_windows_over_event_time() -> None:
    # timeline (hours before the watermark W):   -800  -200   -30   -5   -0.5   0
    #                                              x     x      x     x    x     x
    # 1h: 2 | 24h: 3 | 7d (168 h): 4 | 30d (720 h): 5 (the -800 one is outside every window)
    w = T0
    hours = [800, 200, 30, 5, 0.5, 0]
    st = PatternStats(SIG)
    for i, h in enumerate(hours):
        st.add(occ(i, w - timedelta(hours=h)))
    counts = st.window_counts(w)
    assert counts["1h"] == 2  # -0.5 h and 0
    assert counts["24h"] == 3  # + -5 h
    assert counts["7d"] == 4  # + -30 h
    assert counts["30d"] == 5  # + -200 h
    assert st.occurrences == 6  # totals keep everything
    later = w + timedelta(days=2)
    assert st.window_counts(later)["24h"] == 0 and st.window_counts(later)["7d"] == 4


def test_late_occurrences_behind_the_retention_are_dropped_and_counted() -> None:
    st = PatternStats(SIG)
    st.add(occ(1, T0))
    assert st.add(occ(2, T0 - timedelta(days=31))) is False
    assert st.late == 1 and st.occurrences == 1
    assert st.add(occ(3, T0 - timedelta(days=29))) is True


def test_memory_is_bounded() -> None:
    st = PatternStats(SIG, max_ids=100, max_sessions=10, max_samples=3)
    for i in range(1000):
        st.add(
            occ(i, T0 + timedelta(seconds=i), session=f"s{i}", command=f"pytest -q tests/unit/test_{i}.py")
        )
    assert len(st._ids) <= 100 and len(st._times) <= 100
    assert len(st._sessions) <= 10 and len(st.samples) == 3
    assert st.occurrences == 1000 and st.distinct_sessions == 1000
    assert st.add(occ(5, T0 + timedelta(seconds=5))) is False  # forgotten id, but behind the floor now


def test_welford_matches_statistics() -> None:
    xs = [3.0, 7.5, 1.25, 9.0, 4.0, 4.0, 12.5]
    w = Welford()
    for x in xs:
        w.add(x)
    assert w.mean == pytest.approx(statistics.mean(xs))
    assert w.std == pytest.approx(statistics.stdev(xs))
    assert (w.lo, w.hi) == (min(xs), max(xs))
    assert w.cv == pytest.approx(statistics.stdev(xs) / statistics.mean(xs))


def test_samples_are_redacted_bounded_and_order_independent() -> None:
    st = PatternStats(SIG)
    for i in range(10):
        st.add(
            occ(
                i,
                T0 + timedelta(minutes=i),
                command=f"API_TOKEN=abc{i}secretvalue pytest tests/unit -k case{i}",
            )
        )
    assert len(st.samples) == 5
    assert all("secretvalue" not in s[2] for s in st.samples)
    assert st.samples[0][0] < st.samples[-1][0]


def test_confidence_formula_in_numbers() -> None:
    st = PatternStats(SIG)
    for i in range(20):  # 20 occurrences in 5 sessions: frequency saturates at 1.0
        st.add(
            occ(
                i,
                T0 + timedelta(minutes=i),
                session=f"s{i % 5}",
                tokens=1000,
                duration=2000.0,
                success=i % 10 != 0,
            )
        )
    score, why = confidence(st)
    assert why["frequency"]["value"] == pytest.approx(1.0)
    assert why["consistency"]["value"] == pytest.approx(1.0)  # identical durations and tokens: CV 0
    assert why["success"]["value"] == pytest.approx((18 + 1) / (20 + 2))
    expected = 100 * (40 * 1.0 + 30 * 1.0 + 30 * 19 / 22) / 100
    assert score == round(expected)
    assert sum(why[k]["points"] for k in ("frequency", "consistency", "success")) == pytest.approx(expected)


def test_confidence_weights_are_configurable_and_bounded() -> None:
    st = PatternStats(SIG)
    st.add(occ(1, T0, tokens=None, duration=None, success=None))
    score, why = confidence(st)
    f = (math.log1p(1) / math.log1p(20) + math.log1p(1) / math.log1p(5)) / 2
    assert why["consistency"]["value"] == 0.5 and why["success"]["value"] == 0.5
    assert score == round(40 * f + 15 + 15)
    only_freq, _ = confidence(st, ConfidenceWeights(frequency=1, consistency=0, success=0))
    assert only_freq == round(100 * f)
    assert confidence(st, ConfidenceWeights(0, 0, 0))[0] == 0
    for n in (0, 1, 5, 1000):
        s = PatternStats(SIG)
        for i in range(n):
            s.add(
                occ(
                    i,
                    T0 + timedelta(seconds=i),
                    duration=float(i % 7) * 100,
                    tokens=i % 13,
                    success=i % 2 == 0,
                )
            )
        assert 0 <= confidence(s)[0] <= 100


def _stats(
    n: int,
    effect: str = "writes files",
    tokens: int | None = 500,
    success: bool = True,
    sessions: int = 5,
    spread: bool = False,
) -> PatternStats:
    st = PatternStats(SIG)
    for i in range(n):
        st.add(
            occ(
                i,
                T0 + timedelta(minutes=i),
                session=f"s{i % sessions}",
                effect=effect,
                success=success,
                tokens=(tokens * (1 + 9 * (i % 2)) if tokens and spread else tokens),
                duration=100.0 * (1 + 20 * (i % 2)) if spread else 2000.0,
            )
        )
    return st


@pytest.mark.parametrize(
    ("st", "kwargs", "expected"),
    [
        (_stats(20), {}, "candidate"),
        (_stats(4), {}, "detected"),  # too few
        (_stats(20, tokens=None), {}, "detected"),  # no measurable savings
        (_stats(20, effect="destructive"), {}, "detected"),  # never routable
        (_stats(20, effect="unknown"), {}, "detected"),
        (_stats(6, success=False, sessions=1, spread=True), {}, "detected"),  # low confidence
        (
            _stats(20, success=False),
            {},
            "candidate",
        ),  # a test run that keeps failing is still worth moving out
        (_stats(20), {"active": True}, "active"),
        (_stats(20), {"rejected": True, "active": True}, "rejected"),
    ],
)
def test_status(st: PatternStats, kwargs: dict[str, bool], expected: str) -> None:
    score, _ = confidence(st)
    assert status_of(st, score, **kwargs) == expected


def test_status_rules_are_configurable() -> None:
    st = _stats(4)
    assert status_of(st, confidence(st)[0], StatusRules(min_occurrences=3, min_confidence=50)) == "candidate"


def test_rows_explain_themselves() -> None:
    table = PatternTable()
    for i in range(12):
        table.add(occ(i, T0 + timedelta(minutes=i), session=f"s{i % 3}"))
    table.add(occ(99, T0, sig="read:file:src/app.py", command="cat src/app.py"))
    rows = table.rows(decisions={"read:file:src/app.py": "rejected"})
    top = rows[0]
    assert top["signature"] == SIG and top["status"] == "candidate"
    assert top["samples"] == ["pytest -q tests/unit"]
    assert set(top["confidence_breakdown"]) >= {"frequency", "consistency", "success", "weights", "score"}
    assert top["windows"]["24h"] == 12
    assert rows[1]["status"] == "rejected"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        PatternStats(SIG).add(occ(1, datetime(2026, 1, 1)))  # noqa: DTZ001


# ---- sequences -------------------------------------------------------------------------------------


def _session(miner: SequenceMiner, session: str, sigs: list[str], fail: set[int] = frozenset()) -> None:
    for i, s in enumerate(sigs):
        miner.add(session, f"{session}-{i}", s, T0 + timedelta(seconds=i), success=i not in fail)


def test_edit_test_loops_counted_by_distinct_sessions() -> None:
    miner = SequenceMiner()
    loop = ["edit:file:src/a.py", "test:pytest:tests", "edit:file:src/a.py", "test:pytest:tests"]
    for s in ("a", "b", "c"):
        _session(miner, s, loop)
    _session(miner, "a", loop)  # replayed: no change
    top = miner.patterns(min_sessions=2, level="category", n=4)
    assert top[0].ngram == ("edit", "test", "edit", "test")
    assert top[0].sessions == 3 and top[0].occurrences == 3
    pairs = {p.ngram: p for p in miner.patterns(level="category", n=2)}
    assert pairs[("edit", "test")].sessions == 3 and pairs[("edit", "test")].occurrences == 6


def test_failures_are_marked() -> None:
    miner = SequenceMiner()
    for s in ("a", "b"):
        _session(miner, s, ["build:npm:build", "edit:file:src/x.ts", "build:npm:build"], fail={0})
    top = miner.patterns(level="category", n=3)
    assert top[0].text == "build! -> edit -> build"


def test_normal_rhythm_is_excluded_and_repeats_collapse() -> None:
    miner = SequenceMiner()
    for s in ("a", "b"):
        _session(
            miner,
            s,
            [
                "plan:todowrite:*",
                "read:file:a",
                "read:file:a",
                "plan:todowrite:*",
                "read:file:a",
                "edit:file:a",
            ],
        )
    cats = {p.ngram for p in miner.patterns(level="category")}
    assert ("read", "edit") in cats
    assert not any("plan" in ng for ng in cats)
    assert ("read", "read") not in cats  # collapsed
    custom = SequenceMiner(
        SequenceConfig(exclude_categories=(), exclude_signatures=(r"read:.*",), collapse_repeats=False)
    )
    for s in ("a", "b"):
        _session(custom, s, ["plan:todowrite:*", "read:file:a", "plan:todowrite:*", "edit:file:a"])
    assert {p.ngram for p in custom.patterns(level="category", n=2)} == {("plan", "plan"), ("plan", "edit")}


def test_sequence_memory_is_bounded() -> None:
    miner = SequenceMiner(SequenceConfig(max_sessions=5, max_ngrams=50, levels=("signature",)))
    for s in range(40):
        _session(miner, f"s{s}", [f"run:x:{s}-{i}" for i in range(10)])
    assert len(miner) <= 50 and len(miner._sessions) <= 5


def test_state_round_trip_keeps_idempotency() -> None:
    import json

    st = PatternStats(SIG)
    history = [occ(i, T0 + timedelta(minutes=i), session=f"s{i % 2}", tokens=100 * i) for i in range(8)]
    for o in history[:5]:
        st.add(o)
    fresh = PatternStats(SIG)
    assert (
        PatternStats.from_state(json.loads(json.dumps(fresh.to_state(), allow_nan=False))).result()
        == fresh.result()
    )
    restored = PatternStats.from_state(json.loads(json.dumps(st.to_state(), allow_nan=False)))
    assert restored.result() == st.result()
    assert all(restored.add(o) is False for o in history[:5])  # already counted before the restart
    for o in history[5:]:
        restored.add(o)
        st.add(o)
    assert restored.result() == st.result()


def test_each_occurrence_keeps_its_side_effect_and_the_dominant_class_decides() -> None:
    st = initialize("vcs:git:status")
    for i in range(10):
        st.add(occ(i, T0 + timedelta(seconds=i), sig="vcs:git:status", effect="read-only" if i < 8 else "destructive"))
    out = result(st)
    assert out["side_effects"] == {"read-only": 8, "destructive": 2}
    assert (out["side_effect"], out["side_effect_share"]) == ("read-only", 0.8)
    restored = PatternStats.from_state(st.to_state())
    assert restored.side_effects == st.side_effects and restored.side_effect == "read-only"
    assert st.add(occ(3, T0, sig="vcs:git:status", effect="destructive")) is False  # redelivery counts nothing
    assert result(st)["side_effects"] == {"read-only": 8, "destructive": 2}


@pytest.mark.parametrize(("counts", "expected"), [
    ({}, ("", None)),
    ({"read-only": 3}, ("read-only", 1.0)),
    ({"read-only": 2, "destructive": 2}, ("destructive", 0.5)),  # a tie goes to the riskier class
    ({"network": 1, "writes files": 3}, ("writes files", 0.75)),
])
def test_dominant_effect(counts: dict[str, int], expected: tuple[str, float | None]) -> None:
    assert dominant_effect(counts) == expected


def test_effect_counts_are_ordered_safest_first_and_drop_zeros() -> None:
    assert list(effect_counts({"destructive": 1, "odd": 2, "read-only": 4, "network": 0})) == [
        "read-only", "destructive", "odd"]
