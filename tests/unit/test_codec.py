import orjson
import pytest

from outloop.schemas.events import EventType, HookEvent
from outloop.schemas.fast import FastHookEvent
from outloop.streams.codec import DEAD_LETTER_RAW_MAX, Decoded, Rejected, dead_letter, decode, decode_checked, encode


def env(**over):
    base = {"id": "e1", "type": "hook.event", "source": "hook", "subject": "s1",
            "time": "2026-01-01T00:00:00Z",
            "data": {"session_id": "s1", "hook_event_name": "PreToolUse", "tool_name": "Bash",
                     "tool_input": {"command": "ls"}, "tool_use_id": "t1"}}
    base.update(over)
    return orjson.dumps(base)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"not json", "not_json"),
        (b"\xff\xfe\x00", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"text"', "not_object"),
        (env(type="telemetry.unknown"), "unknown_type"),
        (env(id=""), "envelope"),
        (env(time="yesterday"), "envelope"),
        (env(time="2026-01-01T00:00:00"), "envelope"),  # naive time is refused
        (env(extra_field=1), "envelope"),
        (env(data={"hook_event_name": "PreToolUse"}), "data"),  # no session_id
        (env(data={"session_id": "s", "hook_event_name": "PreToolUse", "tool_input": "x"}), "data"),
        (env(type="usage.record", data={"id": "m:r", "session_id": "s", "model": "m", "timestamp": None,
                                        "input_tokens": -1, "output_tokens": 0}), "data"),
    ],
)
def test_rejections_carry_a_reason(raw, reason):
    result = decode(raw)
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert result.detail


@pytest.mark.parametrize(("path", "model"), [(decode, FastHookEvent), (decode_checked, HookEvent)])
def test_unknown_hook_event_name_and_fields_are_accepted_and_kept(path, model):
    raw = env(data={"session_id": "s1", "hook_event_name": "SomethingNew", "brand_new": {"a": 1}})
    result = path(raw)
    assert isinstance(result, Decoded)
    assert result.envelope.type is EventType.HOOK_EVENT
    assert isinstance(result.data, model)
    assert result.data.hook_event_name == "SomethingNew"
    assert result.envelope.data["brand_new"] == {"a": 1}


def test_dead_letter_keeps_bytes_and_is_content_addressed():
    raw = b"\xff garbage"
    r = decode(raw)
    assert isinstance(r, Rejected)
    a = dead_letter(raw, r, "t", 0, 5, b"k")
    b = dead_letter(raw, r, "t", 3, 99, b"k")
    assert a.id == b.id  # same record redelivered elsewhere -> same row
    assert dead_letter(raw + b"!", r, "t", 0, 5, b"k").id != a.id
    back = type(a).model_validate_json(a.model_dump_json())
    assert back.raw == raw


def test_a_dead_letter_of_a_record_near_1_mb_stays_a_record_a_default_kafka_takes():
    """Its bytes travel as base64 (a third larger): kept whole, a malformed input of 1 MB made a
    record of 1.33 MB, which Apache Kafka's default message.max.bytes (1,048,588) refuses."""
    raw = b'{"session_id": "s1", "tool_input": "' + b"y" * 1_000_000  # cut short: not JSON
    other = raw + b"z"  # the same first bytes, one more at the end
    r = decode(raw)
    assert isinstance(r, Rejected) and r.reason == "not_json"
    dl = dead_letter(raw, r, "t", 0, 5, b"k")
    assert len(encode(dl)) < 1_000_000
    assert dl.raw == raw[:DEAD_LETTER_RAW_MAX]
    assert dl.detail.endswith(f"[raw: the first {DEAD_LETTER_RAW_MAX:,} of {len(raw):,} bytes]")
    assert dl.id == dead_letter(raw, r, "t", 3, 9, b"k").id  # still the digest of every byte
    assert dead_letter(other, decode(other), "t", 0, 5, b"k").id != dl.id  # type: ignore[arg-type]
    small = dead_letter(raw[:DEAD_LETTER_RAW_MAX], r, "t", 0, 5, b"k")
    assert small.raw == raw[:DEAD_LETTER_RAW_MAX] and "[raw:" not in small.detail
