"""Frequent n-grams (2-4) of signatures within a session, counted by distinct sessions.

Each tool call becomes a token at two levels: its category (``edit``, ``test``) and its signature
(``test:pytest:tests/unit``); a failed call gets a ``!`` suffix, so ``build! -> edit -> build`` is a
build that failed, an edit, and a rebuild. Consecutive identical tokens collapse into one (three reads in
a row are one read). The agent's normal rhythm is excluded by configuration: by default the ``plan``
category (TodoWrite, ExitPlanMode) never enters a sequence.

Idempotent: a tool call (``tool_use_id``) enters its session's sequence once; a session counts once per
n-gram. Bounded: at most ``max_sessions`` live sessions (least recently active dropped) and at most
``max_ngrams`` n-grams (the least supported dropped when full, so rare n-grams may be undercounted).
Calls are taken in arrival order within a session: feed them in event-time order.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class SequenceConfig:
    sizes: tuple[int, ...] = (2, 3, 4)
    levels: tuple[str, ...] = ("category", "signature")
    exclude_categories: tuple[str, ...] = ("plan",)
    exclude_signatures: tuple[str, ...] = ()  # regular expressions, matched against the whole signature
    collapse_repeats: bool = True
    mark_failures: bool = True
    max_sessions: int = 10_000
    max_ngrams: int = 200_000
    max_ids_per_session: int = 5_000


@dataclass(frozen=True, slots=True)
class SequencePattern:
    level: str
    ngram: tuple[str, ...]
    sessions: int
    occurrences: int
    first_seen_ms: int
    last_seen_ms: int

    @property
    def n(self) -> int:
        return len(self.ngram)

    @property
    def text(self) -> str:
        return " -> ".join(self.ngram)


@dataclass
class _Session:
    ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    tails: dict[str, deque[str]] = field(default_factory=dict)


@dataclass
class _Count:
    sessions: set[str] = field(default_factory=set)
    occurrences: int = 0
    first_ms: int = 0
    last_ms: int = 0


class SequenceMiner:
    def __init__(self, config: SequenceConfig | None = None) -> None:
        self.config = config or SequenceConfig()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._counts: dict[tuple[str, tuple[str, ...]], _Count] = {}
        self._excl = [re.compile(p) for p in self.config.exclude_signatures]

    def excluded(self, signature: str, category: str) -> bool:
        return category in self.config.exclude_categories or any(p.fullmatch(signature) for p in self._excl)

    def add(
        self, session_id: str, tool_use_id: str, signature: str, at: datetime, success: bool | None = None
    ) -> bool:
        """Feed one tool call. Returns False when it changed nothing (duplicate or excluded)."""
        cfg = self.config
        category = signature.split(":", 1)[0]
        if self.excluded(signature, category):
            return False
        ses = self._sessions.get(session_id)
        if ses is None:
            ses = self._sessions[session_id] = _Session()
        self._sessions.move_to_end(session_id)
        while len(self._sessions) > cfg.max_sessions:
            self._sessions.popitem(last=False)
        if tool_use_id in ses.ids:
            return False
        ses.ids[tool_use_id] = None
        while len(ses.ids) > cfg.max_ids_per_session:
            ses.ids.popitem(last=False)
        ts = int(at.astimezone(UTC).timestamp() * 1000)
        suffix = "!" if cfg.mark_failures and success is False else ""
        longest = max(cfg.sizes)
        for level in cfg.levels:
            token = (category if level == "category" else signature) + suffix
            tail = ses.tails.setdefault(level, deque(maxlen=longest))
            if cfg.collapse_repeats and tail and tail[-1] == token:
                continue
            tail.append(token)
            for n in cfg.sizes:
                if len(tail) >= n:
                    self._count(level, tuple(list(tail)[-n:]), session_id, ts)
        return True

    def _count(self, level: str, ngram: tuple[str, ...], session_id: str, ts: int) -> None:
        key = (level, ngram)
        c = self._counts.get(key)
        if c is None:
            if len(self._counts) >= self.config.max_ngrams:
                self._evict()
            c = self._counts[key] = _Count(first_ms=ts, last_ms=ts)
        c.occurrences += 1
        c.sessions.add(session_id)
        c.first_ms = min(c.first_ms, ts)
        c.last_ms = max(c.last_ms, ts)

    def _evict(self) -> None:
        victims = sorted(self._counts, key=lambda k: (len(self._counts[k].sessions), self._counts[k].last_ms))
        for key in victims[: max(1, len(victims) // 10)]:
            del self._counts[key]

    def patterns(
        self, min_sessions: int = 2, level: str | None = None, n: int | None = None, limit: int = 100
    ) -> list[SequencePattern]:
        """The most frequent n-grams by distinct sessions (then occurrences)."""
        out = [
            SequencePattern(lv, ng, len(c.sessions), c.occurrences, c.first_ms, c.last_ms)
            for (lv, ng), c in self._counts.items()
            if len(c.sessions) >= min_sessions
            and (level is None or lv == level)
            and (n is None or len(ng) == n)
        ]
        out.sort(key=lambda p: (-p.sessions, -p.occurrences, p.level, p.ngram))
        return out[:limit]

    def __len__(self) -> int:
        return len(self._counts)
