"""Cache-break warning, pure: when a session has been idle past its prompt cache's lifetime with a large
context, a one-line note of what the next API call will cost to rebuild it.

:func:`last_call` reads the session's last API call (time, model, prompt size, whether it wrote 1-hour
cache) from the tail of its transcript; :func:`cache_note` turns it and the time now into the note, or
None (not idle long enough, context too small, no call yet). The note is advice only; where a hook
answer carries it, it is off unless the user turns it on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from outloop.agents.context import CACHE_1H, CACHE_5M
from outloop.agents.pricing import PriceTable

NOTE_MIN_TOKENS = 20_000  # a context smaller than this is not worth a note
TAIL_BYTES = 256 * 1024


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
