"""Cache-break warning, pure: when a session has been idle past its prompt cache's lifetime with a large
context, a one-line note of what the next API call will cost to rebuild it.

:func:`last_call` reads the session's last API call (time, model, prompt size, whether it wrote 1-hour
cache) from the tail of its transcript; :func:`cache_note` turns it and the time now into the note, or
None (not idle long enough, context too small, no call yet). The note is advice only; where a hook
answer carries it, it is off unless the user turns it on.

:func:`idle_break` is what the router's PreToolUse answer uses: a hook fires after the API call that
issued the tool call, so by then an idle gap's cache rebuild has happened. It reads the API calls at
the tail of the transcript (the main chain: sub-agent records are their own context) and returns the
cache break of the latest call, by the rule of :func:`agents.context.cache_breaks` (cause ``idle``),
when that call is recent (within ``FRESH``: the turn under way) and its context at least
``min_tokens``; :func:`break_note` is its one line, with the tokens and dollars the rebuild cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from outloop.agents.context import CACHE_1H, CACHE_5M, Api, CacheBreak, cache_breaks
from outloop.agents.pricing import PriceTable
from outloop.agents.timeline import build_timeline

NOTE_MIN_TOKENS = 20_000  # a context smaller than this is not worth a note
TAIL_BYTES = 256 * 1024
FRESH = timedelta(minutes=5)  # a break older than this is not the turn under way (no note)


@dataclass(frozen=True)
class LastCall:
    at: datetime
    model: str | None
    prompt_tokens: int
    one_hour: bool


def last_call(lines: Iterable[str | bytes]) -> LastCall | None:
    """The last assistant record with usage among transcript ``lines`` (damaged lines are skipped)."""
    found: LastCall | None = None
    for line in lines:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or rec.get("type") != "assistant" or not isinstance(rec.get("message"), dict):
            continue
        msg = rec["message"]
        usage = msg.get("usage")
        if not isinstance(usage, dict) or msg.get("model") == "<synthetic>":
            continue
        try:
            at = datetime.fromisoformat(str(rec.get("timestamp")).replace("Z", "+00:00"))
            prompt = sum(int(usage.get(k) or 0) for k in ("input_tokens", "cache_read_input_tokens",
                                                          "cache_creation_input_tokens"))
        except (ValueError, TypeError):
            continue
        cc = usage.get("cache_creation")
        one_hour = isinstance(cc, dict) and bool(cc.get("ephemeral_1h_input_tokens"))
        if at.tzinfo is not None and (found is None or at >= found.at):
            found = LastCall(at, msg.get("model"), prompt, one_hour)
    return found


def tail_lines(path: str | Path, limit: int = TAIL_BYTES) -> list[bytes]:
    """The whole lines of the last ``limit`` bytes of a file (bounded work on any transcript)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - limit))
        data = f.read(limit)
    lines = data.split(b"\n")
    return lines[1:] if size > limit else lines


def cache_note(last: LastCall | None, now: datetime, prices: PriceTable | None = None,
               min_tokens: int = NOTE_MIN_TOKENS) -> str | None:
    """The one-line note, or None."""
    if last is None or last.prompt_tokens < min_tokens:
        return None
    lifetime = CACHE_1H if last.one_hour else CACHE_5M
    idle = now - last.at
    if idle <= lifetime:
        return None
    cost = ""
    found = (prices or PriceTable.default()).lookup(last.model)
    if found is not None:
        rates = found[1].rates
        write = rates.cache_write_1h if last.one_hour else rates.cache_write_5m
        extra = last.prompt_tokens * (write - rates.cache_read) / 1e6
        cost = f" (about ${extra:.2f} more than a warm cache at {found[0]} prices)"
    return (f"outloop: this session was idle {_minutes(idle)}, past its prompt cache's "
            f"{_minutes(lifetime)} lifetime: the next API call writes its ~{last.prompt_tokens:,}-token "
            f"context to the cache again{cost}.")


def _minutes(d: timedelta) -> str:
    m = d.total_seconds() / 60
    return f"{m:.0f} min" if m < 120 else f"{m / 60:.1f} h"


def _time(value: object) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def main_calls(lines: Iterable[str | bytes]) -> tuple[list[Api], set[str]]:
    """The main chain's API calls among transcript ``lines`` (damaged and sub-agent records skipped), in
    file order, and the ids of those that came right after a compaction."""
    records = []
    for line in lines:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and not rec.get("isSidechain"):
            records.append(rec)
    timeline = build_timeline(records, "main")
    apis = []
    for c in timeline.calls:
        u = c.usage
        apis.append(Api(c.key, c.model, _time(c.timestamp), u["input_tokens"], u["output_tokens"],
                        u["cache_read_input_tokens"], u["cache_creation_input_tokens"], c.cache_5m, c.cache_1h))
    after_compaction = {apis[i].id for i in timeline.compactions if i < len(apis)}
    return apis, after_compaction


def idle_break(session_id: str, lines: Iterable[str | bytes], now: datetime, prices: PriceTable | None = None,
               min_tokens: int = NOTE_MIN_TOKENS) -> CacheBreak | None:
    """The idle cache break of the latest API call among ``lines``, when it is recent and large; else None."""
    apis, after_compaction = main_calls(lines)
    timed = [a for a in apis if a.at is not None]
    if not timed:
        return None
    last = timed[-1]
    assert last.at is not None
    if last.id in after_compaction or last.prompt < min_tokens or not timedelta(0) <= now - last.at <= FRESH:
        return None
    found = [b for b in cache_breaks(session_id, timed, [], prices or PriceTable.default())
             if b.usage_id == last.id and b.cause == "idle"]
    return found[0] if found else None


def break_note(brk: CacheBreak) -> str:
    """The one-line note of a cache break that just happened: the pause, what was written again, its cost."""
    pause = f" {_minutes(timedelta(seconds=brk.gap_seconds))}" if brk.gap_seconds is not None else ""
    cost = f" (about ${brk.extra_cost_usd:.2f} more than reading it from a warm cache)" \
        if brk.extra_cost_usd is not None else ""
    return (f"outloop: after this session's{pause} pause (longer than its prompt cache lives: 5 min, or 1 h for "
            f"1-hour cache) the last API call wrote ~{brk.tokens:,} tokens of context to the cache again{cost}; "
            f"pauses shorter than the lifetime keep it warm.")
