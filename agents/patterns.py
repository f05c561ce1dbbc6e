"""Pattern folds: per-signature rolling statistics, confidence and status, and n-gram sequences.

Pure and clock-free: every method takes event time (timezone-aware datetimes) from the occurrences or
from the caller. Folds follow the quix-streams shape (``initialize / agg / result``).

Idempotency: an occurrence is the fact ``(signature, tool_use_id)``. :class:`PatternStats` remembers the
ids of every occurrence inside its retention (the longest window, 30 days, behind the watermark) and
drops occurrences older than that floor as *late*; so re-applying any occurrence is a no-op, whether it
is a redelivery (its id is remembered) or a replay of old history (it is behind the floor). Memory is
bounded by the retention and by ``max_ids``/``max_sessions``/``max_samples``.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from outloop.agents.signatures import redact

WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
RETENTION = max(WINDOWS.values())
STATUSES = ("detected", "candidate", "active", "rejected")


@dataclass(frozen=True, slots=True)
class Occurrence:
    signature: str
    tool_use_id: str
    session_id: str
    at: datetime
    category: str = ""
    side_effect: str = ""
    output_tokens: int | None = None
    duration_ms: float | None = None
    success: bool | None = None
    command: str | None = None


@dataclass
class Welford:
    """Running count, mean and variance (Welford), plus min and max."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)
        self.lo = min(self.lo, x)
        self.hi = max(self.hi, x)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    @property
    def cv(self) -> float | None:
        """Coefficient of variation (std / mean); None when not measurable."""
        if self.n < 2 or self.mean <= 0:
            return None
        return self.std / self.mean

    def summary(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "mean": self.mean if self.n else None,
            "std": self.std if self.n > 1 else None,
            "min": self.lo if self.n else None,
            "max": self.hi if self.n else None,
        }


def _w_state(w: Welford) -> list[float | None]:
    return [w.n, w.mean, w.m2, w.lo if w.n else None, w.hi if w.n else None]  # strict JSON: no infinities


def _w_restore(x: list[Any]) -> Welford:
    n, mean, m2, lo, hi = x
    return Welford(
        int(n), float(mean), float(m2), math.inf if lo is None else lo, -math.inf if hi is None else hi
    )


def _ms(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("event times must be timezone-aware")
    return int(t.timestamp() * 1000)


_EFFECT_RANK = {"read-only": 0, "writes files": 1, "network": 2, "unknown": 3, "destructive": 4}
EFFECT_CLASSES = tuple(_EFFECT_RANK)  # safest first
UNROUTABLE_EFFECTS = ("destructive", "unknown")


def effect_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """A pattern's side-effect classes with their occurrence counts, safest class first (classes
    outside :data:`EFFECT_CLASSES` after them, by name); classes counted 0 dropped."""
    order = sorted(counts, key=lambda c: (_EFFECT_RANK.get(c, len(_EFFECT_RANK)), c))
    return {c: int(counts[c]) for c in order if counts[c]}


def dominant_effect(counts: Mapping[str, int]) -> tuple[str, float | None]:
    """The side-effect class most of a pattern's commands have, and its share of them: each command
    keeps its own class (``rm -f tmp* && git status`` is destructive, ``git status`` read-only, both
    ``vcs:git:status``), and the pattern is what most of them do. A tie goes to the riskier class.
    ("", None) when nothing was counted."""
    total = sum(counts.values())
    if not total:
        return "", None
    best = max(counts, key=lambda c: (counts[c], _EFFECT_RANK.get(c, 3), c))
    return best, counts[best] / total


@dataclass
class PatternStats:
    """Everything known about one signature. ``add`` returns False when the occurrence changed nothing."""

    signature: str
    category: str = ""
    side_effect: str = ""
    occurrences: int = 0
    distinct_sessions: int = 0
    output_tokens: int = 0
    tokens: Welford = field(default_factory=Welford)
    duration: Welford = field(default_factory=Welford)
    ok: int = 0
    failed: int = 0
    first_seen_ms: int | None = None
    last_seen_ms: int | None = None
    watermark_ms: int = 0
    floor_ms: int = 0
    late: int = 0
    samples: list[tuple[int, str, str]] = field(default_factory=list)  # (ts, tool_use_id, redacted command)
    side_effects: dict[str, int] = field(default_factory=dict)  # class -> occurrences; side_effect is the dominant
    max_ids: int = 100_000
    max_sessions: int = 10_000
    max_samples: int = 5
    _ids: dict[str, int] = field(default_factory=dict)  # tool_use_id -> ts, inside the retention
    _times: list[int] = field(default_factory=list)  # sorted ts of those occurrences
    _sessions: OrderedDict[str, int] = field(default_factory=OrderedDict)

    def add(self, occ: Occurrence) -> bool:
        if occ.signature != self.signature:
            raise ValueError(f"occurrence of {occ.signature} given to {self.signature}")
        ts = _ms(occ.at)
        if occ.tool_use_id in self._ids:
            return False
        if ts < self.floor_ms:
            self.late += 1
            return False
        self._ids[occ.tool_use_id] = ts
        bisect.insort(self._times, ts)
        self.occurrences += 1
        self.category = self.category or occ.category
        if occ.side_effect:
            self.side_effects[occ.side_effect] = self.side_effects.get(occ.side_effect, 0) + 1
            self.side_effect = dominant_effect(self.side_effects)[0]
        if occ.session_id not in self._sessions:
            self.distinct_sessions += 1
        self._sessions[occ.session_id] = max(ts, self._sessions.get(occ.session_id, ts))
        self._sessions.move_to_end(occ.session_id)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        if occ.output_tokens is not None:
            self.output_tokens += occ.output_tokens
            self.tokens.add(float(occ.output_tokens))
        if occ.duration_ms is not None:
            self.duration.add(float(occ.duration_ms))
        if occ.success is True:
            self.ok += 1
        elif occ.success is False:
            self.failed += 1
        self.first_seen_ms = ts if self.first_seen_ms is None else min(self.first_seen_ms, ts)
        self.last_seen_ms = ts if self.last_seen_ms is None else max(self.last_seen_ms, ts)
        if occ.command:
            self._sample(ts, occ.tool_use_id, occ.command)
        self.advance(ts)
        return True

    def _sample(self, ts: int, tid: str, command: str) -> None:
        text = redact(command)[:500]
        if any(s[2] == text for s in self.samples):
            return
        bisect.insort(self.samples, (ts, tid, text))  # the earliest distinct commands: order-independent
        del self.samples[self.max_samples :]

    def advance(self, watermark_ms: int) -> None:
        """Move the watermark (event time) forward and forget what fell out of the retention."""
        if watermark_ms <= self.watermark_ms:
            return
        self.watermark_ms = watermark_ms
        floor = watermark_ms - int(RETENTION.total_seconds() * 1000)
        if floor > self.floor_ms:
            self.floor_ms = floor
        cut = bisect.bisect_left(self._times, self.floor_ms)
        if cut or len(self._ids) > self.max_ids:
            if len(self._times) - cut > self.max_ids:
                cut = len(self._times) - self.max_ids
                self.floor_ms = max(self.floor_ms, self._times[cut - 1] + 1)
            del self._times[:cut]
            self._ids = {k: v for k, v in self._ids.items() if v >= self.floor_ms}

    def window_counts(self, now: datetime | None = None) -> dict[str, int]:
        end = _ms(now) if now is not None else self.watermark_ms
        hi = bisect.bisect_right(self._times, end)
        return {
            name: hi - bisect.bisect_left(self._times, end - int(w.total_seconds() * 1000))
            for name, w in WINDOWS.items()
        }

    @property
    def success_rate(self) -> float | None:
        known = self.ok + self.failed
        return self.ok / known if known else None

    def to_state(self) -> dict[str, Any]:
        """A JSON-friendly snapshot (for a Faust table or a DuckDB row); :meth:`from_state` restores it
        exactly, remembered ids included, so idempotency survives a restart."""
        return {
            "signature": self.signature,
            "category": self.category,
            "side_effect": self.side_effect,
            "occurrences": self.occurrences,
            "distinct_sessions": self.distinct_sessions,
            "output_tokens": self.output_tokens,
            "tokens": _w_state(self.tokens),
            "duration": _w_state(self.duration),
            "ok": self.ok,
            "failed": self.failed,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "watermark_ms": self.watermark_ms,
            "floor_ms": self.floor_ms,
            "late": self.late,
            "samples": [list(x) for x in self.samples],
            "side_effects": dict(self.side_effects),
            "ids": dict(self._ids),
            "sessions": list(self._sessions.items()),
            "limits": [self.max_ids, self.max_sessions, self.max_samples],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PatternStats:
        max_ids, max_sessions, max_samples = state.get("limits", (100_000, 10_000, 5))
        st = cls(state["signature"], max_ids=max_ids, max_sessions=max_sessions, max_samples=max_samples)
        for key in (
            "category",
            "side_effect",
            "occurrences",
            "distinct_sessions",
            "output_tokens",
            "ok",
            "failed",
            "first_seen_ms",
            "last_seen_ms",
            "watermark_ms",
            "floor_ms",
            "late",
        ):
            setattr(st, key, state[key])
        st.tokens = _w_restore(state["tokens"])
        st.duration = _w_restore(state["duration"])
        st.samples = [(int(a), str(b), str(c)) for a, b, c in state["samples"]]
        # a state from before the classes were counted knew only its worst class: keep it, uncounted
        st.side_effects = {str(k): int(v) for k, v in state.get("side_effects", {}).items()}
        st._ids = {str(k): int(v) for k, v in state["ids"].items()}
        st._times = sorted(st._ids.values())
        st._sessions = OrderedDict((str(k), int(v)) for k, v in state["sessions"])
        return st

    def result(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "category": self.category,
            "side_effect": self.side_effect,
            "side_effect_share": dominant_effect(self.side_effects)[1],
            "side_effects": effect_counts(self.side_effects),
            "occurrences": self.occurrences,
            "distinct_sessions": self.distinct_sessions,
            "windows": self.window_counts(now),
            "output_tokens": self.output_tokens,
            "tokens": self.tokens.summary(),
            "duration_ms": self.duration.summary(),
            "ok": self.ok,
            "failed": self.failed,
            "success_rate": self.success_rate,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "late_dropped": self.late,
            "samples": [s[2] for s in self.samples],
        }


# ---- quix-style fold -------------------------------------------------------------------------------


def initialize(signature: str) -> PatternStats:
    return PatternStats(signature)


def agg(state: PatternStats, occ: Occurrence) -> PatternStats:
    state.add(occ)
    return state


def result(state: PatternStats, now: datetime | None = None) -> dict[str, Any]:
    return state.result(now)


# ---- confidence and status --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfidenceWeights:
    frequency: float = 40.0
    consistency: float = 30.0
    success: float = 30.0
    saturate_occurrences: int = 20  # frequency saturates at this many occurrences ...
    saturate_sessions: int = 5  # ... and this many distinct sessions


@dataclass(frozen=True)
class StatusRules:
    min_occurrences: int = 5
    min_confidence: int = 70
    min_output_tokens: int = 1  # "measurable savings": token spend was measured on the occurrences
    # the agent's own work, not deterministic operations a tool could take over
    never_candidate: tuple[str, ...] = ("plan", "delegate", "edit")


def _log_share(x: int, saturate: int) -> float:
    return min(1.0, math.log1p(max(x, 0)) / math.log1p(max(saturate, 1)))


def confidence(
    stats: PatternStats, weights: ConfidenceWeights | None = None, now: datetime | None = None
) -> tuple[int, dict[str, Any]]:
    """Score 0-100 = 100 * sum(w_i * s_i) / sum(w_i) over three sub-scores in [0, 1]:

    * frequency = (log-share of occurrences up to ``saturate_occurrences`` + log-share of distinct
      sessions up to ``saturate_sessions``) / 2, where log-share(x, s) = min(1, ln(1+x) / ln(1+s));
    * consistency = mean over duration and output tokens of 1 / (1 + CV) (CV = std / mean), each
      measurable with two values or more; 0.5 when neither is;
    * success = (ok + 1) / (ok + failed + 2) (Laplace), 0.5 when no outcome is known.
    """
    w = weights or ConfidenceWeights()
    occ = _log_share(stats.occurrences, w.saturate_occurrences)
    ses = _log_share(stats.distinct_sessions, w.saturate_sessions)
    frequency = (occ + ses) / 2
    cvs = [cv for cv in (stats.duration.cv, stats.tokens.cv) if cv is not None]
    consistency = sum(1 / (1 + cv) for cv in cvs) / len(cvs) if cvs else 0.5
    known = stats.ok + stats.failed
    success = (stats.ok + 1) / (known + 2) if known else 0.5
    total = w.frequency + w.consistency + w.success
    score = (
        0.0
        if total <= 0
        else 100 * (w.frequency * frequency + w.consistency * consistency + w.success * success) / total
    )
    breakdown = {
        "score": round(score),
        "weights": {"frequency": w.frequency, "consistency": w.consistency, "success": w.success},
        "frequency": {
            "value": frequency,
            "points": w.frequency * frequency * 100 / total if total else 0,
            "occurrences": stats.occurrences,
            "distinct_sessions": stats.distinct_sessions,
            "windows": stats.window_counts(now),
        },
        "consistency": {
            "value": consistency,
            "points": w.consistency * consistency * 100 / total if total else 0,
            "cv_duration": stats.duration.cv,
            "cv_output_tokens": stats.tokens.cv,
            "measured": len(cvs),
        },
        "success": {
            "value": success,
            "points": w.success * success * 100 / total if total else 0,
            "ok": stats.ok,
            "failed": stats.failed,
            "success_rate": stats.success_rate,
        },
    }
    return round(score), breakdown


def status_of(
    stats: PatternStats,
    score: int,
    rules: StatusRules | None = None,
    *,
    active: bool = False,
    rejected: bool = False,
) -> str:
    """rejected and active are decisions made elsewhere (a person, the routing registry) and win;
    otherwise candidate when occurrences >= 5, confidence >= 70, savings are measurable (output tokens
    were measured), the dominant side effect (what most of its commands do, see
    :func:`dominant_effect`) is routable (not destructive or unknown) and the category is not the
    agent's own work (plan, delegate, edit by default); else detected. (Routing still judges each
    command by its own class.)"""
    r = rules or StatusRules()
    if rejected:
        return "rejected"
    if active:
        return "active"
    if (
        stats.occurrences >= r.min_occurrences
        and score >= r.min_confidence
        and stats.output_tokens >= r.min_output_tokens
        and stats.tokens.n > 0
        and stats.side_effect not in UNROUTABLE_EFFECTS
        and stats.category not in r.never_candidate
    ):
        return "candidate"
    return "detected"


# ---- the table of patterns -------------------------------------------------------------------------


class PatternTable:
    """All signatures' stats. Bounded by ``max_signatures`` (least recently seen evicted)."""

    def __init__(self, max_signatures: int = 50_000) -> None:
        self.max_signatures = max_signatures
        self.stats: OrderedDict[str, PatternStats] = OrderedDict()

    def add(self, occ: Occurrence) -> bool:
        st = self.stats.get(occ.signature)
        if st is None:
            st = self.stats[occ.signature] = initialize(occ.signature)
        changed = st.add(occ)
        self.stats.move_to_end(occ.signature)
        while len(self.stats) > self.max_signatures:
            self.stats.popitem(last=False)
        return changed

    def extend(self, occs: Iterable[Occurrence]) -> int:
        return sum(self.add(o) for o in occs)

    def rows(
        self,
        now: datetime | None = None,
        weights: ConfidenceWeights | None = None,
        rules: StatusRules | None = None,
        decisions: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """One self-explaining row per signature: counts, samples, confidence, its breakdown, status."""
        out = []
        for sig, st in self.stats.items():
            score, breakdown = confidence(st, weights, now)
            decided = (decisions or {}).get(sig)
            row = st.result(now)
            row.update(
                confidence=score,
                confidence_breakdown=breakdown,
                status=status_of(
                    st, score, rules, active=decided == "active", rejected=decided == "rejected"
                ),
            )
            out.append(row)
        out.sort(key=lambda r: (-r["confidence"], -r["occurrences"], r["signature"]))
        return out


from outloop.agents.sequences import SequenceMiner, SequencePattern  # noqa: E402  (re-exported)

__all__ = [
    "EFFECT_CLASSES",
    "Occurrence",
    "PatternStats",
    "PatternTable",
    "Welford",
    "WINDOWS",
    "ConfidenceWeights",
    "StatusRules",
    "confidence",
    "dominant_effect",
    "effect_counts",
    "status_of",
    "initialize",
    "agg",
    "result",
    "SequenceMiner",
    "SequencePattern",
]
