"""A hook payload the shim cut at 16 MiB: the real shim keeps its head and tail, the forwarder keeps
the fields that arrived whole and says the payload was truncated."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import orjson

from outloop.streams.forwarder import TRUNCATED_KEY, envelope_for
from outloop.streams.shim import MAX_BYTES, TAIL_BYTES, hook_command
from outloop.streams.spool import Spool
from outloop.streams.truncated import head_fields, recover, tail_fields


def big_post(session: str = "s-big", tool_use_id: str = "toolu_big", line: str = "line, of \"output\"\n"
             ) -> tuple[dict, bytes]:
    """A PostToolUse payload of ~20 MB, in the order Claude Code writes its fields (``tool_use_id``
    after ``tool_response``)."""
    payload = {"session_id": session, "transcript_path": f"/p/{session}.jsonl", "cwd": "/w",
               "permission_mode": "default", "hook_event_name": "PostToolUse", "tool_name": "Bash",
               "tool_input": {"command": "cat huge.log"},
               "tool_response": {"stdout": line * (20_000_000 // len(line)), "stderr": "", "interrupted": False},
               "tool_use_id": tool_use_id}
    return payload, orjson.dumps(payload)


def shim_spool(tmp_path: Path, body: bytes) -> Spool:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
    env["OUTLOOP_SPOOL"] = str(tmp_path / "spool")
    proc = subprocess.run(shlex.split(hook_command()), input=body, capture_output=True, env=env, timeout=30)
    assert proc.returncode == 0 and proc.stdout == b""
    return Spool(tmp_path / "spool")


def test_a_payload_cut_by_the_shim_keeps_its_envelope_fields_and_says_so(tmp_path: Path) -> None:
    payload, body = big_post()
    assert len(body) > MAX_BYTES + TAIL_BYTES
    spool = shim_spool(tmp_path, body)
    (rid,) = spool.ready()
    rec = spool.read(rid)
    assert rec.trunc == "size" and rec.tail == TAIL_BYTES
    assert rec.raw == body[:MAX_BYTES] + body[-TAIL_BYTES:]
    env = envelope_for(rec)
    assert not isinstance(env, str), env
    assert env.subject == "s-big" and env.id == rid
    kept = {k: v for k, v in payload.items() if k != "tool_response"}
    assert {k: v for k, v in env.data.items() if k != TRUNCATED_KEY} == kept
    assert env.data[TRUNCATED_KEY] == [{"reason": "size", "received_bytes": MAX_BYTES + TAIL_BYTES,
                                        "path": "tool_response"}]


def test_head_and_tail_joined_are_never_taken_for_the_payload() -> None:
    """The head ends inside stdout and the tail starts inside it: joined they parse as JSON with the
    middle of stdout missing. The record is read as cut."""
    payload, body = big_post(line="output line ")
    raw = body[:MAX_BYTES] + body[-TAIL_BYTES:]
    assert orjson.loads(raw)["tool_use_id"] == "toolu_big"  # the trap
    data = recover(raw, TAIL_BYTES, "size")
    assert data is not None and "tool_response" not in data and data["tool_use_id"] == "toolu_big"


def test_field_recovery_edges() -> None:
    assert head_fields('{"a": 1, "b": [1, 2], "c": "xy') == ({"a": 1, "b": [1, 2]}, "c")
    assert head_fields('{"a": 1, "b": 12') == ({"a": 1}, "b")  # a number may go on past the cut
    assert head_fields('{"a": 1, "b') == ({"a": 1}, None)
    assert head_fields("[1, 2") == ({}, None)
    assert tail_fields(b'x", "n": {"k": "v, \\"w\\": 2}"}, "id": "t1"}') == {"n": {"k": 'v, "w": 2}'}, "id": "t1"}
    assert tail_fields(b"no fields here") == {}
    # no session_id in what arrived whole: nothing to recover (the forwarder dead-letters it)
    assert recover(b'{"hook_event_name": "PostToolUse", "session_id": "s', 0, "timeout") is None
    assert recover(b'{"session_id": "s", "tool_input": {"command": "l', 0, "timeout") == {
        "session_id": "s", TRUNCATED_KEY: [{"reason": "timeout", "received_bytes": 48, "path": "tool_input"}]}
