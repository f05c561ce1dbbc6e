"""Timelines, the estimator's calibration, fidelity and the net saving of one decision: table tests."""

from __future__ import annotations

from typing import Any

import pytest

from outloop.agents.calibration import Estimator, calibrate
from outloop.agents.fidelity import Fidelity, evidence, fidelity
from outloop.agents.pricing import PriceTable
from outloop.agents.savings import saving
from outloop.agents.timeline import build_timeline

SONNET = "claude-sonnet-4-5-20250929"


def _call(mid: str, ctx: int, out: int, tools: list[tuple[str, str, dict[str, Any]]] = (),  # type: ignore[assignment]
          text: str = "", uuid: str | None = None, model: str = SONNET) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "tool_use", "id": t, "name": n, "input": i} for t, n, i in tools]
    if text:
        content.append({"type": "text", "text": text})
    return {"type": "assistant", "sessionId": "s1", "uuid": uuid or f"u-{mid}-{len(content)}-{out}",
            "requestId": f"r-{mid}", "timestamp": "2026-11-02T10:00:00Z",
            "message": {"id": mid, "model": model, "content": content,
                        "usage": {"input_tokens": 3, "cache_read_input_tokens": ctx - 3,
                                  "cache_creation_input_tokens": 0, "output_tokens": out}}}


def _result(tid: str, text: str, error: bool = False) -> dict[str, Any]:
    return {"type": "user", "sessionId": "s1", "uuid": f"res-{tid}",
            "message": {"content": [{"type": "tool_result", "tool_use_id": tid, "content": text,
                                     "is_error": error}]}}


BOUNDARY = {"type": "system", "subtype": "compact_boundary", "sessionId": "s1", "uuid": "cb",
            "compactMetadata": {"trigger": "auto", "preTokens": 150000}}

# call 0 issues t1; t1's output is seen by call 1; calls 1, 2 re-read it; a compaction before call 3
RECORDS = [
    _call("m0", 10_000, 50, [("t1", "Bash", {"command": "pytest -q"})]),
    _call("m0", 10_000, 120, uuid="u-m0-again"),  # the same response written again, growing output
    _result("t1", "Exit code 1\nFAILED tests/test_a.py::test_sum - assert 3 == 4\n" + "x" * 4000, error=True),
    _call("m1", 12_000, 30, [("t2", "Read", {"file_path": "tests/test_a.py"})]),
    _result("t2", "def test_sum(): ..."),
    _call("m2", 12_100, 30),
    BOUNDARY,
    _call("m3", 3_000, 30),
]


def test_timeline_counts_each_response_once_and_carries_to_the_compaction() -> None:
    t = build_timeline(RECORDS + RECORDS, "ctx")  # a resumed session repeats records: same uuids
    assert [c.key for c in t.calls] == ["m0:r-m0", "m1:r-m1", "m2:r-m2", "m3:r-m3"]
    assert t.calls[0].usage["output_tokens"] == 120  # the record with the largest total
    first, second = t.steps
    assert (first.seen_by, first.exit_code, first.is_error) == (1, 1, True)
    assert t.carry(first) == 2 and t.carry(second) == 1  # calls 1-2, then call 2 only; call 3 is past the boundary
    assert t.compactions == [3]


def test_a_step_no_later_call_saw_has_no_carry() -> None:
    t = build_timeline([_call("m0", 100, 5, [("t1", "Bash", {"command": "ls"})]), _result("t1", "a")], "c")
    assert t.steps[0].seen_by is None and t.carry(t.steps[0]) == 0


def _interval_records(n: int, chars: int, cpt: float) -> list[dict[str, Any]]:
    recs, ctx = [], 20_000
    for i in range(n):
        recs.append(_call(f"m{i}", ctx, 100, [(f"t{i}", "Bash", {"command": "cat big"})]))
        recs.append(_result(f"t{i}", "y" * chars))
        ctx += 100 + int(chars / cpt)
    recs.append(_call("last", ctx, 10))
    return recs


@pytest.mark.parametrize("cpt", [2.5, 3.2])
def test_calibration_recovers_the_chars_per_token_of_the_growth(cpt: float) -> None:
    est = calibrate([build_timeline(_interval_records(8, 9_000, cpt), "c")])
    assert est.calibrated and est.observations == 8
    assert est.chars_per_token == pytest.approx(cpt, rel=0.01)
    assert est.error_pct is not None and est.default_error_pct is not None
    assert est.error_pct < est.default_error_pct


def test_too_few_intervals_keep_the_default_and_say_so() -> None:
    est = calibrate([build_timeline(_interval_records(2, 9_000, 2.5), "c")])
    assert not est.calibrated and est.chars_per_token == 4.0 and est.observations == 2


@pytest.mark.parametrize(("raw", "own", "expected"), [
    ("FAILED tests/test_a.py::test_sum - assert", "pytest -q", {"tests/test_a.py::test_sum", "tests/test_a.py"}),
    ("src/app.py:12:5: E501 line too long", "ruff check", {"src/app.py:12:5", "E501"}),
    ("error TS2304: Cannot find name 'fooBar'", "tsc", {"TS2304", "fooBar"}),
    ("all good", "true", set()),
    ("see src/app.py", "cat src/app.py", set()),  # the agent's own input is not evidence
])
def test_evidence(raw: str, own: str, expected: set[str]) -> None:
    assert expected <= evidence(raw, own)
    if not expected:
        assert evidence(raw, own) == set()


@pytest.mark.parametrize(("compact", "later", "value"), [
    ("FAILED tests/test_a.py::test_sum", ["Read tests/test_a.py"], 1.0),
    ("1 failed", ["Read tests/test_a.py"], 0.0),
    ("1 failed", ["ls"], None),  # nothing used: no evidence either way
])
def test_fidelity(compact: str, later: list[str], value: float | None) -> None:
    raw = "FAILED tests/test_a.py::test_sum - assert 3 == 4\n" + "noise\n" * 100
    assert fidelity(raw, compact, "pytest -q", later).value == value


def test_a_kept_saving_is_carry_weighted_and_priced_at_cache_rates() -> None:
    t = build_timeline(RECORDS, "ctx")
    step = t.steps[0]
    est = Estimator(chars_per_token=2.0)
    s = saving(t, step, "FAILED tests/test_a.py::test_sum", Fidelity(1, 1), est, PriceTable.default())
    raw, small = est.tokens(step.output or ""), est.tokens("FAILED tests/test_a.py::test_sum")
    assert (s.raw_tokens, s.compact_tokens, s.carry_calls) == (raw, small, 2)
    assert s.net_tokens == s.saved_carry_tokens == (raw - small) * 2 and s.charged_tokens == 0
    rates = PriceTable.default().lookup(SONNET)[1].rates  # type: ignore[index]
    assert s.net_usd == pytest.approx((raw - small) * (rates.cache_write_5m + rates.cache_read) / 1e6)
    assert s.day == "2026-11-02" and not s.lost


def test_a_lost_string_charges_the_extra_turn_and_saves_nothing() -> None:
    t = build_timeline(RECORDS, "ctx")
    step = t.steps[0]
    est = Estimator(chars_per_token=2.0)
    s = saving(t, step, "1 failed", Fidelity(1, 0), est, PriceTable.default())
    assert s.lost and s.saved_carry_tokens == 0
    assert s.net_tokens == -(t.calls[1].context_tokens + est.tokens("1 failed") * 2) < 0
    assert s.net_usd is not None and s.net_usd < 0


def test_an_unknown_model_has_tokens_but_no_dollars() -> None:
    recs = [_call("m0", 1000, 5, [("t1", "Bash", {"command": "ls"})], model="mystery-1"), _result("t1", "z" * 400),
            _call("m1", 1200, 5, model="mystery-1")]
    t = build_timeline(recs, "c")
    s = saving(t, t.steps[0], "z", Fidelity(0, 0), Estimator(), PriceTable.default())
    assert s.net_tokens > 0 and s.net_usd is None
