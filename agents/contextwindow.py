"""Context-efficiency windows: a per-session window the sessions agent keeps, fed by the tool calls,
usage records, API messages and hook events it produces. Pure: events and their times in, closed windows out.

A window is one stretch of a session's activity. It opens on the first event of a session that has
no open window, and closes (each by event time):

* on the session's ``Stop`` or ``SessionEnd`` hook event;
* inactive, at its last event + ``timeout``: when the session's own next event comes later than that,
  or when an event of another session does (the fold then knows the window is idle: this is what
  bounds memory); an event never closes its own session's window, and one earlier than a window's
  last event closes nothing (a replay may bring an older session after a newer one: its events must
  not each make a window of their own);
* evicted, when more than ``max_open`` windows are open (the least recently active).

For input in event-time order (live hooks) and for input where each session's events come together
(a replay of transcripts, file after file), a session's windows therefore depend on its own events
only, not on which sessions share its partition (nor on how many partitions there are).
A closed window is emitted and forgotten: nothing of it stays in memory, so memory grows with the
open windows only, never with the sessions seen. More events of that session open a new window
(``seq`` + 1 is not known then: a window is named by its session and the time of its first event).

Replaying the same input gives the same windows, however it is cut into batches. The agent feeds the
fold one input event at a time, in the order of its partition (which a replay reproduces: the
publisher keeps the input's order per partition); the fold never sorts a batch. Which window an event
joins, and when a window closes, are therefore decided at the same point of that order in every replay.
Within a window, the fold keeps its *facts*, one per id - each tool call (its latest view's file and size;
its time that of its first completed view), each usage record (its largest version, as the sink keeps
it), each hook event, and the ids the session's API messages mark as a sub-agent's - and the running
figures are computed from them in event-time order when the window is emitted
(:func:`figures`), so a fact delivered twice, or an update that came in a later batch, counts once and
the order facts arrived in within the window changes nothing (a transcript's usage records come after
its tool results, at the end of its file). The figures (the session-wide ones are the sink's, recomputed
from stored facts, see :mod:`agents.context`):

* outputs and their tokens, counted once per tool call id;
* ``carry_tokens``: every API call of the main chain adds the tokens of the main chain's outputs that
  came back before it since the window opened or the last compaction (``PreCompact``) - what that call
  re-read of them (a sub-agent's calls and outputs, known from the session's API messages, are left out);
* ``reread_tokens``: Reads of a path this window already read (same or narrower range), with no edit
  of it nor compaction between (the re-read rule of :mod:`agents.context`);
* ``cache_break_tokens``: cache writes of at least ``BREAK_MIN_TOKENS`` and half the prompt by the
  window's first API call or after an idle gap past the cache lifetime.

Per window the state is bounded too: at most ``MAX_IDS`` facts of each kind are kept (beyond, events
still count, their figures do not) and ``MAX_PATHS`` paths are followed for re-reads.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from outloop.agents.context import BREAK_MIN_TOKENS, CACHE_1H, CACHE_5M, EDIT_TOOLS

TIMEOUT = timedelta(minutes=30)
MAX_OPEN = 50_000
MAX_IDS = 4_096
MAX_PATHS = 1_024
CLOSING_HOOKS = frozenset({"Stop", "SessionEnd"})


class Call(NamedTuple):
    """A tool call as the window keeps it: ``at`` is None while it has not completed."""

    at: datetime | None
    tokens: int
    tool: str | None
    path: str | None
    read_ok: bool
    first: int
    end: float


class Api(NamedTuple):
    """An API call (a usage record): its time, prompt, cache write and 1-hour cache write, and its total
    (the largest version wins)."""

    at: datetime
    prompt: int
    cache_write: int
    cache_1h: int
    total: int


@dataclass
class Figures:
    outputs: int = 0
    loaded_tokens: int = 0
    carry_tokens: int = 0
    reread_tokens: int = 0
    api_calls: int = 0
    max_prompt_tokens: int = 0
    compactions: int = 0
    cache_break_tokens: int = 0


@dataclass
class Window:
    session_id: str
    opened_at: datetime
    last_at: datetime
    events: int = 0
    closed_at: datetime | None = None
    close_reason: str | None = None
    calls: dict[str, Call] = field(default_factory=dict)
    usage: dict[str, Api] = field(default_factory=dict)
    hooks: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    side: set[str] = field(default_factory=set)  # usage and tool call ids of a sub-agent

    @property
    def id(self) -> str:
        return f"{self.session_id}:{self.opened_at.isoformat()}"

    def figures(self) -> Figures:
        return figures(self)

    def record(self) -> dict[str, Any]:
        """The window as the ``context_windows`` row."""
        f = figures(self)
        return {"id": self.id, "session_id": self.session_id, "opened_at": self.opened_at,
                "last_event_at": self.last_at, "closed_at": self.closed_at, "close_reason": self.close_reason,
                "events": self.events, "outputs": f.outputs, "loaded_tokens": f.loaded_tokens,
                "carry_tokens": f.carry_tokens, "reread_tokens": f.reread_tokens, "api_calls": f.api_calls,
                "max_prompt_tokens": f.max_prompt_tokens, "compactions": f.compactions,
                "cache_break_tokens": f.cache_break_tokens}


def _range(tool_input: Any) -> tuple[int, float]:
    start = tool_input.get("offset") if isinstance(tool_input, dict) else None
    limit = tool_input.get("limit") if isinstance(tool_input, dict) else None
    first = start if isinstance(start, int) and start > 0 else 1
    return first, (first + limit if isinstance(limit, int) and limit > 0 else float("inf"))


def _timeline(w: Window) -> list[tuple[datetime, int, str, Any]]:
    """The window's facts in event-time order; at one instant hook events first, then tool outputs, then API
    calls, then by id (a total order: no tie depends on arrival)."""
    items: list[tuple[datetime, int, str, Any]] = [(at, 0, hid, name) for hid, (at, name) in w.hooks.items()]
    items += [(c.at, 1, cid, c) for cid, c in w.calls.items() if c.at is not None]
    items += [(a.at, 2, uid, a) for uid, a in w.usage.items()]
    items.sort(key=lambda i: (i[0], i[1], i[2]))
    return items


def figures(w: Window) -> Figures:
    """The running figures of ``w``, from its facts in event-time order (see the module doc)."""
    f = Figures()
    live = 0
    reads: dict[str, list[tuple[int, float]]] = {}
    last_call: Api | None = None
    for at, kind, fid, item in _timeline(w):
        if kind == 0:
            if item == "PreCompact":
                f.compactions += 1
                live = 0
                reads.clear()
        elif kind == 1:
            f.outputs += 1
            f.loaded_tokens += item.tokens
            if fid not in w.side:
                live += item.tokens
                f.reread_tokens += _reread(reads, item)
        elif fid not in w.side:
            f.api_calls += 1
            f.carry_tokens += live
            f.max_prompt_tokens = max(f.max_prompt_tokens, item.prompt)
            lifetime = CACHE_1H if last_call is not None and last_call.cache_1h else CACHE_5M
            idle = last_call is None or at - last_call.at > lifetime
            if idle and item.cache_write >= BREAK_MIN_TOKENS and 2 * item.cache_write >= item.prompt:
                f.cache_break_tokens += item.cache_write
            last_call = item
    return f


def _reread(reads: dict[str, list[tuple[int, float]]], c: Call) -> int:
    """The tokens of ``c`` when it re-reads a range of a path read before (no edit between); follows the reads."""
    if c.path is None:
        return 0
    if c.tool in EDIT_TOOLS:
        reads.pop(c.path, None)
    elif c.read_ok:
        ranges = reads.get(c.path)
        if ranges is not None and any(a <= c.first and c.end <= b for a, b in ranges):
            return c.tokens
        if ranges is not None:
            ranges.append((c.first, c.end))
        elif len(reads) < MAX_PATHS:
            reads[c.path] = [(c.first, c.end)]
    return 0


@dataclass
class ContextWindows:
    """The open windows of one sessions agent's partition, least recently active first. Feed it one
    event at a time in the partition's order (see the module doc)."""

    timeout: timedelta = TIMEOUT
    max_open: int = MAX_OPEN
    open: OrderedDict[str, Window] = field(default_factory=OrderedDict)
    now: datetime | None = None  # the time of the event folded last
    # the open windows, one entry each, earliest first: (a last event, order, session, opened); an entry whose
    # window has had events since goes back in with its new last event when it comes up (one push per window
    # instead of one per event), one whose window closed is dropped
    idle: list[tuple[datetime, int, str, datetime]] = field(default_factory=list)
    _pushed: int = 0
    _closed: list[Window] = field(default_factory=list)  # closed while folding the current event

    def _window(self, session: str, at: datetime, counted: bool = True) -> Window:
        self.now = at
        w = self.open.get(session)
        if w is not None and at - w.last_at > self.timeout:  # the session came back after idling past it
            self._closed.append(self._close(session, w.last_at + self.timeout, "inactive"))
            w = None
        if w is None:
            w = self.open[session] = Window(session, at, at)
            self._push(w)
        else:
            self.open.move_to_end(session)
            if at > w.last_at:
                w.last_at = at
        if counted:
            w.events += 1
        return w

    def _push(self, w: Window) -> None:
        self._pushed += 1
        heapq.heappush(self.idle, (w.last_at, self._pushed, w.session_id, w.opened_at))
        if len(self.idle) > 4 * len(self.open) + 1024:  # mostly entries skipped later: keep the live ones
            self.idle = [(o.last_at, i, o.session_id, o.opened_at) for i, o in enumerate(self.open.values())]
            heapq.heapify(self.idle)

    def tool_call(self, view: dict[str, Any], at: datetime, main: bool = True) -> list[Window]:
        """A tool call view (the pairing fold's merged view); it is an output from its first completed view
        on (whose time it keeps). ``main=False``: a sub-agent's call, known from elsewhere than its API
        message - its output is loaded into the sub-agent's context, not carried by the main chain's calls
        (nor a re-read of the main chain's files)."""
        w = self._window(view["session_id"], at)
        cid = view["id"]
        seen = w.calls.get(cid)
        if seen is None and len(w.calls) >= MAX_IDS:
            return self.expire()
        done = view.get("status") != "started"
        first, end = _range(view.get("tool_input"))
        path = view.get("file_path")
        ended = (seen.at if seen is not None and seen.at is not None else at) if done else None
        w.calls[cid] = Call(ended, int(view.get("output_tokens_est") or 0) if done else 0,
                            view.get("tool_name"), path if isinstance(path, str) else None,
                            view.get("tool_name") == "Read" and view.get("status") == "ok", first, end)
        if not main:
            w.side.add(cid)
        return self.expire()

    def usage(self, uid: str, session: str, at: datetime, prompt: int, cache_write: int, cache_1h: int | None,
              total: int | None = None) -> list[Window]:
        """An API call (a usage record; its largest version counts)."""
        w = self._window(session, at)
        total = prompt if total is None else total
        seen = w.usage.get(uid)
        if (seen is None and len(w.usage) < MAX_IDS) or (seen is not None and total > seen.total):
            w.usage[uid] = Api(at, prompt, cache_write, int(cache_1h or 0), total)
        return self.expire()

    def message(self, session: str, at: datetime | None, ids: Iterable[str]) -> list[Window]:
        """A sub-agent's API message of ``session``: its usage and tool call ids are not the main chain's.
        It opens a window (counting no event) when none is open, so its calls that follow are known."""
        if at is None and session not in self.open:
            return []
        w = self._window(session, at, counted=False) if at is not None else self.open[session]
        for i in ids:
            if len(w.side) < 2 * MAX_IDS:
                w.side.add(i)
        return self.expire()

    def hook(self, session: str, name: str, at: datetime, hid: str | None = None) -> list[Window]:
        """A hook event: ``PreCompact`` empties the context, ``Stop``/``SessionEnd`` close the window."""
        w = self._window(session, at)
        if len(w.hooks) < MAX_IDS:
            w.hooks[hid or f"{name}@{at.isoformat()}"] = (at, name)
        if name in CLOSING_HOOKS:
            self._closed.append(self._close(session, at, name))
        return self.expire()

    def _close(self, session: str, at: datetime, reason: str) -> Window:
        w = self.open.pop(session)
        w.closed_at, w.close_reason = at, reason
        return w

    def expire(self) -> list[Window]:
        """The windows the current event closed: its own session's, those idle past the timeout at its time
        (by event time), and the least active beyond ``max_open``."""
        closed, self._closed = self._closed, []
        if self.now is not None:
            limit = self.now - self.timeout
            while self.idle and self.idle[0][0] < limit:
                _, _, session, opened = heapq.heappop(self.idle)
                w = self.open.get(session)
                if w is None or w.opened_at != opened:
                    continue  # closed since
                if w.last_at >= limit:
                    self._push(w)
                    continue
                closed.append(self._close(session, w.last_at + self.timeout, "inactive"))
        while len(self.open) > self.max_open:
            session, w = next(iter(self.open.items()))
            closed.append(self._close(session, w.last_at, "evicted"))
        return closed

    def snapshot(self) -> list[Window]:
        """The open windows as they stand (emitted at a flush marker: their rows so far)."""
        return list(self.open.values())


def feed(windows: ContextWindows, events: Iterable[tuple[datetime | None, str, Any]]) -> list[Window]:
    """Fold ``(time, kind, item)`` events in the order given (never sorted: see the module doc); returns the
    windows they closed. ``kind``: ``tool_call`` (a view), ``side_call`` (a sub-agent's view), ``usage`` (a
    usage record), ``hook`` (an envelope), ``message`` (a sub-agent's API message; its time may be None)."""
    closed: list[Window] = []
    for at, kind, item in events:
        if kind == "message":
            closed += windows.message(item.session_id, at, [item.id, *item.tool_use_ids])
        elif at is None:  # only a message may come without its time
            continue
        elif kind in ("tool_call", "side_call"):
            closed += windows.tool_call(item, at, main=kind == "tool_call")
        elif kind == "usage":
            prompt = item.input_tokens + item.cache_read_input_tokens + item.cache_creation_input_tokens
            closed += windows.usage(item.id, item.session_id, at, prompt, item.cache_creation_input_tokens,
                                    item.cache_creation_1h_tokens, prompt + item.output_tokens)
        elif kind == "hook":
            closed += windows.hook(item.subject, str(item.data.get("hook_event_name") or ""), at, item.id)
    return closed
