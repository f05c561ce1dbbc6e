"""Bad input on a real broker: a transcript record over the record limit becomes a dead letter and
the replay goes on."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pytest

from outloop.replay import replay
from outloop.streams.codec import DEAD_LETTER_RAW_MAX
from outloop.streams.publisher import DEFAULT_MAX_REQUEST_BYTES
from tests.integration.test_pipeline import settings_for

pytestmark = pytest.mark.integration

T = "2026-01-02T03:04:05.000Z"


def _use(uuid: str, tid: str, command: str) -> dict:
    block = {"type": "tool_use", "id": tid, "name": "Bash", "input": {"command": command}}
    return {"type": "assistant", "uuid": uuid, "sessionId": "big-s", "timestamp": T, "requestId": f"req_{uuid}",
            "message": {"id": f"msg_{uuid}", "model": "claude-sonnet-4-5", "content": [block],
                        "usage": {"input_tokens": 3, "output_tokens": 5}}}


def _result(uuid: str, tid: str, text: str) -> dict:
    return {"type": "user", "uuid": uuid, "sessionId": "big-s", "timestamp": T,
            "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tid, "content": text}]}}


def test_a_record_over_the_record_limit_becomes_a_too_large_dead_letter(tmp_path: Path, broker: str) -> None:
    huge = "x" * (DEFAULT_MAX_REQUEST_BYTES + 2**20)  # a 17 MiB tool result
    records = [_use("a1", "t_big", "cat huge.log"), _result("u1", "t_big", huge),
               _use("a2", "t_ok", "ls"), _result("u2", "t_ok", "README.md")]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "big-s.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    s = settings_for(tmp_path, broker)
    summary = replay([folder], s)
    assert summary.dead_letters_by_reason == {"too_large": 1}
    assert summary.tool_calls == 2 and summary.usage_records == 2
    con = duckdb.connect(str(s.db), read_only=True)
    try:
        key, detail, size = con.execute("SELECT key, detail, octet_length(raw) FROM dead_letters").fetchone()
        calls = dict(con.execute("SELECT tool_use_id, status FROM tool_calls").fetchall())
    finally:
        con.close()
    assert key == "big-s" and size == DEAD_LETTER_RAW_MAX
    assert detail.startswith("transcript.tool_result tr:t_big of big-s: ")
    assert f"over the record limit of {DEFAULT_MAX_REQUEST_BYTES:,} bytes" in detail
    assert f"raw truncated to its first {DEAD_LETTER_RAW_MAX:,} bytes" in detail
    assert calls == {"t_big": "started", "t_ok": "ok"}


def test_a_hook_payload_cut_by_the_shim_completes_its_tool_call(tmp_path: Path, broker: str) -> None:
    """A 20 MB PostToolUse payload, cut at 16 MiB by the real shim, still completes the call its
    PreToolUse started, and the stored hook event says it was truncated."""
    from outloop.replay import publish_markers, wait_for_marker
    from outloop.runtime import Stack
    from outloop.schemas.topics import TopicCatalogue
    from outloop.streams.forwarder import TRUNCATED_KEY, Forwarder
    from tests.unit.test_truncated_hook import big_post, shim_spool

    payload, body = big_post()
    pre = {k: v for k, v in payload.items() if k != "tool_response"} | {"hook_event_name": "PreToolUse"}
    shim_spool(tmp_path, orjson.dumps(pre))
    spool = shim_spool(tmp_path, body)
    s = settings_for(tmp_path, broker)
    cat = TopicCatalogue(prefix=s.topic_prefix)
    with Stack(s) as stack:
        assert stack.settings.broker
        fwd = Forwarder(spool=spool, bootstrap=stack.settings.broker, catalogue=cat, partitions=s.partitions)
        try:
            assert fwd.run_once() == 2 and fwd.raw_sent == 0
        finally:
            fwd.close()
        from outloop.streams.publisher import Publisher

        with Publisher(stack.settings.broker, catalogue=cat, partitions=s.partitions) as pub:
            expected = publish_markers(pub, cat, "cut", s.partitions)
        wait_for_marker(stack.client, "cut", expected, timeout=120)
        _, calls = stack.client.query("SELECT tool_use_id, status, ended_at IS NOT NULL, command FROM tool_calls")
        _, hooks = stack.client.query("SELECT hook_event_name, payload FROM hook_events ORDER BY hook_event_name")
        _, dead = stack.client.query("SELECT count(*) FROM dead_letters")
    assert calls == [["toolu_big", "ok", True, "cat huge.log"]]
    assert int(dead[0][0]) == 0
    post = orjson.loads(hooks[0][1])
    assert hooks[0][0] == "PostToolUse" and post["tool_use_id"] == "toolu_big" and "tool_response" not in post
    assert post[TRUNCATED_KEY][0]["reason"] == "size" and post[TRUNCATED_KEY][0]["path"] == "tool_response"
