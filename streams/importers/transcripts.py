"""Claude Code session transcripts (``~/.claude/projects/<project>/<session>.jsonl``, and the same
records as a JSON array in a hook-log capture's ``chat.json``) -> envelopes.

- ``transcript.tool_use`` for each assistant ``tool_use`` block; id ``tu:<tool_use_id>``.
- ``transcript.tool_result`` for each user ``tool_result`` block; id ``tr:<tool_use_id>``.
- ``usage.record`` once per (message.id, requestId); id ``us:<message.id>:<requestId>``. One API
  response is written as several records whose ``output_tokens`` grows: the record with the largest
  total (input + output + cache read + cache creation) is kept, the first of equals. Usage is emitted
  at the end of each call of :func:`iter_records` (a file, or a chunk of new lines when the tailer
  follows a file as it is written); a later call with the same state re-emits a key only with a
  larger total.
- ``transcript.message`` once per (message.id, requestId) too, id ``msg:<message.id>:<requestId>``:
  the tool_use ids the response issued, its content blocks and their sizes (no bodies), accumulated
  over its records and emitted with the usage; re-emitted when a later call saw more of it.
- ``<synthetic>`` records (written by Claude Code itself, not by the API, always zero usage) produce
  no usage record; they are counted in ``stats.notes["usage_synthetic"]``. Those that record an API
  error (``isApiErrorMessage``: a rate limit, a timeout) become a ``hook.event`` named ``ApiError``
  (an outloop event, like the status line's ``Status``), id ``apierr:<uuid>``, with the ``error`` kind
  and the text: a stop caused by a rate limit is an official quota signal (``agents.quota_signals``).

Records are deduplicated by ``uuid`` and blocks by ``tool_use_id`` across the files of one import
(chat.json versions overlap, and a session can arrive both as a transcript and as chat.json).
``call_key`` comes from one :class:`OrdinalCounter` per session over tool_use blocks in file order;
:func:`streams.importers.detect.iter_paths` feeds main session files before ``agent-*.jsonl`` files
(which share the parent's ``sessionId``), so the keys depend only on the set of files imported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from outloop.schemas.events import ApiMessage, Envelope, EventType, ToolResultRecord, ToolUseRecord, UsageRecord
from outloop.schemas.ids import OrdinalCounter, usage_id
from outloop.schemas.sizes import json_size, output_text, text_size
from outloop.streams.importers import ImportStats, ValidationError, make_envelope, parse_time
from outloop.streams.redact import redact_canonical

SOURCE = "transcript"
TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


_REPORTED = (("durationMs", 1.0), ("totalDurationMs", 1.0), ("durationSeconds", 1000.0))


def reported_duration(tool_use_result: Any) -> float | None:
    """The run time (ms) a transcript's ``toolUseResult`` states (Glob, Grep, WebFetch: ``durationMs``;
    Task: ``totalDurationMs``; WebSearch: ``durationSeconds``), else None. Bash states none."""
    if not isinstance(tool_use_result, dict):
        return None
    for key, scale in _REPORTED:
        value = tool_use_result.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            return float(value) * scale
    return None


class TranscriptState:
    """What one import remembers across files: seen records and blocks, call-key ordinals, usage and,
    with ``messages``, the API messages (then also emitted as ``transcript.message`` envelopes)."""

    def __init__(self, messages: bool = False) -> None:
        self.emit_messages = messages
        self.uuids: set[str] = set()
        self.tool_uses: set[str] = set()
        self.tool_results: set[str] = set()
        self.keys = OrdinalCounter(redact_canonical)
        self.usage_emitted: dict[str, int] = {}  # usage id -> total already emitted
        self.messages: dict[str, dict[str, Any]] = {}  # usage id -> the API message seen so far
        self.messages_emitted: dict[str, tuple[int, int]] = {}  # usage id -> (blocks, bytes) emitted


def _add_message_record(state: TranscriptState, uid: str, record: dict[str, Any], session: str) -> None:
    """Count one assistant record's content blocks into its API message (``state.messages[uid]``)."""
    message = record["message"]
    acc = state.messages.get(uid)
    if acc is None:
        acc = state.messages[uid] = {
            "id": uid, "message_id": message["id"], "request_id": record.get("requestId"), "session_id": session,
            "model": message.get("model"), "timestamp": parse_time(record.get("timestamp")), "tool_use_ids": [],
            "content_blocks": 0, "text_bytes": 0, "thinking_bytes": 0, "tool_use_bytes": 0,
            "agent_id": record.get("agentId"), "is_sidechain": bool(record.get("isSidechain")), "source": SOURCE}
    content = message.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        acc["content_blocks"] += 1
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            acc["text_bytes"] += text_size(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            acc["thinking_bytes"] += text_size(block["thinking"])
        elif kind == "tool_use":
            acc["tool_use_bytes"] += json_size(block.get("input"))
            tid = block.get("id")
            if isinstance(tid, str) and tid not in acc["tool_use_ids"]:
                acc["tool_use_ids"].append(tid)


def _message_envelopes(state: TranscriptState, uids: Iterable[str], path: Path,
                       stats: ImportStats) -> Iterator[Envelope]:
    """The API messages among ``uids`` that grew since they were last emitted."""
    for uid in uids:
        acc = state.messages[uid]
        rank = (acc["content_blocks"], acc["text_bytes"] + acc["thinking_bytes"] + acc["tool_use_bytes"])
        if state.messages_emitted.get(uid, (-1, -1)) >= rank:
            continue
        try:
            model = ApiMessage.model_validate(acc)
            envelope = make_envelope(model, id=f"msg:{uid}", type=EventType.MESSAGE, source=SOURCE,
                                     subject=acc["session_id"], time=model.timestamp)
        except ValidationError:
            stats.damaged(path)
            continue
        state.messages_emitted[uid] = rank
        yield stats.produced(envelope)


def parse_lines(lines: Iterable[bytes], stats: ImportStats, path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of transcript lines; blank lines ignored, other bad lines counted as damaged."""
    for line in lines:
        if not line.strip():
            continue
        stats.records_read += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            stats.damaged(path)
            continue
        if isinstance(record, dict):
            yield record
        else:
            stats.damaged(path)


def read_jsonl(path: Path, stats: ImportStats) -> Iterator[dict[str, Any]]:
    """The JSON objects of a .jsonl file (see :func:`parse_lines`)."""
    with path.open("rb") as fh:
        yield from parse_lines(fh, stats, path)


def usage_total(usage: dict[str, Any]) -> int:
    """Sum of the four token kinds; raises ValueError when one is not a non-negative integer."""
    total = 0
    for kind in TOKEN_KINDS:
        value = usage.get(kind, 0)
        if value is None:
            value = 0
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{kind} is {value!r}")
        total += value
    return total


def _usage_envelope(record: dict[str, Any], session: str) -> Envelope:
    message = record["message"]
    usage = message["usage"]
    split = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
    uid = usage_id(message["id"], record.get("requestId"))
    model = UsageRecord(
        id=uid,
        session_id=session,
        model=message.get("model"),
        timestamp=parse_time(record.get("timestamp")),
        input_tokens=usage.get("input_tokens") or 0,
        output_tokens=usage.get("output_tokens") or 0,
        cache_read_input_tokens=usage.get("cache_read_input_tokens") or 0,
        cache_creation_input_tokens=usage.get("cache_creation_input_tokens") or 0,
        cache_creation_5m_tokens=split.get("ephemeral_5m_input_tokens"),
        cache_creation_1h_tokens=split.get("ephemeral_1h_input_tokens"),
        source=SOURCE,
    )
    return make_envelope(model, id=f"us:{uid}", type=EventType.USAGE, source=SOURCE, subject=session,
                         time=model.timestamp)


def _api_error_envelope(record: dict[str, Any], message: dict[str, Any], session: str) -> Envelope | None:
    """An API error Claude Code recorded instead of a response (``isApiErrorMessage``: a rate limit, a
    timeout, a refused key) as an ``ApiError`` event: its ``error`` kind and text, which say for a rate
    limit which limit and when it resets (``agents.quota_signals`` reads them). None without a uuid."""
    uuid = record.get("uuid")
    if not isinstance(uuid, str) or not uuid:
        return None
    content = message.get("content")
    texts = [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)] \
        if isinstance(content, list) else [content] if isinstance(content, str) else []
    error = record.get("error")
    data = {"session_id": session, "hook_event_name": "ApiError",
            "error": error if isinstance(error, str) and error else "unknown", "text": " ".join(texts)[:500],
            "timestamp": record.get("timestamp"), "transcript_uuid": uuid}
    try:
        return make_envelope(None, id=f"apierr:{uuid}", type=EventType.HOOK_EVENT, source=SOURCE, subject=session,
                             time=parse_time(record.get("timestamp")), data=data)
    except ValidationError:
        return None


def _blocks(record: dict[str, Any], path: Path, stats: ImportStats, state: TranscriptState,
            session: str) -> Iterator[Envelope]:
    message = record["message"]
    content = message.get("content")
    if not isinstance(content, list):
        return
    time = parse_time(record.get("timestamp"))
    # the record's toolUseResult belongs to its tool_result only when it holds one
    results = sum(1 for b in content if isinstance(b, dict) and b.get("type") == "tool_result")
    reported = reported_duration(record.get("toolUseResult")) if results == 1 else None
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        try:
            if kind == "tool_use" and record.get("type") == "assistant":
                tid = block.get("id")
                if isinstance(tid, str) and tid in state.tool_uses:
                    stats.note("duplicate_tool_use")
                    continue
                name, tool_input = block.get("name"), block.get("input")
                if not isinstance(tid, str) or not isinstance(name, str):
                    stats.damaged(path)
                    continue
                use = ToolUseRecord(
                    session_id=session, tool_use_id=tid, tool_name=name, tool_input=tool_input,
                    call_key=state.keys.key(session, name, tool_input), timestamp=time,
                    agent_id=record.get("agentId"), is_sidechain=bool(record.get("isSidechain")),
                    cwd=record.get("cwd"),
                )
                state.tool_uses.add(use.tool_use_id)
                yield make_envelope(use, id=f"tu:{use.tool_use_id}", type=EventType.TOOL_USE,
                                    source=SOURCE, subject=session, time=time)
            elif kind == "tool_result" and record.get("type") == "user":
                tid = block.get("tool_use_id")
                if isinstance(tid, str) and tid in state.tool_results:
                    stats.note("duplicate_tool_result")
                    continue
                result = ToolResultRecord(
                    session_id=session, tool_use_id=tid, is_error=block.get("is_error") is True,
                    output_text=output_text(block.get("content")), timestamp=time,
                    duration_ms=reported,
                )
                state.tool_results.add(result.tool_use_id)
                yield make_envelope(result, id=f"tr:{result.tool_use_id}", type=EventType.TOOL_RESULT,
                                    source=SOURCE, subject=session, time=time)
        except ValidationError:
            stats.damaged(path)


def iter_records(records: Iterable[Any], path: Path, stats: ImportStats, state: TranscriptState | None = None,
                 fallback_session: str | None = None) -> Iterator[Envelope]:
    """Envelopes from already parsed transcript records (a .jsonl file's lines or a chat.json array)."""
    state = state if state is not None else TranscriptState()
    best: dict[str, tuple[int, dict[str, Any], str]] = {}  # usage id -> (total, record, session)
    touched: dict[str, None] = {}  # API messages this call added records to, in order
    for record in records:
        if not isinstance(record, dict):
            stats.damaged(path)
            continue
        uuid = record.get("uuid")
        if isinstance(uuid, str):
            if uuid in state.uuids:
                stats.note("duplicate_record")
                continue
            state.uuids.add(uuid)
        if record.get("type") not in ("assistant", "user"):
            continue
        message = record.get("message")
        session = record.get("sessionId") or fallback_session
        if not isinstance(message, dict) or not isinstance(session, str) or not session:
            stats.damaged(path)
            continue
        for envelope in _blocks(record, path, stats, state, session):
            yield stats.produced(envelope)
        if record.get("isApiErrorMessage") is True and record.get("type") == "assistant":
            error = _api_error_envelope(record, message, session)
            if error is not None:
                yield stats.produced(error)
        usage = message.get("usage")
        if record.get("type") != "assistant" or not isinstance(usage, dict):
            continue
        if message.get("model") == "<synthetic>":
            stats.note("usage_synthetic")
            continue
        if not isinstance(message.get("id"), str) or not message["id"]:
            stats.damaged(path)
            continue
        try:
            total = usage_total(usage)
        except ValueError:
            stats.damaged(path)
            continue
        uid = usage_id(message["id"], record.get("requestId"))
        if state.emit_messages:
            _add_message_record(state, uid, record, session)
            touched[uid] = None
        if uid not in best or total > best[uid][0]:
            best[uid] = (total, record, session)
    yield from _message_envelopes(state, touched, path, stats)
    for uid, (total, record, session) in best.items():
        if state.usage_emitted.get(uid, -1) >= total:
            stats.note("duplicate_usage")
            continue
        try:
            envelope = _usage_envelope(record, session)
        except ValidationError:
            stats.damaged(path)
            continue
        state.usage_emitted[uid] = total
        yield stats.produced(envelope)


def session_of_file(path: Path) -> str | None:
    """A main transcript file is named after its session; ``agent-*.jsonl`` files are not."""
    return None if path.name.startswith("agent-") else path.stem


def iter_transcript_file(path: Path, stats: ImportStats,
                         state: TranscriptState | None = None) -> Iterator[Envelope]:
    """Envelopes of one ``.jsonl`` transcript."""
    yield from iter_records(read_jsonl(path, stats), path, stats, state, session_of_file(path))


def iter_transcript_array(path: Path, records: list[Any], stats: ImportStats,
                          state: TranscriptState | None = None) -> Iterator[Envelope]:
    """Envelopes of a transcript written as a JSON array (a hook-log capture's ``chat.json``)."""

    def counted() -> Iterator[Any]:
        for record in records:
            stats.records_read += 1
            yield record

    yield from iter_records(counted(), path, stats, state)
