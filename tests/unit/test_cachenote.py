"""Cache-break notes (agents.cachenote) from the tail of real transcripts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from outloop.agents.cachenote import (
    FRESH,
    LastCall,
    break_note,
    cache_note,
    idle_break,
    last_call,
    main_calls,
    tail_lines,
)
from outloop.agents.context import Api, cache_breaks
from outloop.agents.pricing import PriceTable
from outloop.agents.timeline import build_timeline
from tests.conftest import traces_dir

SESSION = "3cfce0ff-0725-47be-a572-f8af8122b71e"  # a real session with idle gaps past the cache lifetime


def _transcript() -> Path:
    return next((traces_dir() / "claude-code-transcripts").rglob(f"{SESSION}.jsonl"))


def test_the_last_call_of_a_real_transcript_from_its_tail() -> None:
    path = _transcript()
    whole = last_call(path.read_bytes().split(b"\n"))
    assert whole is not None and whole.prompt_tokens > 20_000
    assert last_call(tail_lines(path, 64 * 1024)) == whole
    assert whole.model is not None and whole.model.startswith("claude-")


def test_a_note_before_each_real_cache_break_and_none_inside_the_lifetime() -> None:
    """Replaying the real session: just before every call the context measure calls an idle cache break,
    the note computed from the calls before it says so; before calls less than 5 min apart it says nothing."""
    lines = _transcript().read_bytes().split(b"\n")
    records = []
    for line in lines:
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    timeline = build_timeline(records, "main")
    apis = []
    for c in timeline.calls:
        at = datetime.fromisoformat(str(c.timestamp).replace("Z", "+00:00"))
        u = c.usage
        apis.append(Api(c.key, c.model, at, u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"],
                        u["cache_creation_input_tokens"], c.cache_5m, c.cache_1h))
    breaks = {b.usage_id for b in cache_breaks(SESSION, apis, [], PriceTable.default())}
    assert len(breaks) >= 3
    prior_lines: list[bytes] = []
    by_key = {a.id: a for a in apis}
    noted = quiet = 0
    for line in lines:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        msg = rec.get("message") if isinstance(rec, dict) else None
        key = f"{msg.get('id')}:{rec.get('requestId') or ''}" if isinstance(msg, dict) else None
        api = by_key.pop(key, None) if key else None
        if api is not None and prior_lines:
            note = cache_note(last_call(prior_lines), api.at - timedelta(seconds=1))
            if api.id in breaks:
                assert note is not None and "idle" in note and "more than a warm cache" in note
                noted += 1
            elif note is None:
                quiet += 1
        prior_lines.append(line)
    assert noted == len(breaks) and quiet > 50


def test_no_note_for_a_small_context_no_call_or_a_live_one_hour_cache() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert cache_note(None, t) is None
    assert cache_note(LastCall(t, "claude-sonnet-4-5", 5_000, False), t + timedelta(hours=2)) is None
    hour = LastCall(t, "claude-sonnet-4-5", 80_000, True)
    assert cache_note(hour, t + timedelta(minutes=30)) is None
    note = cache_note(hour, t + timedelta(minutes=61))
    assert note is not None and "60 min lifetime" in note and "80,000" in note and "$0.46" in note


def test_the_router_note_after_each_real_idle_break_and_only_then() -> None:
    """The transcript as it stands when the hook of each real API call's tool calls fires (its lines up to
    that call's last record), 2 s after the call: a note exactly for the calls the context measure calls
    idle cache breaks, with their tokens and cost; none once the turn is older than ``FRESH``."""
    lines = _transcript().read_bytes().split(b"\n")
    apis, _ = main_calls(lines)
    breaks = {b.usage_id: b for b in cache_breaks(SESSION, [a for a in apis if a.at], [], PriceTable.default())}
    last_line = {}
    for i, line in enumerate(lines):
        for a in apis:
            if a.id.split(":")[0].encode() in line:
                last_line[a.id] = i
    noted = set()
    for a in apis:
        if a.at is None or a.id not in last_line:
            continue
        upto = lines[:last_line[a.id] + 1]
        found = idle_break(SESSION, upto, a.at + timedelta(seconds=2))
        if found is not None:
            noted.add(found.usage_id)
            assert found == breaks[a.id]
            note = break_note(found)
            assert f"~{found.tokens:,} tokens" in note and f"${found.extra_cost_usd:.2f}" in note
            assert "\n" not in note
        assert idle_break(SESSION, upto, a.at + FRESH + timedelta(seconds=1)) is None
    assert noted == {k for k, b in breaks.items() if b.cause == "idle"} and len(noted) >= 3


def test_no_router_note_for_a_small_context_or_a_sub_agent_record() -> None:
    lines = _transcript().read_bytes().split(b"\n")
    apis, _ = main_calls(lines)
    first = min((b for b in cache_breaks(SESSION, [a for a in apis if a.at], [], PriceTable.default())),
                key=lambda b: b.at or datetime.max.replace(tzinfo=UTC))
    assert first.at is not None
    cut = max(i for i, line in enumerate(lines) if first.usage_id.split(":")[0].encode() in line) + 1
    now = first.at + timedelta(seconds=2)
    assert idle_break(SESSION, lines[:cut], now) is not None
    assert idle_break(SESSION, lines[:cut], now, min_tokens=first.tokens * 10) is None
    side = [orjson.dumps({**orjson.loads(line), "isSidechain": True}) if first.usage_id.split(":")[0].encode() in line
            else line for line in lines[:cut] if line.strip()]
    assert idle_break(SESSION, side, now) is None  # the break's records are a sub-agent's: not this context
