"""``transcript.message`` (one API response: ids, model, tool_use ids, sizes) from the importer through
the fold to the ``api_messages`` table, and orphan results (a tool_result whose tool_use is not in
the input) kept but out of the tool-call counts and patterns."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from outloop.agents.pairing import BatchOut, Pairing
from outloop.agents.sessions import SessionOutputs, session_records
from outloop.projections import open_sink
from outloop.schemas.events import ApiMessage, Envelope, EventType
from outloop.streams.codec import decode, decode_checked
from outloop.streams.importers import ImportStats
from outloop.streams.importers.transcripts import TranscriptState, iter_records
from tests.unit import sinkdata as d

NAMES = SessionOutputs("o.hook-events", "o.tool-calls", "o.usage", "o.dlq", api_messages="o.api-messages")


def _record(uuid: str, block: dict[str, Any], out: int, msg: str = "msg_1") -> dict[str, Any]:
    return {"type": "assistant", "uuid": uuid, "sessionId": "s1", "requestId": "req_1",
            "timestamp": "2025-06-01T12:00:00.000Z",
            "message": {"id": msg, "model": "claude-sonnet-4-5", "content": [block],
                        "usage": {"input_tokens": 3, "output_tokens": out, "cache_read_input_tokens": 100}}}


RESPONSE = [
    _record("u1", {"type": "thinking", "thinking": "hmm"}, 1),
    _record("u2", {"type": "text", "text": "Running the tests é"}, 2),
    _record("u3", {"type": "tool_use", "id": "toolu_a", "name": "Bash", "input": {"command": "pytest -q"}}, 5),
    _record("u4", {"type": "tool_use", "id": "toolu_b", "name": "Read", "input": {"file_path": "a.py"}}, 9),
]


def _run(records: list[dict[str, Any]], state: TranscriptState) -> list[Envelope]:
    return list(iter_records(records, Path("s1.jsonl"), ImportStats(), state, "s1"))


def test_one_message_per_response_growing_as_its_records_come() -> None:
    state = TranscriptState(messages=True)
    first = [e for e in _run(RESPONSE[:2], state) if e.type == EventType.MESSAGE]
    rest = _run(RESPONSE[2:], state)  # the next chunk of the same file, as the tailer reads it
    later = [e for e in rest if e.type == EventType.MESSAGE]
    assert [e.id for e in first + later] == ["msg:msg_1:req_1"] * 2
    assert first[0].data["tool_use_ids"] == [] and first[0].data["content_blocks"] == 2
    m = later[0].data
    assert m == {**m, "message_id": "msg_1", "request_id": "req_1", "session_id": "s1", "model": "claude-sonnet-4-5",
                 "tool_use_ids": ["toolu_a", "toolu_b"], "content_blocks": 4, "thinking_bytes": 3,
                 "text_bytes": len("Running the tests é".encode()),
                 "tool_use_bytes": len(b'{"command":"pytest -q"}') + len(b'{"file_path":"a.py"}')}
    usage = [e for e in rest if e.type == EventType.USAGE]
    assert [u.data["output_tokens"] for u in usage] == [9]  # live: emitted per chunk, again when larger
    assert _run(RESPONSE, state) == []  # the same records again (same uuids): nothing new
    assert not [e for e in _run(RESPONSE, TranscriptState()) if e.type == EventType.MESSAGE]  # not asked for


def test_fast_and_checked_decodes_agree() -> None:
    env = [e for e in _run(RESPONSE, TranscriptState(messages=True)) if e.type == EventType.MESSAGE][0]
    raw = env.model_dump_json().encode()
    fast, checked = decode(raw), decode_checked(raw)
    assert type(fast.data).__name__ == "FastApiMessage" and isinstance(checked.data, ApiMessage)  # type: ignore[union-attr]
    assert fast.data.tool_use_ids == checked.data.tool_use_ids == ["toolu_a", "toolu_b"]  # type: ignore[union-attr]


def _message(blocks: int, ids: list[str], **more: Any) -> dict[str, Any]:
    return {"id": "msg_1:req_1", "message_id": "msg_1", "request_id": "req_1", "session_id": "s1",
            "model": "claude-sonnet-4-5", "timestamp": d.T0.isoformat(), "tool_use_ids": ids,
            "content_blocks": blocks, "text_bytes": 10 * blocks, **more}


def _msg_bytes(data: dict[str, Any]) -> bytes:
    return Envelope(id=f"msg:{data['id']}", type=EventType.MESSAGE, source="transcript", subject="s1",
                    time=d.T0, data=data).model_dump_json().encode()


def test_the_fold_keeps_the_most_complete_version_and_forwards_it() -> None:
    versions = [_message(2, []), _message(4, ["toolu_a", "toolu_b"]), _message(3, ["toolu_a"])]
    messages = [("o.events", 0, i, b"s1", _msg_bytes(v), []) for i, v in enumerate(versions)]
    flush = Envelope(id="flush:m:0", type=EventType.FLUSH, source="replay", subject="flush-0",
                     data={"marker": "m", "partitions": 1}).model_dump_json().encode()
    messages.append(("o.events", 0, 3, b"flush-0", flush, []))
    out = session_records(Pairing(), messages, NAMES, d.T0, {"events": 0, "dead_letters": 0})
    emitted = [orjson.loads(v) for t, _, v, _ in out if t == "o.api-messages"]
    assert emitted[0]["content_blocks"] == 4 and emitted[0]["tool_use_ids"] == ["toolu_a", "toolu_b"]
    assert emitted[1] == {"control": "flush", "marker": "m", "partition": 0}  # behind everything before it
    batch = BatchOut()
    Pairing().apply(decode(_msg_bytes(versions[0])).envelope, decode(_msg_bytes(versions[0])).data, batch)  # type: ignore[union-attr]
    assert list(batch.messages) == ["msg_1:req_1"]


def _api_msg(data: dict[str, Any]) -> tuple[str, bytes, bytes]:
    return f"{d.PREFIX}.api-messages", b"s1", ApiMessage.model_validate(data).model_dump_json().encode()


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2, 1)])
def test_api_messages_converge_whatever_the_order_and_batches(tmp_path: Path, order: tuple[int, ...]) -> None:
    versions = [_message(2, []), _message(4, ["toolu_a", "toolu_b"]), _message(3, ["toolu_a"])]
    with open_sink(tmp_path / "m.duckdb", clock=d.clock) as sink:
        sink.write_batch(d.with_offsets([_api_msg(versions[i]) for i in order[:2]]))
        for n, i in enumerate(order[2:], start=2):
            sink.write_batch([(f"{d.PREFIX}.api-messages", 0, n, b"s1", _api_msg(versions[i])[2])])
        cols, rows = sink.query("SELECT id, tool_use_ids, content_blocks, text_bytes FROM api_messages")
    assert rows == [["msg_1:req_1", '["toolu_a","toolu_b"]', 4, 40]]


def test_orphan_results_are_kept_but_not_counted(tmp_path: Path) -> None:
    call = d.tool_view("toolu_1", tool_name="Bash", tool_input={"command": "pytest -q"}, command="pytest -q",
                       status="ok", started_at=d.T0, ended_at=d.T0 + timedelta(seconds=2), output_tokens_est=5)
    orphan = d.tool_view("toolu_0", tool_name=None, status="error", ended_at=d.T0, output_bytes=40,
                         output_tokens_est=10, source="transcript")
    with open_sink(tmp_path / "o.duckdb", clock=d.clock) as sink:
        sink.write_batch(d.with_offsets([d.tool_msg(call), d.tool_msg(orphan)]))
        assert sink.query("SELECT tool_calls, tool_errors, orphan_results FROM v_session_summary")[1] == [[1, 0, 1]]
        assert sink.query("SELECT tool_use_id, status FROM v_orphan_results")[1] == [["toolu_0", "error"]]
        assert sink.query("SELECT count(*) FROM tool_calls")[1] == [[2]]  # kept
        assert sink.query("SELECT tool_use_id FROM pattern_occurrences")[1] == [["toolu_1"]]
        assert sink.query("SELECT sum(calls) FROM v_tool_commands")[1] == [[1]]
        # its tool_use arrives after all (the earlier file of a resumed session): an ordinary call now
        use = d.tool_view("toolu_0", tool_name="Bash", tool_input={"command": "ls"}, command="ls",
                          started_at=d.T0 - timedelta(seconds=1), source="transcript")
        sink.write_batch([(f"{d.PREFIX}.tool-calls", 0, 2, b"s1", d.tool_msg(use)[2])])
        assert sink.query("SELECT tool_calls, tool_errors, orphan_results FROM v_session_summary")[1] == [[2, 1, 0]]
        assert sink.query("SELECT count(*) FROM v_orphan_results")[1] == [[0]]
