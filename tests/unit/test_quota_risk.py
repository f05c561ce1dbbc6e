"""Risk levels, limits as configuration, throttle decisions (engage and release), official figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from outloop.agents.quota import UsageRow
from outloop.agents.quota_risk import QuotaConfig, hook_answer, level_of, warning_line
from outloop.agents.quota_status import Official, assess

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def row(minutes: float, total: int) -> UsageRow:
    q = total // 4
    return UsageRow(T0 + timedelta(minutes=minutes), q, q, q, total - 3 * q, 0.01)


@pytest.mark.parametrize(("percent", "level"), [
    (None, "low"), (0, "low"), (69.9, "low"), (70, "medium"), (84.9, "medium"), (85, "high"), (95, "critical"),
    (140, "critical")])
def test_levels(percent: float | None, level: str) -> None:
    assert level_of(percent) == level


def test_config_from_file_and_env(tmp_path: Path) -> None:
    (tmp_path / "quota.json").write_text('{"five_hour_tokens": 1000000, "levels": [50, 60, 90], "deny": true}')
    c = QuotaConfig.load({"OUTLOOP_HOME": str(tmp_path), "OUTLOOP_QUOTA_LEVELS": "60,80,90"})
    assert (c.five_hour_tokens, c.levels, c.deny) == (1000000, (60.0, 80.0, 90.0), True)
    assert QuotaConfig.load({"OUTLOOP_HOME": str(tmp_path / "none")}) == QuotaConfig()
    for bad in ({"OUTLOOP_QUOTA_LEVELS": "90,80,95"}, {"OUTLOOP_QUOTA_FIVE_HOUR_TOKENS": "lots"},
                {"OUTLOOP_QUOTA_MONTH_USD": "-3"}):
        with pytest.raises(ValueError, match="quota"):
            QuotaConfig.load({"OUTLOOP_HOME": str(tmp_path / "none"), **bad})


def test_throttle_engages_on_a_synthetic_burn_and_releases_when_the_window_rolls_over() -> None:
    config = QuotaConfig(five_hour_tokens=1_000_000, deny=True)
    # 12:00 [ a burn of 20k tokens a minute from 12:00 on ... 17:00 ] 17:05 quiet
    rows = [row(m, 20_000) for m in range(0, 60)]
    kinds = ("five_hour",)
    steps = []
    for minute in (20, 38, 45, 50, 59, 305):
        status = assess(rows, T0 + timedelta(minutes=minute, seconds=30), config, kinds=kinds)
        steps.append((status.decision.level, status.decision.action))
    assert steps == [("low", "none"), ("medium", "none"), ("high", "warn"), ("critical", "deny"),
                     ("critical", "deny"), ("low", "none")]
    warned = assess(rows, T0 + timedelta(minutes=45, seconds=30), config, kinds=kinds).decision
    line = warning_line(warned)
    assert line is not None and "five_hour window at 92% (estimate)" in line
    # deny is off by default: critical only warns
    off = assess(rows, T0 + timedelta(minutes=59), QuotaConfig(five_hour_tokens=1_000_000), kinds=kinds)
    assert (off.decision.level, off.decision.action) == ("critical", "warn")


def test_official_percentage_wins_over_the_estimate() -> None:
    rows = [row(m, 1000) for m in range(0, 30)]
    at = T0 + timedelta(minutes=30)
    official = {"five_hour": Official(88.0, T0 + timedelta(hours=5), at)}
    status = assess(rows, at, QuotaConfig(five_hour_tokens=10**9), official, kinds=("five_hour",))
    w = status.windows[0]
    assert (w["percent"], w["basis"], status.decision.level) == (88.0, "official", "high")
    fc = w["forecast"]
    assert isinstance(fc, dict) and fc["implied_limit_tokens"] == round(30000 / 0.88)


def test_abnormal_burn_raises_the_level() -> None:
    usual = [row(-60 * 24 * d, 1000) for d in range(1, 8)]
    burst = [row(-m, 3000) for m in range(1, 5)]  # 12k today against a usual 1k day
    status = assess(usual + burst, T0, QuotaConfig(), kinds=("five_hour",))
    assert status.decision.abnormal and status.decision.level == "medium"
    assert "12.0x the usual day" in status.decision.reason


def test_per_minute_limits_leave_cache_reads_out() -> None:
    rows = [UsageRow(T0 + timedelta(seconds=s), 100, 50, 200, 10_000) for s in (0, 20, 40, 70)]
    at = T0 + timedelta(seconds=75)  # the last minute holds the rows at 20, 40 and 70 s
    status = assess(rows, at, QuotaConfig(itpm=1000, rpm=100), kinds=("five_hour",))
    pm = status.per_minute
    assert (pm["requests"], pm["input_tokens"], pm["output_tokens"], pm["cache_read_tokens_not_counted"]) == (
        3, 900, 150, 30_000)
    assert (status.decision.window, status.decision.level) == ("minute_input_tokens", "high")  # 90% of ITPM


# --- the PreToolUse part: warning once per session and level, optional deny at critical ---------------

HIGH = {"at": T0.isoformat(), "level": "high", "action": "warn", "window": "five_hour",
        "reason": "five_hour window at 88% (official)"}
CRITICAL = {**HIGH, "level": "critical", "reason": "five_hour window at 97% (estimate)"}
REWRITE = {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow",
                                  "updatedInput": {"command": "outloop run -- pytest"}}}
DENY = {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                               "permissionDecisionReason": "loop"}}
NOW = T0 + timedelta(minutes=10)
ON = QuotaConfig(deny=True)


@pytest.mark.parametrize(("answer", "decision", "tool", "config", "now", "warned", "did"), [
    (None, HIGH, "Bash", QuotaConfig(), NOW, None, "warn"),
    (None, HIGH, "Bash", QuotaConfig(), NOW, "high", "none"),  # already warned at this level
    (None, CRITICAL, "Bash", QuotaConfig(), NOW, "high", "warn"),  # a new level warns again
    (None, CRITICAL, "Task", QuotaConfig(), NOW, None, "warn"),  # deny is off by default
    (None, CRITICAL, "Task", ON, NOW, "critical", "deny"),
    (None, CRITICAL, "Bash", ON, NOW, None, "warn"),  # Bash is not an expensive tool by default
    (None, {**HIGH, "level": "medium"}, "Bash", ON, NOW, None, "none"),
    (None, HIGH, "Bash", ON, T0 + timedelta(hours=6), None, "none"),  # stale: older than a window
    (None, {"at": "yesterday"}, "Bash", ON, NOW, None, "none"),
    (None, None, "Bash", ON, NOW, None, "none"),
    (DENY, HIGH, "Bash", ON, NOW, None, "none"),  # a routing deny stays as it is
    (REWRITE, HIGH, "Bash", ON, NOW, None, "warn"),
])
def test_hook_answer(answer: dict[str, Any] | None, decision: dict[str, Any] | None, tool: str,
                     config: QuotaConfig, now: datetime, warned: str | None, did: str) -> None:
    out, done = hook_answer(answer, decision, tool, config, now, warned)
    assert done == did
    if did == "none":
        assert out == answer
    elif did == "deny":
        assert out is not None and out["hookSpecificOutput"]["permissionDecision"] == "deny"
        assert "critical" in out["hookSpecificOutput"]["permissionDecisionReason"]
    else:
        assert out is not None
        spec = out["hookSpecificOutput"]
        assert spec["additionalContext"].startswith("outloop quota: ") and "\n" not in spec["additionalContext"]
        if answer is REWRITE:
            assert spec["updatedInput"] == {"command": "outloop run -- pytest"}  # the rewrite is kept
