"""Official quota signals besides the status line: a stop caused by a rate limit.

When the API refuses a request for a rate limit, Claude Code writes no usage; it writes a synthetic
assistant record to the transcript (``model: "<synthetic>"``, ``isApiErrorMessage: true``,
``error: "rate_limit"``) whose text says which limit and when it resets, e.g.::

    {"type": "assistant", "timestamp": "2026-01-17T03:18:27.438Z", "error": "rate_limit",
     "isApiErrorMessage": true, "message": {"model": "<synthetic>",
     "content": [{"type": "text", "text": "You're out of extra usage · resets 11pm (America/Denver)"}]}}

The transcript importer turns such a record into an event named ``ApiError`` (like the status line's
``Status`` events, an outloop event stored with the hook events; its payload keeps ``error`` and the
``text``). Here it becomes an official figure: the window it names (``seven_day`` when the text says
weekly, else ``five_hour``) is at 100% from the stop until its reset. The reset is read from the text:
``|<epoch seconds>`` (older Claude Code: ``Claude AI usage limit reached|1736150400``) or ``resets 11pm
(America/Denver)`` / ``resets Jan 5, 9:30am (Europe/Paris)``; without a zone or a readable time, the stop
counts for one span of the window after it (an upper bound, said in ``resets_known``).

API rate-limit response headers (``anthropic-ratelimit-*``) would be the other official source; Claude
Code's transcripts and hook payloads do not carry them, so nothing here reads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from outloop.agents.quota import SPANS
from outloop.agents.quota_status import Official, _time

API_ERROR_EVENT = "ApiError"  # hook_event_name of the events the transcript importer makes of API errors
RATE_LIMIT = "rate_limit"
_EPOCH = re.compile(r"\|\s*(\d{9,11})\s*$")
_RESET = re.compile(r"resets?\s+(?:(?:at|on)\s+)?(?:(?P<mon>[A-Z][a-z]{2})[a-z]*\.?\s+(?P<day>\d{1,2}),?\s+(?:at\s+)?)?"
                    r"(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ap>am|pm)\b(?:\s*\((?P<tz>[A-Za-z_+\-/0-9]+)\))?",
                    re.IGNORECASE)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def window_of(text: str) -> str:
    """The window a rate-limit message is about: ``seven_day`` when it says weekly, else ``five_hour``."""
    return "seven_day" if re.search(r"\bweek", text, re.IGNORECASE) else "five_hour"


def parse_reset(text: str, seen: datetime) -> datetime | None:
    """The reset time a rate-limit message states (the first such time after ``seen``), or None when it
    states none that can be placed in time (no zone, unknown zone, no time)."""
    epoch = _EPOCH.search(text)
    if epoch:
        return datetime.fromtimestamp(int(epoch.group(1)), UTC)
    m = _RESET.search(text)
    if not m or not m.group("tz"):
        return None
    try:
        zone = ZoneInfo(m.group("tz"))
    except (ZoneInfoNotFoundError, ValueError):
        return None
    hour, minute = int(m.group("h")) % 12 + (12 if m.group("ap").lower() == "pm" else 0), int(m.group("m") or 0)
    if minute > 59:
        return None
    local = seen.astimezone(zone)
    if m.group("mon"):
        month = m.group("mon")[:3].lower()
        if month not in _MONTHS:
            return None
        try:
            candidate = local.replace(month=_MONTHS.index(month) + 1, day=int(m.group("day")), hour=hour,
                                      minute=minute, second=0, microsecond=0)
            if candidate < local:
                candidate = candidate.replace(year=candidate.year + 1)
        except ValueError:
            return None
        return candidate.astimezone(UTC)
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local:
        candidate += timedelta(days=1)
    return candidate.astimezone(UTC)


def rate_limit_stops(rows: Iterable[Sequence[object]], at: datetime) -> dict[str, Official]:
    """Official figures from rate-limit stops: (seen at, ``ApiError`` payload as JSON text or object)
    pairs; a stop seen up to ``at`` whose window has not reset by ``at`` puts that window at 100%.
    The latest such stop of each window wins."""
    found: dict[str, Official] = {}
    for received, payload in rows:
        seen = _time(received)
        try:
            data = json.loads(payload) if isinstance(payload, str | bytes) else payload
        except ValueError:
            continue
        if seen is None or seen > at or not isinstance(data, dict) or data.get("error") != RATE_LIMIT:
            continue
        raw = data.get("text")
        text = raw if isinstance(raw, str) else ""
        kind = window_of(text)
        resets = parse_reset(text, seen)
        until = resets if resets is not None else seen + SPANS[kind]
        if at >= until or (kind in found and found[kind].seen_at >= seen):
            continue
        found[kind] = Official(100.0, resets, seen, source="rate_limit_stop")
    return found


def merge_official(status_line: dict[str, Official], stops: dict[str, Official]) -> dict[str, Official]:
    """Each window's newest official figure: a status-line figure seen after a stop (the window has
    reset, or the figure says where it stands now) wins over it, and the other way round."""
    out = dict(status_line)
    for kind, stop in stops.items():
        if kind not in out or out[kind].seen_at < stop.seen_at:
            out[kind] = stop
    return out
