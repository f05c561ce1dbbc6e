"""The sessions agent with its fast path (msgspec decode, outputs encoded without pydantic models)
against the agent as it was (``tests.unit.sessionsref``: pydantic for every input and output, the
former fold): generated batches of valid envelopes of every session type and envelopes damaged in
many ways give the same records in the same order (topic, key, partition and parsed value), the same
dead letters with the same reasons, and the same counts. Record by record, wherever the fast decode
vouches for an envelope, it holds the values the pydantic models hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outloop.agents.pairing import Pairing
from outloop.agents.pricing import PriceTable
from outloop.agents.sessions import SessionOutputs, session_records
from outloop.schemas.fast import FastEnvelope
from outloop.streams.codec import Decoded, decode, decode_checked, decode_fast
from tests.unit import sessionsref

NAMES = SessionOutputs("o.hook-events", "o.tool-calls", "o.usage", "o.dlq")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRICE = PriceTable.default().cost_usd

TIMES = st.sampled_from([
    "2026-03-01T10:00:00Z", "2026-03-01T10:00:00.250000Z", "2026-03-01T10:00:01.000000Z", "2026-03-01T10:00:02Z",
] * 4 + [
    "2026-03-01T10:00:00+00:00", "2026-03-01T12:00:00+02:00", "2026-03-01T10:00:00", "2026-03-01 10:00:00Z",
    "2026-03-01T10:00:00.5Z", "2026-03-01T10:00:00.1234567Z", "2026-02-30T10:00:00Z", "2026-03-01T24:00:00Z",
    "2026-03-01T23:59:60Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59.999999Z", "2026-03-01t10:00:00z",
    "1700000000", "not a time", "２０２６-03-01T10:00:00Z"])
SESSIONS = st.sampled_from(["s1", "s2", "sé😀"])
IDS = st.sampled_from(["toolu_1", "toolu_2", "toolu_3"])
COMMANDS = st.sampled_from(["ls -la", "pytest -q", "export API_KEY=sk-ant-abcdefghijklmnopqrstuvwxyz0123",
                            "psql postgres://u:hunter2@db/x", "echo ok"])
ODD = st.sampled_from([None, "1", 1.0, 1.5, True, False, 0, [], {}, "", 2**63, 2**64 - 1, 2**64, -1, -0.0, 1e300,
                       0.1, "x" * 600, "😀"])


def tool_input(draw: Any) -> Any:
    return draw(st.sampled_from([
        None, {"command": draw(COMMANDS), "description": "run it"}, {"file_path": "a/b.py", "content": "x"},
        {"b": 1, "a": [1, 2.5, {"z": None, "y": "é"}], "n": 10**19}, {"n": 1e16, "t": "\t\u2028"}, "raw text",
        [1, "x"]]))


def hook_data(draw: Any) -> dict[str, Any]:
    name = draw(st.sampled_from(["PreToolUse", "PostToolUse", "PostToolUseFailure"] * 2 + ["UserPromptSubmit", "Stop"]))
    data: dict[str, Any] = {"session_id": draw(SESSIONS), "hook_event_name": name,
                            "transcript_path": "/h/.claude/p/s1.jsonl", "cwd": "/h/demo"}
    if draw(st.integers(0, 3)):
        data["tool_name"] = draw(st.sampled_from(["Bash", "Read", "Edit"]))
        data["tool_input"] = tool_input(draw)
    if draw(st.booleans()):
        data["tool_use_id"] = draw(IDS)
    elif draw(st.booleans()):
        data["call_key"] = "s1:abc:0"
    if name == "PostToolUseFailure" and draw(st.integers(0, 3)):
        data["error"] = draw(st.sampled_from(["Exit code 1", {"stderr": "boom"}]))
    if name.startswith("Post") and draw(st.booleans()):
        data["tool_response"] = draw(st.sampled_from([
            {"stdout": "ok\n", "stderr": ""}, {"stdout": "", "stderr": "boom", "interrupted": True},
            {"file": {"content": "abc"}}, "plain", [{"type": "text", "text": "t"}], {"is_error": True},
            {"big": 2**64 - 1, "f": [1.0, -0.0, 1e16]}]))
    if not draw(st.integers(0, 3)):
        data["outloop_sizes"] = draw(st.sampled_from([{"input_bytes": 10, "output_bytes": 99}, {"input_bytes": -1},
                                                      "x", {"output_bytes": True}]))
    if draw(st.booleans()):
        data["brand_new"] = {"a": [1, {"b": None}]}
    return data


def tool_use_data(draw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"session_id": draw(SESSIONS), "tool_use_id": draw(IDS),
                            "tool_name": draw(st.sampled_from(["Bash", "Read"])), "tool_input": tool_input(draw),
                            "call_key": "s1:k:0"}
    for name, values in (("timestamp", TIMES), ("agent_id", st.sampled_from([None, "a1"])),
                         ("is_sidechain", st.sampled_from([True, False] * 3 + [1, "true"])),
                         ("cwd", st.sampled_from([None, "/h"])),
                         ("input_bytes", st.sampled_from([None, 0, 12, 2**63 - 1] * 3 + [2**63, -1, 1.0, True]))):
        if draw(st.booleans()):
            data[name] = draw(values)
    return data


def tool_result_data(draw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"session_id": draw(SESSIONS), "tool_use_id": draw(IDS)}
    for name, values in (("is_error", st.sampled_from([True, False, 0])),
                         ("output_text", st.sampled_from(["", "out", "é" * 9])),
                         ("timestamp", TIMES), ("output_bytes", st.sampled_from([None, 0, 77] * 3 + [-1, 2**63, 7.0]))):
        if draw(st.booleans()):
            data[name] = draw(values)
    return data


def tool_call_data(draw: Any) -> dict[str, Any]:
    tid = draw(st.sampled_from(["toolu_1", "toolu_9", None]))
    data: dict[str, Any] = {"id": tid or "syn:s1:k:0", "tool_use_id": tid, "call_key": None if tid else "s1:k:0",
                            "session_id": draw(SESSIONS), "tool_name": draw(st.sampled_from(["Bash", None])),
                            "status": draw(st.sampled_from(["started", "ok", "error", "interrupted"] * 3 + ["done"])),
                            "source": draw(st.sampled_from(["trajectory", "adw"]))}
    for name, values in (("tool_input", st.just(tool_input(draw))), ("command", st.one_of(st.none(), COMMANDS)),
                         ("file_path", st.sampled_from([None, "a/b"])), ("started_at", TIMES), ("ended_at", TIMES),
                         ("duration_ms", st.sampled_from([None, 0.0, 850.0, 3, 2**63])),
                         ("input_bytes", st.sampled_from([0, 5, -3, 2**63 - 1] * 3 + [2**63, -(2**63) - 1, 2.0, True])),
                         ("output_bytes", st.sampled_from([None, 9] * 3 + [-(2**63)])),
                         ("output_tokens_est", st.sampled_from([None, 3] * 3 + [2**64 - 1]))):
        if draw(st.booleans()):
            data[name] = draw(values)
    return data


def usage_data(draw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": draw(st.sampled_from(["m1:r", "m2:r"])), "session_id": draw(SESSIONS),
                            "model": draw(st.sampled_from([None, "claude-sonnet-4-5-20250929", "claude-opus-4-1",
                                                           "x"])),
                            "timestamp": draw(st.one_of(st.none(), TIMES)),
                            "input_tokens": draw(st.sampled_from([0, 12, 2**63 - 1] * 3 + [2**63, -1, 12.0])),
                            "output_tokens": draw(st.sampled_from([0, 340] * 3 + [-5, True]))}
    for name in ("cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation_5m_tokens",
                 "cache_creation_1h_tokens"):
        if draw(st.booleans()):
            data[name] = draw(st.sampled_from([None, 0, 1200] * 3 + [-1, 2**63]))
    if draw(st.booleans()):
        data["cost_usd"] = draw(st.sampled_from([None, 0.0, 0.5, 1, 1e-7, -2.5] * 3 + [True, "1"]))
    if draw(st.booleans()):
        data["source"] = draw(st.sampled_from(["transcript", "trajectory"]))
    return data


DATA = {"hook.event": hook_data, "transcript.tool_use": tool_use_data, "transcript.tool_result": tool_result_data,
        "tool.call": tool_call_data, "usage.record": usage_data}
OTHER = {"control.flush": lambda draw: {"marker": "m1", "partitions": 1},
         "workflow.started": lambda draw: {"run_id": "r1", "workflow": "w", "started_at": "2026-03-01T10:00:00Z"}}


@st.composite
def envelope(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from([*DATA] * 4 + [*OTHER]))
    data = (DATA.get(kind) or OTHER[kind])(draw)
    obj: dict[str, Any] = {"specversion": "1",
                           "id": draw(st.sampled_from(["e1", "e2", "e3", "e4", "x" * 512, "x" * 513])),
                           "type": kind,
                           "source": draw(st.sampled_from(["hook"] * 3 + ["transcript"] * 3 + ["s" * 65])),
                           "subject": data.get("session_id") or "r1", "data": data}
    if draw(st.integers(0, 3)):
        obj["time"] = draw(st.one_of(st.none(), TIMES))
    return obj


def _json(obj: Any) -> bytes:
    """JSON the way another producer might write it (integers past 64 bits included)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


def mutate(draw: Any, obj: dict[str, Any]) -> bytes:
    """The JSON of ``obj`` or of a damaged form of it."""
    how = draw(st.sampled_from(["none"] * 10 + ["odd", "drop", "extra"] + ["odd_data", "drop_data"] * 3 + ["extra_data",
                                                "dupkey", "type", "bytes", "cut", "notutf8", "array", "escape"]))
    obj = dict(obj)
    data = dict(obj["data"])
    if how == "odd":
        obj[draw(st.sampled_from(sorted(obj)))] = draw(ODD)
    elif how == "drop":
        obj.pop(draw(st.sampled_from(sorted(obj))))
    elif how == "extra":
        obj["unexpected"] = 1
    elif how == "odd_data" and data:
        data[draw(st.sampled_from(sorted(data)))] = draw(ODD)
    elif how == "drop_data" and data:
        data.pop(draw(st.sampled_from(sorted(data))))
    elif how == "extra_data":
        data["unexpected"] = draw(ODD)
    elif how == "type":
        obj["type"] = draw(st.sampled_from(["nope", ["hook.event"], {"a": 1}, 1, None, "workflow.ended"]))
    obj["data"] = data
    raw = _json(obj)
    if how == "dupkey":
        name = draw(st.sampled_from(["id", "type", "time", "data", "subject"]))
        raw = raw[:-1] + b',"' + name.encode() + b'":' + _json(draw(ODD)) + b"}"
    elif how == "bytes" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:]
    elif how == "cut":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif how == "notutf8":
        raw = raw.replace(b"s1", b"s\xff", 1)
    elif how == "array":
        raw = b"[" + raw + b"]"
    elif how == "escape":
        raw = raw.replace(b"ls", b"l\\u0073", 1)
    return raw


@st.composite
def messages(draw: Any) -> list[tuple[str, int, int, bytes | None, bytes | None, Any]]:
    items = draw(st.lists(envelope(), min_size=1, max_size=30))
    out = []
    for offset, obj in enumerate(items):
        value: bytes | None = mutate(draw, obj)
        if draw(st.integers(0, 40)) == 0:
            value = draw(st.sampled_from([b"", None, b"x" * 10]))
        headers = [("outloop-reason", b"not_hook_json")] if draw(st.integers(0, 15)) == 0 else []
        out.append(("o.events", draw(st.integers(0, 1)), offset, draw(st.sampled_from([b"s1", None])), value, headers))
    return out


def _typed(value: Any) -> Any:
    """A parsed JSON value with its scalars tagged by type (1 and 1.0 differ, True and 1 too)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def _parsed(records: list[tuple[str, bytes | None, bytes, int]]) -> list[tuple[str, bytes | None, int, Any]]:
    return [(topic, key, partition, _typed(orjson.loads(value))) for topic, key, value, partition in records]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(messages(), min_size=1, max_size=3))
def test_fast_agent_emits_what_the_pydantic_agent_emitted(batches):
    new, old = Pairing(price=PRICE), sessionsref.Pairing(price=PRICE)
    new_stats = {"events": 0, "dead_letters": 0}
    old_stats = dict(new_stats)
    for batch in batches:
        got = session_records(new, batch, NAMES, NOW, new_stats)
        want = sessionsref.session_records(old, batch, NAMES, NOW, old_stats)
        assert _parsed(got) == _parsed(want)
        # times are written alike: the sink's own fast path reads only the "...Z" form
        assert [v for *_, v, _ in got if b"+00:00" in v] == [v for *_, v, _ in want if b"+00:00" in v]
    assert new_stats == old_stats


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelope(), st.data())
def test_fast_decode_holds_the_values_of_the_models(obj, data):
    raw = mutate(data.draw, obj)
    checked, fast = decode_checked(raw), decode(raw)
    if not isinstance(checked, Decoded):
        assert fast == checked  # the same rejection, reason and detail
        return
    assert isinstance(fast, Decoded)
    env, model = fast.envelope, fast.data
    for name in type(checked.envelope).model_fields:
        assert _typed(getattr(env, name)) == _typed(getattr(checked.envelope, name)), name
    for name in type(checked.data).model_fields:
        assert _typed(getattr(model, name)) == _typed(getattr(checked.data, name)), name
    if isinstance(env, FastEnvelope):  # vouched for by the fast path: its structs encode like the models
        assert orjson.loads(msgspec.json.encode(env)) == orjson.loads(checked.envelope.model_dump_json())


def test_the_published_forms_take_the_fast_path():
    for data, kind in ((hook_data, "hook.event"), (usage_data, "usage.record")):
        obj = {"specversion": "1", "id": "e1", "type": kind, "source": "hook", "subject": "s1",
               "time": "2026-03-01T10:00:00Z",
               "data": {"session_id": "s1", "hook_event_name": "PreToolUse", "tool_name": "Bash",
                        "tool_input": {"command": "ls"}, "tool_use_id": "t1"} if data is hook_data else
               {"id": "m1:r", "session_id": "s1", "model": None, "timestamp": "2026-03-01T10:00:00.250000Z",
                "input_tokens": 1, "output_tokens": 2}}
        assert decode_fast(orjson.loads(_json(obj))) is not None, kind
        assert isinstance(decode(_json(obj)), Decoded)


@pytest.mark.parametrize("damage", [
    {"time": "2026-03-01T12:00:00+02:00"}, {"time": "2026-03-01T10:00:00"}, {"specversion": "2"},
    {"unexpected": 1}, {"type": "workflow.started"}, {"type": "control.flush"}, {"data": []}, {"id": ""}])
def test_the_fast_path_leaves_everything_else_to_the_models(damage):
    obj = {"specversion": "1", "id": "e1", "type": "hook.event", "source": "hook", "subject": "s1",
           "time": "2026-03-01T10:00:00Z", "data": {"session_id": "s1", "hook_event_name": "Stop"}, **damage}
    assert decode_fast(obj) is None
