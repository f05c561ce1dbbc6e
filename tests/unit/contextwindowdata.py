"""Synthetic sessions for the context-window fold: ``synthetic_sessions(n)`` yields batches of
``(time, kind, item)`` events, sessions interleaved CONCURRENT at a time; even sessions end with a
SessionEnd hook event, odd ones go quiet (inactivity closes them once the clock has moved on)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from outloop.schemas.events import Envelope, EventType
from outloop.schemas.fast import FastUsage

T0 = datetime(2026, 4, 1, tzinfo=UTC)
CONCURRENT = 40


def _hook(session: str, name: str, n: int, at: datetime) -> tuple[datetime, str, Any]:
    env = Envelope(id=f"h:{session}:{n}", type=EventType.HOOK_EVENT, source="hook", time=at, subject=session,
                   data={"session_id": session, "hook_event_name": name})
    return at, "hook", env


def session_events(i: int, start: datetime, rng: random.Random) -> list[tuple[datetime, str, Any]]:
    session = f"s{i:06d}"
    out: list[tuple[datetime, str, Any]] = []
    at = start
    for n in range(rng.randint(8, 24)):
        at += timedelta(seconds=rng.randint(1, 20))
        tool, inp = rng.choice([("Read", {"file_path": f"/w/m{rng.randrange(6)}.py"}),
                                ("Edit", {"file_path": f"/w/m{rng.randrange(6)}.py"}),
                                ("Bash", {"command": "pytest -q"})])
        out.append((at, "tool_call", {"id": f"t:{session}:{n}", "session_id": session, "tool_name": tool,
                                      "tool_input": inp, "file_path": inp.get("file_path"), "status": "ok",
                                      "output_tokens_est": rng.randint(10, 3000)}))
        out.append((at + timedelta(seconds=1), "usage", FastUsage(  # the agent's fast-path record
            id=f"u:{session}:{n}", session_id=session, model="claude-sonnet-4-5", timestamp=at,
            input_tokens=5, output_tokens=200, cache_read_input_tokens=20_000 + 500 * n,
            cache_creation_input_tokens=500)))
    if i % 2 == 0:
        out.append(_hook(session, "SessionEnd", 0, at + timedelta(seconds=2)))
    return out


def synthetic_sessions(n: int, seed: int = 7) -> Iterator[list[tuple[datetime, str, Any]]]:
    """One batch per session: its events mixed with a slice of the next concurrent sessions' clock."""
    rng = random.Random(seed)
    for i in range(n):
        start = T0 + timedelta(seconds=60 * (i // CONCURRENT) * 10 + i % CONCURRENT)
        yield session_events(i, start, rng)
