"""Context-efficiency windows: a per-session window the sessions agent keeps, fed by the tool calls,
usage records and hook events it produces. Pure: events and their times in, closed windows out.

A window is one stretch of a session's activity. It opens on the first event of a session that has
no open window, and closes on the session's ``Stop`` or ``SessionEnd`` hook event, when the event-time
watermark (the latest event time the fold has seen) passes its last event by ``timeout`` (inactivity),
or when more than ``max_open`` windows are open (the least recently active is closed, ``evicted``).
A closed window is emitted and forgotten: nothing of it stays in memory, so memory grows with the
open windows only, never with the sessions seen. More events of that session open a new window
(``seq`` + 1 is not known then: a window is named by its session and the time of its first event).

Within a window, running figures (the session-wide figures are the sink's, recomputed from stored
facts, see :mod:`agents.context`):

* outputs and their tokens, counted once per tool call id;
* ``carry_tokens``: every API call of the main chain adds the tokens of the main chain's outputs that
  came back before it since the window opened or the last compaction (``PreCompact``) - what that call
  re-read of them (a sub-agent's calls and outputs, known from the batch's API messages, are left out);
* ``reread_tokens``: Reads of a path this window already read (same or narrower range), with no edit
  of it nor compaction between (the re-read rule of :mod:`agents.context`);
* ``cache_break_tokens``: cache writes of at least ``BREAK_MIN_TOKENS`` and half the prompt after an
  idle gap past the cache lifetime; a window re-opened after such a gap starts with one.

Per window the state is bounded too: at most ``MAX_IDS`` tool call ids and ``MAX_PATHS`` paths are
remembered (beyond, outputs still count, a repeated view of an old one may count twice, and re-reads
of paths not remembered are not seen).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from outloop.agents.context import BREAK_MIN_TOKENS, CACHE_1H, CACHE_5M, EDIT_TOOLS

TIMEOUT = timedelta(minutes=30)
MAX_OPEN = 50_000
MAX_IDS = 4_096
MAX_PATHS = 1_024
CLOSING_HOOKS = frozenset({"Stop", "SessionEnd"})


@dataclass
class Window:
    session_id: str
    opened_at: datetime
    last_at: datetime
    events: int = 0
    outputs: int = 0
    loaded_tokens: int = 0
    live_tokens: int = 0  # outputs since the window opened or the last compaction
    carry_tokens: int = 0
    reread_tokens: int = 0
    api_calls: int = 0
    last_prompt_tokens: int = 0
    max_prompt_tokens: int = 0
    compactions: int = 0
    cache_break_tokens: int = 0
    last_call_at: datetime | None = None
    one_hour_cache: bool = False
    closed_at: datetime | None = None
    close_reason: str | None = None
    ids: set[str] = field(default_factory=set)
    reads: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.session_id}:{self.opened_at.isoformat()}"

    def record(self) -> dict[str, Any]:
        """The window as the ``context_windows`` row."""
        return {"id": self.id, "session_id": self.session_id, "opened_at": self.opened_at,
                "last_event_at": self.last_at, "closed_at": self.closed_at, "close_reason": self.close_reason,
                "events": self.events, "outputs": self.outputs, "loaded_tokens": self.loaded_tokens,
                "carry_tokens": self.carry_tokens, "reread_tokens": self.reread_tokens, "api_calls": self.api_calls,
                "max_prompt_tokens": self.max_prompt_tokens, "compactions": self.compactions,
                "cache_break_tokens": self.cache_break_tokens}


def _range(tool_input: Any) -> tuple[int, float]:
    start = tool_input.get("offset") if isinstance(tool_input, dict) else None
    limit = tool_input.get("limit") if isinstance(tool_input, dict) else None
    first = start if isinstance(start, int) and start > 0 else 1
    return first, (first + limit if isinstance(limit, int) and limit > 0 else float("inf"))


@dataclass
class ContextWindows:
    """The open windows of one sessions agent, least recently active first."""

    timeout: timedelta = TIMEOUT
    max_open: int = MAX_OPEN
    open: OrderedDict[str, Window] = field(default_factory=OrderedDict)
    watermark: datetime | None = None

    def _window(self, session: str, at: datetime) -> Window:
        w = self.open.get(session)
        if w is None:
            w = self.open[session] = Window(session, at, at)
        else:
            self.open.move_to_end(session)
            w.last_at = max(w.last_at, at)
        w.events += 1
        if self.watermark is None or at > self.watermark:
            self.watermark = at
        return w

    def tool_call(self, view: dict[str, Any], at: datetime, main: bool = True) -> Iterator[Window]:
        """A tool call view (the pairing fold's): its output once it completed. ``main=False``: a
        sub-agent's call - its output is loaded into the sub-agent's context, not carried by the main
        chain's API calls (nor a re-read of the main chain's files)."""
        w = self._window(view["session_id"], at)
        status = view.get("status")
        if status != "started" and view["id"] not in w.ids:
            if len(w.ids) < MAX_IDS:
                w.ids.add(view["id"])
            tokens = int(view.get("output_tokens_est") or 0)
            w.outputs += 1
            w.loaded_tokens += tokens
            if main:
                w.live_tokens += tokens
                self._file(w, view, tokens)
        yield from self.expire()

    def _file(self, w: Window, view: dict[str, Any], tokens: int) -> None:
        path, tool = view.get("file_path"), view.get("tool_name")
        if not isinstance(path, str):
            return
        if tool in EDIT_TOOLS:
            w.reads.pop(path, None)
        elif tool == "Read" and view.get("status") == "ok":
            first, end = _range(view.get("tool_input"))
            ranges = w.reads.get(path)
            if ranges is not None and any(a <= first and end <= b for a, b in ranges):
                w.reread_tokens += tokens
            elif ranges is not None:
                ranges.append((first, end))
            elif len(w.reads) < MAX_PATHS:
                w.reads[path] = [(first, end)]

    def usage(self, session: str, at: datetime, prompt: int, cache_write: int, cache_1h: int | None
              ) -> Iterator[Window]:
        """An API call: it re-reads the live outputs; a large write after an idle gap is a cache break."""
        fresh = session not in self.open
        w = self._window(session, at)
        w.api_calls += 1
        w.carry_tokens += w.live_tokens
        w.last_prompt_tokens = prompt
        w.max_prompt_tokens = max(w.max_prompt_tokens, prompt)
        lifetime = CACHE_1H if w.one_hour_cache else CACHE_5M
        idle = fresh or (w.last_call_at is not None and at - w.last_call_at > lifetime)
        if idle and cache_write >= BREAK_MIN_TOKENS and 2 * cache_write >= prompt:
            w.cache_break_tokens += cache_write
        w.last_call_at = at
        w.one_hour_cache = bool(cache_1h)
        yield from self.expire()

    def hook(self, session: str, name: str, at: datetime) -> Iterator[Window]:
        """A hook event: ``PreCompact`` empties the context, ``Stop``/``SessionEnd`` close the window."""
        w = self._window(session, at)
        if name == "PreCompact":
            w.compactions += 1
            w.live_tokens = 0
            w.reads.clear()
        if name in CLOSING_HOOKS:
            yield self._close(session, at, name)
        yield from self.expire()

    def _close(self, session: str, at: datetime, reason: str) -> Window:
        w = self.open.pop(session)
        w.closed_at, w.close_reason = at, reason
        return w

    def expire(self) -> Iterator[Window]:
        """Close the windows idle past the timeout (by event time) and the least active beyond ``max_open``."""
        while self.open:
            session, w = next(iter(self.open.items()))
            if len(self.open) > self.max_open:
                yield self._close(session, w.last_at, "evicted")
            elif self.watermark is not None and self.watermark - w.last_at > self.timeout:
                yield self._close(session, w.last_at + self.timeout, "inactive")
            else:
                return

    def snapshot(self) -> list[Window]:
        """The open windows as they stand (emitted at a flush marker: their rows so far)."""
        return list(self.open.values())


def feed(windows: ContextWindows, events: Iterable[tuple[datetime, str, Any]]) -> list[Window]:
    """Fold ``(time, kind, item)`` events in time order (stable); returns the windows they closed.
    ``kind``: ``tool_call`` (a view), ``side_call`` (a sub-agent's view), ``usage`` (a usage record of
    the main chain), ``hook`` (an envelope)."""
    closed: list[Window] = []
    for at, kind, item in sorted(events, key=lambda e: e[0]):
        if kind in ("tool_call", "side_call"):
            closed += windows.tool_call(item, at, main=kind == "tool_call")
        elif kind == "usage":
            prompt = item.input_tokens + item.cache_read_input_tokens + item.cache_creation_input_tokens
            closed += windows.usage(item.session_id, at, prompt, item.cache_creation_input_tokens,
                                    item.cache_creation_1h_tokens)
        elif kind == "hook":
            closed += windows.hook(item.subject, str(item.data.get("hook_event_name") or ""), at)
    return closed
