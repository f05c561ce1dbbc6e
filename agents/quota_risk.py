"""Quota limits (configuration, never code), risk levels and throttle decisions, as pure functions.

Limits come from environment variables or a JSON file (``OUTLOOP_QUOTA_FILE``, else
``$OUTLOOP_HOME/quota.json`` when present); a variable wins over the file. Names (all optional: a
window without a limit is tracked and forecast but never throttled)::

    OUTLOOP_QUOTA_FIVE_HOUR_TOKENS   tokens per five-hour block (input + output + cache writes + reads)
    OUTLOOP_QUOTA_SEVEN_DAY_TOKENS   tokens per seven-day window
    OUTLOOP_QUOTA_MONTH_TOKENS       tokens per calendar month
    OUTLOOP_QUOTA_MONTH_USD          spend per calendar month
    OUTLOOP_QUOTA_RPM / _ITPM / _OTPM  API per-minute limits: requests, input tokens (input + cache
                                     writes, cache reads not counted), output tokens
    OUTLOOP_QUOTA_LEVELS             "70,85,95": percent of a limit for medium, high, critical
    OUTLOOP_QUOTA_ABNORMAL           2.0: the last 24 h over this many times the usual day is abnormal
    OUTLOOP_QUOTA_DENY               0: 1 lets the PreToolUse hook deny expensive operations at critical
    OUTLOOP_QUOTA_DENY_TOOLS         "Task,Agent,WebSearch,WebFetch": what "expensive" means

The file holds the same keys in lower case without the prefix, e.g. ``{"five_hour_tokens": 20000000,
"levels": [70, 85, 95], "deny": false}`` (see ``docs/quota.md``).

Levels: ``low`` below the first threshold, then ``medium`` / ``high`` / ``critical``; an official
percentage (Claude Code's status line ``rate_limits``) wins over an estimate from tokens. An abnormal
burn raises the level by one step (at least ``medium``). Actions: ``warn`` at high (the hook adds one
line to the agent's context), ``deny`` at critical only when deny is configured, else ``warn``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

LEVELS = ("low", "medium", "high", "critical")
DEFAULT_THRESHOLDS = (70.0, 85.0, 95.0)
DEFAULT_DENY_TOOLS = ("Task", "Agent", "WebSearch", "WebFetch")
_KEYS = ("five_hour_tokens", "seven_day_tokens", "month_tokens", "month_usd", "levels", "abnormal", "deny",
         "deny_tools", "rpm", "itpm", "otpm")


@dataclass(frozen=True)
class QuotaConfig:
    five_hour_tokens: int | None = None
    seven_day_tokens: int | None = None
    month_tokens: int | None = None
    month_usd: float | None = None
    levels: tuple[float, float, float] = DEFAULT_THRESHOLDS
    abnormal: float = 2.0
    deny: bool = False
    deny_tools: tuple[str, ...] = DEFAULT_DENY_TOOLS
    rpm: int | None = None
    itpm: int | None = None
    otpm: int | None = None

    def limit_tokens(self, window: str) -> int | None:
        return {"five_hour": self.five_hour_tokens, "seven_day": self.seven_day_tokens,
                "month": self.month_tokens}.get(window)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> QuotaConfig:
        """From the file (if any), overridden by ``OUTLOOP_QUOTA_*`` variables. Raises ValueError with
        the offending name on a bad value."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        home = Path(os.path.expanduser(env.get("OUTLOOP_HOME") or "~/.outloop"))
        path = Path(env["OUTLOOP_QUOTA_FILE"]) if env.get("OUTLOOP_QUOTA_FILE") else home / "quota.json"
        if path.is_file():
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: a JSON object is expected")
            unknown = set(loaded) - set(_KEYS)
            if unknown:
                raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
            raw.update(loaded)
        for key in _KEYS:
            value = env.get(f"OUTLOOP_QUOTA_{key.upper()}")
            if value not in (None, ""):
                raw[key] = value
        return cls._parse(raw)

    @classmethod
    def _parse(cls, raw: dict[str, Any]) -> QuotaConfig:
        def num(key: str, kind: type) -> Any:
            value = raw.get(key)
            if value is None:
                return None
            try:
                out = kind(float(value)) if kind is int else kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"quota {key}: {value!r} is not a number") from None
            if out <= 0:
                raise ValueError(f"quota {key}: must be positive, got {value!r}")
            return out

        levels = raw.get("levels", DEFAULT_THRESHOLDS)
        if isinstance(levels, str):
            levels = [p for p in levels.split(",") if p.strip()]
        try:
            lv = tuple(float(x) for x in levels)
        except (TypeError, ValueError):
            raise ValueError(f"quota levels: {levels!r} are not numbers") from None
        if len(lv) != 3 or not 0 < lv[0] < lv[1] < lv[2]:
            raise ValueError(f"quota levels: three increasing percentages expected, got {levels!r}")
        deny = raw.get("deny", False)
        tools = raw.get("deny_tools", DEFAULT_DENY_TOOLS)
        return cls(num("five_hour_tokens", int), num("seven_day_tokens", int), num("month_tokens", int),
                   num("month_usd", float), (lv[0], lv[1], lv[2]), num("abnormal", float) or 2.0,
                   str(deny).strip().lower() in ("1", "true", "yes", "on"),
                   tuple(t.strip() for t in (tools.split(",") if isinstance(tools, str) else tools) if t.strip()),
                   num("rpm", int), num("itpm", int), num("otpm", int))


def level_of(percent: float | None, thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS) -> str:
    """``low`` / ``medium`` / ``high`` / ``critical`` for a percentage of a limit (None: low)."""
    if percent is None:
        return "low"
    return LEVELS[sum(percent >= t for t in thresholds)]


@dataclass(frozen=True)
class WindowUse:
    """One window's use at a time: official percentage (status line) or tokens against a limit."""

    window: str
    used_tokens: int
    limit_tokens: int | None = None
    official_percent: float | None = None
    resets_at: datetime | None = None

    @property
    def percent(self) -> float | None:
        if self.official_percent is not None:
            return self.official_percent
        if self.limit_tokens:
            return 100.0 * self.used_tokens / self.limit_tokens
        return None

    @property
    def basis(self) -> str:
        return "official" if self.official_percent is not None else ("estimate" if self.limit_tokens else "none")


@dataclass(frozen=True)
class ThrottleDecision:
    at: datetime
    level: str
    action: str  # none | warn | deny
    window: str | None  # the window that decided (the highest level), None when low everywhere
    percent: float | None
    basis: str  # official | estimate | none
    abnormal: bool
    reason: str

    @property
    def id(self) -> str:
        """One decision per time and outcome: replaying the same usage stores the same rows."""
        return f"throttle:{self.at.isoformat()}:{self.window}:{self.level}"

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "at": self.at.isoformat(), "level": self.level, "action": self.action,
                "window": self.window, "percent": None if self.percent is None else round(self.percent, 1),
                "basis": self.basis, "abnormal": self.abnormal, "reason": self.reason}


def decide(uses: list[WindowUse], at: datetime, config: QuotaConfig, *, today: float = 0.0,
           usual: float = 0.0) -> ThrottleDecision:
    """The throttle decision at ``at`` from each window's use and the daily burn (see module doc)."""
    rank, use = 0, None
    for candidate in uses:
        r = LEVELS.index(level_of(candidate.percent, config.levels))
        if use is None or r > rank:
            rank, use = r, candidate
    abnormal = usual > 0 and today > config.abnormal * usual
    if abnormal:
        rank = min(max(rank + 1, 1), len(LEVELS) - 1)
    level = LEVELS[rank]
    action = "none" if rank < 2 else ("deny" if rank == 3 and config.deny else "warn")
    pct = use.percent if use else None
    parts = []
    if use is not None and pct is not None:
        parts.append(f"{use.window} window at {pct:.0f}% ({use.basis})")
    if abnormal:
        parts.append(f"last 24 h burn {today / usual:.1f}x the usual day")
    reason = "; ".join(parts) or "no limit configured or reported"
    return ThrottleDecision(at, level, action, use.window if use and rank else None, pct,
                            use.basis if use else "none", abnormal, reason)


def warning_line(decision: ThrottleDecision) -> str | None:
    """The one line added to the agent's context at high risk and above (None below)."""
    if decision.action == "none":
        return None
    return (f"outloop quota: {decision.level} - {decision.reason}. Prefer cheap steps (outloop run for long "
            "outputs, no sub-agents or web fetches) until the window resets.")


FRESH_FOR = timedelta(hours=5)  # a decision older than a five-hour window says nothing about now


def hook_answer(answer: dict[str, Any] | None, decision: Mapping[str, Any] | None, tool_name: str,
                config: QuotaConfig, now: datetime, warned_level: str | None) -> tuple[dict[str, Any] | None, str]:
    """The PreToolUse answer with the quota's part merged in, and what the quota did (``none``, ``warn``,
    ``deny``). ``decision`` is the latest stored throttle decision (``ThrottleDecision.as_dict``);
    ``warned_level`` the level this session was last warned at: the one-line warning is added once per
    session and level, not on every call. At critical, with deny configured, an expensive tool
    (``deny_tools``) is denied; anything else is never made worse than the routing answer."""
    if not isinstance(decision, Mapping):
        return answer, "none"
    try:
        at = datetime.fromisoformat(str(decision["at"]))
    except (KeyError, ValueError):
        return answer, "none"
    level, reason = decision.get("level"), str(decision.get("reason") or "")
    if at.tzinfo is None or not timedelta(0) <= now - at <= FRESH_FOR or level not in ("high", "critical"):
        return answer, "none"
    if level == "critical" and config.deny and tool_name in config.deny_tools:
        why = f"outloop quota: critical - {reason}. {tool_name} is held back until the window resets."
        return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                       "permissionDecisionReason": why}}, "deny"
    if warned_level == level:
        return answer, "none"
    line = warning_line(ThrottleDecision(at, str(level), "warn", decision.get("window"), None, "", False, reason))
    if answer is None:
        return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "additionalContext": line}}, "warn"
    out = dict(answer.get("hookSpecificOutput") or {})
    if out.get("permissionDecision") == "deny":
        return answer, "none"  # the agent reads the deny's reason; the warning waits for the next call
    out["additionalContext"] = f"{out['additionalContext']}\n{line}" if out.get("additionalContext") else line
    return {**answer, "hookSpecificOutput": out}, "warn"
