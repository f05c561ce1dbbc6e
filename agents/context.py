"""Context efficiency of one session: what entered the agent's context, what it used, what that cost.
Pure: a session's tool calls, API calls (usage records) and compaction times in, rows out.

The rules (documented in docs/context.md):

* **Loaded**: every tool output that came back (status other than ``started``), in estimated tokens.
* **Carry**: an output is re-read, as cache reads, by every later API call of its context until the
  next compaction. ``carry`` is that number of calls; ``carry_tokens`` = tokens x carry. A context is a
  *chain*: the main agent's, or one sub-agent's (``Call.chain`` / ``Api.chain``: the agent id of the
  API message that issued the call / made the request, None for the main chain). A sub-agent's own
  tool outputs are re-read only by that sub-agent's later calls; only its final result, the output of
  the parent's ``Task``/``Agent`` call, enters the parent's context (and is carried by the parent's
  calls). The parent's outputs are not in a sub-agent's context either.
* **files_read / files_used** (kept to exactly this definition): the distinct paths read with the
  ``Read`` tool, and those of them edited or written (Edit, Write, MultiEdit, NotebookEdit) after a
  read of them in the same session.
* **Used** (what ``used_tokens`` counts): a file read is used when the file is later edited or written,
  or when its path is mentioned in a later tool input (a re-read of the same path does not count) or
  assistant message; any output is used when one of its distinctive words (:func:`distinctive`: the
  classes of ``agents.fidelity``'s evidence - paths, test ids, error codes, identifiers) that its own
  input did not hold is mentioned later. Mentions are whole words (:func:`words`), looked up in one
  index per session. An output whose text is not at hand (the pipeline keeps sizes, not bodies) and
  that is not a file read counts as used: waste is then a lower bound. Errors count as used (the agent
  reacts to them), and so do the outputs of the agent's own edits, writes and todo lists (they confirm
  its own action).
* **Re-read**: a ``Read`` of a path already read in the session by the same chain, with no edit or write
  of it and no compaction between, covering no line the earlier reads did not (same or narrower range). Its tokens
  are waste whatever else happens.
* **Waste** = loaded - used (unused outputs plus unchanged re-reads); efficiency = used / loaded.
* **Fixed overhead**: the first API call's prompt (system prompt, tool definitions, memory files), re-read
  by every call: the sum over calls of min(prefix, that call's prompt), per chain (a sub-agent starts
  from a prefix of its own).
* **Cache breaks**: an API call writing at least ``BREAK_MIN_TOKENS`` to the cache and at least half of
  its prompt, after an idle gap past the cache's lifetime (1 h when the previous call of that model
  wrote 1-hour cache, else 5 min), a switch to a model not used before in the session, or a compaction.
  API calls are followed per chain and model, so a sub-agent (on any model) does not look like a switch
  or a gap of the main chain. Sub-agent records without an agent id (older transcripts) all fall in one
  chain, ``UNNAMED_CHAIN``: several sub-agents there cannot be told apart (a new one's first call would
  look like a continuation of the last), so no cache break is judged on it.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from outloop.agents.pricing import PriceTable, Rates

EDIT_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit"})
OWN_ACTIONS = EDIT_TOOLS | {"TodoWrite"}  # their output confirms the agent's own action: counted used
OVERSIZED_TOKENS = 5_000  # an output at least this large is "oversized"
BREAK_MIN_TOKENS = 10_000  # a cache write at least this large may be a cache break
UNNAMED_CHAIN = "sidechain"  # the chain of sub-agent records without an agent id (older transcripts)
CACHE_5M = timedelta(minutes=5)
CACHE_1H = timedelta(hours=1)
LATER_TEXT_CAP = 200_000  # characters of a tool input or message searched for mentions
OUTPUT_TEXT_CAP = 200_000  # characters of an output whose words are looked for later


@dataclass(frozen=True)
class Call:
    """One tool call as the pipeline stores it. ``at`` orders the calls (started, else ended);
    ``done`` is when its output entered the context (ended, else started)."""

    id: str
    tool_name: str
    tool_input: Mapping[str, Any]
    status: str
    at: datetime | None
    done: datetime | None
    tokens: int
    signature: str | None = None
    output_text: str | None = None
    chain: str | None = None  # the sub-agent whose API message issued the call; None: the main chain

    @property
    def path(self) -> str | None:
        for key in ("file_path", "notebook_path"):
            value = self.tool_input.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def line_range(self) -> tuple[int, float]:
        """(first line, one past the last) of a Read; the whole file when no offset/limit."""
        start = self.tool_input.get("offset")
        limit = self.tool_input.get("limit")
        first = start if isinstance(start, int) and start > 0 else 1
        end: float = first + limit if isinstance(limit, int) and limit > 0 else float("inf")
        return first, end

    def input_text(self) -> str:
        return " ".join(str(v) for v in self.tool_input.values())


@dataclass(frozen=True)
class Api:
    """One API call (a usage record)."""

    id: str
    model: str | None
    at: datetime | None
    input_tokens: int
    output_tokens: int
    cache_read: int
    cache_write: int
    write_5m: int | None = None
    write_1h: int | None = None
    text: str = ""  # the assistant's text, where the transcript is at hand
    chain: str | None = None  # the sub-agent that made the request; None: the main chain

    @property
    def prompt(self) -> int:
        return self.input_tokens + self.cache_read + self.cache_write


@dataclass(frozen=True)
class Output:
    """What one tool output cost and whether it was used."""

    id: str
    session_id: str
    signature: str | None
    tool_name: str
    target: str | None
    tokens: int
    carry: int
    used: bool
    reread: bool
    oversized: bool

    @property
    def carry_tokens(self) -> int:
        return self.tokens * self.carry


@dataclass(frozen=True)
class CacheBreak:
    session_id: str
    usage_id: str
    at: datetime | None
    model: str | None
    cause: str  # idle | model_switch | compaction
    gap_seconds: float | None
    tokens: int  # written to the cache by this call
    cost_usd: float | None  # what writing them cost
    extra_cost_usd: float | None  # over reading them from a warm cache


@dataclass
class SessionContext:
    session_id: str
    outputs: list[Output] = field(default_factory=list)
    file_reads: list[dict[str, Any]] = field(default_factory=list)
    breaks: list[CacheBreak] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)


def _order(c: Call) -> tuple[float, str]:
    return (c.at.timestamp() if c.at else float("inf"), c.id)


def files_read_and_used(calls: Iterable[Call]) -> tuple[set[str], set[str]]:
    """Distinct paths read with Read, and those of them edited or written after a read of them. A call
    without a time (hook-log captures carry none) cannot be ordered: its edit counts as after."""
    first_read: dict[str, float | None] = {}
    last_edit: dict[str, float | None] = {}
    for c in calls:
        path = c.path
        if path is None:
            continue
        t = c.at.timestamp() if c.at is not None else None
        if c.tool_name == "Read":
            old = first_read.get(path, float("inf"))
            first_read[path] = None if t is None or old is None else min(old, t)
        elif c.tool_name in EDIT_TOOLS:
            old = last_edit.get(path, float("-inf"))
            last_edit[path] = None if t is None or old is None else max(old, t)
    used = {p for p, r in first_read.items() if p in last_edit
            and (r is None or last_edit[p] is None or last_edit[p] > r)}  # type: ignore[operator]
    return set(first_read), used


def carries(calls: Sequence[Call], apis: Sequence[Api], compactions: Sequence[datetime]) -> list[int]:
    """API calls whose prompt held each call's output: those of its chain after it (by time), up to the
    next compaction."""
    times: dict[str | None, list[float]] = {}
    for a in apis:
        if a.at is not None:
            times.setdefault(a.chain, []).append(a.at.timestamp())
    for ts in times.values():
        ts.sort()
    cuts = sorted(t.timestamp() for t in compactions)
    out = []
    for c in calls:
        when = c.done or c.at
        if when is None or c.status == "started":
            out.append(0)
            continue
        t = when.timestamp()
        chain = times.get(c.chain, [])
        first = bisect.bisect_right(chain, t)
        nxt = bisect.bisect_right(cuts, t)
        end = bisect.bisect_right(chain, cuts[nxt]) if nxt < len(cuts) else len(chain)
        out.append(max(0, end - first))
    return out


def _rereads(calls: Sequence[Call], compactions: Sequence[datetime]) -> set[str]:
    """Ids of Reads that re-read lines their chain already read, with no edit/write of the file (by any
    chain) and no compaction between."""
    cuts = sorted(compactions)
    seen: dict[str, dict[str | None, list[tuple[tuple[int, float], int]]]] = {}  # path -> chain -> ranges, epoch
    out: set[str] = set()
    for c in calls:
        path = c.path
        if path is None:
            continue
        if c.tool_name in EDIT_TOOLS:
            seen.pop(path, None)
            continue
        if c.tool_name != "Read" or c.status != "ok":
            continue
        epoch = bisect.bisect_right(cuts, c.at) if c.at is not None else len(cuts)
        first, end = c.line_range()
        ranges = seen.setdefault(path, {}).setdefault(c.chain, [])
        if any(e == epoch and a <= first and end <= b for (a, b), e in ranges):
            out.add(c.id)
        ranges.append(((first, end), epoch))
    return out


_WORD = re.compile(r"[^\s'\"`()\[\]{}<>,;=|&*!?]+")


def words(text: str) -> set[str]:
    """The whole words of a text as the used rule matches them: runs between spaces, quotes, brackets and
    punctuation, trailing dots and colons dropped; a ``path:line`` also as its path, a path also as each of
    its tails after a ``/`` (``src/app.py`` -> ``app.py``)."""
    out: set[str] = set()
    for m in _WORD.finditer(text):
        w = m.group(0).rstrip(".:")
        if len(w) < 4:
            continue
        out.add(w)
        head = w.split(":", 1)[0] if ":" in w and "::" not in w else w
        out.add(head)
        i = head.find("/")
        while i != -1:
            out.add(head[i + 1:])
            i = head.find("/", i + 1)
    return out


_CODE = re.compile(r"(?:[A-Z]{1,4}\d{3,5}|TS\d{4}|E\d{4})")
_INNER_CAP = re.compile(r"[a-z][A-Z]")
_IDENT = re.compile(r"[A-Za-z_]\w{4,}")


def distinctive(word: str) -> bool:
    """A word that tells what an output was used for, the classes of ``agents.fidelity.evidence``: a path
    with a file name, a test id, an error code, an identifier with an underscore or an inner capital."""
    if "::" in word or _CODE.fullmatch(word):
        return True
    if "/" in word or "." in word:
        return "." in word.rsplit("/", 1)[-1][1:]
    return bool(_IDENT.fullmatch(word)) and ("_" in word.strip("_") or bool(_INNER_CAP.search(word)))


@dataclass
class Mentions:
    """Where each word was last mentioned in the session's tool inputs and assistant messages: a position
    in time order, and the time of each position (what came after an output is what it may be used by)."""

    times: list[float] = field(default_factory=list)
    last: dict[str, int] = field(default_factory=dict)
    last_edit: dict[str, int] = field(default_factory=dict)  # path -> last edit or write of it

    @classmethod
    def of(cls, calls: Sequence[Call], apis: Sequence[Api]) -> Mentions:
        items: list[tuple[float, str, str | None, str | None]] = [
            (_order(c)[0], c.input_text(), c.tool_name, c.path) for c in calls]
        items += [(a.at.timestamp(), a.text, None, None) for a in apis if a.text and a.at is not None]
        items.sort(key=lambda x: x[0])
        m = cls()
        for pos, (t, text, tool, path) in enumerate(items):
            m.times.append(t)
            found = words(text[:LATER_TEXT_CAP])
            if tool == "Read" and path is not None:
                found.discard(path)  # a re-read of a path is not a use of it
            for w in found:
                m.last[w] = pos
            if tool in EDIT_TOOLS and path is not None:
                m.last_edit[path] = pos
        return m

    def after(self, when: float) -> int:
        """The first position strictly after time ``when``."""
        return bisect.bisect_right(self.times, when)


def is_used(c: Call, mentions: Mentions) -> bool:
    """The used rule of the module docstring for one output, given the session's mentions."""
    if c.status in ("error", "interrupted") or c.tool_name in OWN_ACTIONS:
        return True
    path = c.path if c.tool_name == "Read" else None
    if path is None and c.output_text is None:
        return True
    start = mentions.after(_order(c)[0])
    if path is not None and (mentions.last_edit.get(path, -1) >= start or mentions.last.get(path, -1) >= start):
        return True
    if c.output_text:
        own = words(c.input_text())
        return any(mentions.last.get(w, -1) >= start and w not in own and distinctive(w)
                   for w in words(c.output_text[:OUTPUT_TEXT_CAP]))
    return False


def rates_for(prices: PriceTable, model: str | None, prompt: int) -> Rates | None:
    found = prices.lookup(model)
    if found is None:
        return None
    price = found[1]
    if price.long_context is not None and prompt > price.threshold:
        return price.long_context
    return price.rates


def cache_breaks(session_id: str, apis: Sequence[Api], compactions: Sequence[datetime],
                 prices: PriceTable) -> list[CacheBreak]:
    """The cache breaks of a session's API calls (in time order); see the module docstring."""
    last: dict[tuple[str | None, str | None], Api] = {}
    cuts = sorted(compactions)
    out = []
    for a in apis:
        prev = last.get((a.chain, a.model))
        last[(a.chain, a.model)] = a
        if a.chain == UNNAMED_CHAIN or a.cache_write < BREAK_MIN_TOKENS or 2 * a.cache_write < a.prompt or a.at is None:
            continue
        cause, gap = None, None
        if prev is None:
            cause = "model_switch" if any(ch == a.chain and m != a.model for ch, m in last) else None
        elif prev.at is not None:
            gap = (a.at - prev.at).total_seconds()
            lifetime = CACHE_1H if (prev.write_1h or 0) > 0 else CACHE_5M
            if bisect.bisect_right(cuts, a.at) > bisect.bisect_right(cuts, prev.at):
                cause = "compaction"
            elif a.at - prev.at > lifetime:
                cause = "idle"
        if cause is None:
            continue
        rates = rates_for(prices, a.model, a.prompt)
        cost = extra = None
        if rates is not None:
            w1 = a.write_1h or 0
            w5 = a.cache_write - w1
            cost = round((w5 * rates.cache_write_5m + w1 * rates.cache_write_1h) / 1e6, 8)
            extra = round(cost - a.cache_write * rates.cache_read / 1e6, 8)
        out.append(CacheBreak(session_id, a.id, a.at, a.model, cause, gap, a.cache_write, cost, extra))
    return out


def fixed_overhead(apis: Sequence[Api]) -> tuple[int, int]:
    """(the main chain's first prompt, the sum over chains of each one's first prompt taken over every call
    of that chain, min(prefix, prompt)) of a session's calls in time order."""
    prefixes: dict[str | None, int] = {}
    total = 0
    for a in apis:
        prefix = prefixes.setdefault(a.chain, a.prompt)
        total += min(prefix, a.prompt)
    if not prefixes:
        return 0, 0
    return prefixes.get(None, apis[0].prompt), total


def measure(session_id: str, calls: Iterable[Call], apis: Iterable[Api], compactions: Iterable[datetime] = (),
            prices: PriceTable | None = None) -> SessionContext:
    """Every context-efficiency figure of one session (see the module docstring)."""
    calls = sorted(calls, key=_order)
    apis = sorted((a for a in apis), key=lambda a: (a.at.timestamp() if a.at else float("inf"), a.id))
    cuts = sorted(compactions)
    timed = [a for a in apis if a.at is not None]
    carry = carries(calls, timed, cuts)
    rereads = _rereads(calls, cuts)
    mentions = Mentions.of(calls, apis)
    result = SessionContext(session_id)
    for c, n in zip(calls, carry, strict=True):
        if c.status == "started":
            continue
        reread = c.id in rereads
        used = not reread and is_used(c, mentions)
        target = c.path if c.path is not None else c.tool_input.get("command")
        result.outputs.append(Output(c.id, session_id, c.signature, c.tool_name,
                                     target if isinstance(target, str) else None, c.tokens, n, used, reread,
                                     c.tokens >= OVERSIZED_TOKENS))
    result.file_reads = _file_reads(session_id, calls, result.outputs)
    result.breaks = cache_breaks(session_id, timed, cuts, prices or PriceTable.default())
    result.row = _row(session_id, calls, apis, result)
    return result


def _file_reads(session_id: str, calls: Sequence[Call], outputs: Sequence[Output]) -> list[dict[str, Any]]:
    by_id = {o.id: o for o in outputs}
    _, edited = files_read_and_used(calls)
    rows: dict[str, dict[str, Any]] = {}
    for c in calls:
        o = by_id.get(c.id)
        if c.tool_name != "Read" or c.path is None:
            continue
        row = rows.setdefault(c.path, {"session_id": session_id, "file_path": c.path, "times_read": 0,
                                       "rereads": 0, "tokens": 0, "carry_tokens": 0, "used": False,
                                       "edited": c.path in edited})
        row["times_read"] += 1
        if o is not None:
            row["tokens"] += o.tokens
            row["carry_tokens"] += o.carry_tokens
            row["rereads"] += o.reread
            row["used"] = row["used"] or o.used
    return list(rows.values())


def _row(session_id: str, calls: Sequence[Call], apis: Sequence[Api], r: SessionContext) -> dict[str, Any]:
    read, edited = files_read_and_used(calls)
    loaded = sum(o.tokens for o in r.outputs)
    used = sum(o.tokens for o in r.outputs if o.used)
    prefix, overhead = fixed_overhead(apis)
    total = sum(a.prompt + a.output_tokens for a in apis)
    times = [t for t in [*(c.at for c in calls), *(c.done for c in calls), *(a.at for a in apis)] if t is not None]
    mcp = sorted({c.tool_name for c in calls if c.tool_name.startswith("mcp__")})
    return {
        "session_id": session_id, "files_read": len(read), "files_used": len(edited),
        "outputs": len(r.outputs), "loaded_tokens": loaded, "used_tokens": used,
        "carry_tokens": sum(o.carry_tokens for o in r.outputs),
        "used_carry_tokens": sum(o.carry_tokens for o in r.outputs if o.used),
        "efficiency": used / loaded if loaded else None, "waste_tokens": loaded - used,
        "reread_tokens": sum(o.tokens for o in r.outputs if o.reread),
        "oversized_output_tokens": sum(o.tokens for o in r.outputs if o.oversized),
        "oversized_used_tokens": sum(o.tokens for o in r.outputs if o.oversized and o.used),
        "api_calls": len(apis), "total_tokens": total, "fixed_prefix_tokens": prefix,
        "fixed_overhead_tokens": overhead, "fixed_overhead_share": overhead / total if total else None,
        "cache_breaks": len(r.breaks), "cache_break_tokens": sum(b.tokens for b in r.breaks),
        "cache_break_cost_usd": _sum_or_none(b.extra_cost_usd for b in r.breaks),
        "mcp_tools_called": ",".join(mcp) or None,
        "window_start": min(times) if times else None, "window_end": max(times) if times else None,
    }


def _sum_or_none(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known), 8) if known else None


def chars_per_token() -> float:
    """The estimator's characters per token: ``OUTLOOP_CHARS_PER_TOKEN`` when set (a figure from
    ``agents.calibration.calibrate`` on your own transcripts), else 4 (the pipeline's estimate)."""
    try:
        value = float(os.environ.get("OUTLOOP_CHARS_PER_TOKEN", "") or 4.0)
    except ValueError:
        return 4.0
    return value if 1.0 <= value <= 8.0 else 4.0
