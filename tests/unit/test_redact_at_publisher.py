"""Redaction at the publisher, without a broker: what a record looks like when it leaves the
publisher, that redaction is idempotent (so the agents' second pass changes nothing), and that
deterministic ids, call keys, pairing and sizes come out the same as without upstream redaction."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outloop.agents.pairing import BatchOut, Pairing, tool_call_model
from outloop.schemas.events import Envelope, EventType, ToolResultRecord, ToolUseRecord
from outloop.schemas.ids import input_digest
from outloop.schemas.sizes import SIZES_KEY
from outloop.streams.codec import Decoded, Rejected, dead_letter, decode
from outloop.streams.forwarder import envelope_for
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import iter_paths
from outloop.streams.publisher import redact_envelope, redact_envelope_bytes, redact_record
from outloop.streams.redact import redact_bytes, redact_canonical, redact_json, redact_text, scan
from outloop.streams.shim import hook_command
from outloop.streams.spool import Spool, SpoolRecord, uuid7
from tests import edge_secrets as es
from tests.unit.test_redact import FRAGMENTS, SECRETS

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
CARRY = (EventType.HOOK_EVENT, EventType.TOOL_USE, EventType.TOOL_CALL)


# -- idempotence: the agents' second pass over a redacted record changes nothing ------------------
TEXT = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), min_size=1, max_size=14).map("".join)
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), TEXT),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.sampled_from(["command", "password", "env", "token",
                                                                             "GITHUB_TOKEN", "x", "headers"]),
                                                            inner, max_size=4)),
                    max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_redact_text_is_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once
    assert redact_text(once, scan(once)) == once


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_redact_json_is_idempotent(value: Any) -> None:
    once = redact_json(value)
    assert redact_json(once) == once
    raw = orjson.dumps(once)
    assert redact_json(once, scan(raw)) == once


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS).map(str.encode), st.binary(max_size=8)), min_size=1,
                max_size=12).map(b"".join))
def test_redact_bytes_is_idempotent(raw: bytes) -> None:
    once = redact_bytes(raw)
    assert redact_bytes(once) == once
    assert redact_record(redact_record(raw, dead_letter=True), dead_letter=True) == once


@settings(max_examples=200, deadline=None)
@given(JSON, st.sampled_from([EventType.HOOK_EVENT, EventType.TOOL_USE, EventType.TOOL_CALL,
                              EventType.WORKFLOW_STARTED]))
def test_published_envelope_is_a_fixed_point(value: Any, kind: EventType) -> None:
    """Publishing what was published changes nothing, byte for byte (replays, re-sends)."""
    env = Envelope(id="e1", type=kind, source="test", subject="s1", time=T0, data={"x": value, "tool_name": "Bash"})
    once = redact_envelope_bytes(env)
    assert redact_envelope_bytes(Envelope.model_validate_json(once)) == once
    assert redact_record(once) == once


# -- what leaves the publisher -------------------------------------------------------------------
@pytest.mark.parametrize("text", list(SECRETS))
def test_every_realistic_secret_is_gone_from_every_event_type(text: str) -> None:
    secret = SECRETS[text][0]
    use = ToolUseRecord(session_id="s1", tool_use_id="toolu_1", tool_name="Bash", call_key="k",
                        tool_input={"command": text})
    result = ToolResultRecord(session_id="s1", tool_use_id="toolu_1", output_text=text)
    envs = [
        Envelope(id="h", type=EventType.HOOK_EVENT, source="hook", subject="s1", time=T0,
                 data={"session_id": "s1", "hook_event_name": "PostToolUse", "tool_name": "Bash",
                       "tool_input": {"command": text}, "tool_response": {"stdout": text, "stderr": ""}}),
        Envelope(id="u", type=EventType.TOOL_USE, source="transcript", subject="s1", data=use.model_dump(mode="json")),
        Envelope(id="r", type=EventType.TOOL_RESULT, source="transcript", subject="s1",
                 data=result.model_dump(mode="json")),
        Envelope(id="w", type=EventType.WORKFLOW_STARTED, source="adw", subject="run", time=T0,
                 data={"run_id": "run", "workflow": "w", "started_at": T0.isoformat(), "attributes": {"note": text}}),
    ]
    for env in envs:
        value = redact_envelope_bytes(env)
        assert secret.encode() not in value, (env.type, value)
        assert isinstance(decode(value), Decoded)  # still a valid event
        assert redact_record(env.model_dump_json().encode()) == value  # the same, sent as raw bytes
    raw = f"not json at all: {text}".encode()
    assert secret.encode() not in redact_record(raw, dead_letter=True)


def test_sizes_of_the_original_content_travel_with_a_redacted_record() -> None:
    hook = {"session_id": "s1", "hook_event_name": "PostToolUse", "tool_name": "Bash",
            "tool_input": {"command": es.CMD_DEPLOY}, "tool_response": {"stdout": es.ENV_OUT, "stderr": ""}}
    env = Envelope(id="h", type=EventType.HOOK_EVENT, source="hook", subject="s1", time=T0, data=hook)
    clean = redact_envelope(env)
    assert clean.data[SIZES_KEY] == {"input_bytes": len(orjson.dumps(hook["tool_input"])),
                                     "output_bytes": len(es.ENV_OUT.encode())}
    assert redact_envelope(clean) is clean  # nothing left to redact, sizes kept
    plain = Envelope(id="p", type=EventType.HOOK_EVENT, source="hook", subject="s1", time=T0,
                     data={**hook, "tool_input": {"command": "ls"}, "tool_response": {"stdout": "a\n"}})
    assert redact_envelope(plain) is plain and redact_envelope_bytes(plain) == plain.model_dump_json().encode()
    use = ToolUseRecord(session_id="s1", tool_use_id="t", tool_name="Bash", call_key="k",
                        tool_input={"command": es.CMD_DB})
    out = redact_envelope(Envelope(id="u", type=EventType.TOOL_USE, source="transcript", subject="s1",
                                   data=use.model_dump(mode="json")))
    assert out.data["input_bytes"] == len(orjson.dumps(use.tool_input))
    result = ToolResultRecord(session_id="s1", tool_use_id="t", output_text=es.ENV_OUT)
    out = redact_envelope(Envelope(id="r", type=EventType.TOOL_RESULT, source="transcript", subject="s1",
                                   data=result.model_dump(mode="json")))
    assert out.data["output_bytes"] == len(es.ENV_OUT.encode()) and not es.leaks(out.model_dump_json())


def test_dead_letter_bytes_are_the_redacted_bytes_and_keep_their_id() -> None:
    """A record sent raw with an ``outloop-reason`` is redacted as text: bytes that are not UTF-8
    stay, and the dead letter the agent makes of it is the one it made of the unredacted bytes."""
    raw = b"\xff\xfe{broken " + f"AWS_SECRET_ACCESS_KEY={es.S['aws_secret']} {es.S['github']}".encode() + b" \xc3\x28"
    sent = redact_record(raw, dead_letter=True)
    assert not es.leaks(sent) and sent.startswith(b"\xff\xfe{broken ") and sent.endswith(b" \xc3\x28")
    at = datetime(2026, 3, 2, tzinfo=UTC)
    before = dead_letter(raw, Rejected("not_json", "x"), "t", 0, 1, b"unknown", now=at)
    after = dead_letter(sent, Rejected("not_json", "x"), "t", 0, 1, b"unknown", now=at)
    assert after == before and after.raw == sent
    # an envelope-shaped record the forwarder sends raw (a reason) is not reformatted either
    shaped = orjson.dumps({"id": "x", "type": "hook.event", "source": "s", "subject": "s",
                           "data": {"token": es.S["token"]}})
    assert redact_record(shaped, dead_letter=True) == redact_bytes(shaped)


# -- pairing and ids with redaction upstream -----------------------------------------------------
def _live_envelopes() -> list[Envelope]:
    """The hook payloads as the forwarder makes envelopes of spool records."""
    out = []
    for i, payload in enumerate(es.hook_payloads()):
        ns = int((T0 + timedelta(seconds=i)).timestamp() * 1e9)
        rec = SpoolRecord(uuid7(ns), (T0 + timedelta(seconds=i)).isoformat(), orjson.dumps(payload))
        env = envelope_for(rec)
        assert isinstance(env, Envelope)
        out.append(env)
    return out


def _imported(root: Path) -> list[Envelope]:
    stats = ImportStats()
    envs = list(iter_paths([es.write_sources(root)], stats))
    assert stats.damaged_total == 0 and not stats.skipped_files
    return envs


def _fold(envs: list[Envelope], upstream: bool) -> tuple[dict[str, Any], list[Any], list[bytes]]:
    """Publish (redacting or not), decode and fold as the sessions agent does."""
    fold, out, wire = Pairing(), BatchOut(), []
    for env in envs:
        value = redact_envelope_bytes(env) if upstream else env.model_dump_json().encode()
        wire.append(value)
        result = decode(value)
        assert isinstance(result, Decoded), result
        secrets = scan(value) if result.envelope.type in CARRY else frozenset()
        fold.apply(result.envelope, result.data, out, secrets=secrets)
    calls = {k: tool_call_model(v).model_dump() for k, v in out.tool_calls.items()}
    return calls, [(e.id, e.data) for e in out.hook_events], wire


def test_pairing_is_unchanged_by_redaction_upstream(tmp_path: Path) -> None:
    envs = _live_envelopes() + _imported(tmp_path)
    before, hooks_before, raw_wire = _fold(envs, upstream=False)
    after, hooks_after, wire = _fold(envs, upstream=True)
    assert es.leaks(b"".join(raw_wire))  # the reference did carry the secrets
    assert not es.leaks(b"".join(wire)), es.leaks(b"".join(wire))
    assert after == before  # same ids, call keys, statuses, sizes, redacted inputs and commands
    assert hooks_after == hooks_before  # stored hook payloads: same, without the publisher's sizes
    assert not es.leaks(orjson.dumps([after, hooks_after], default=str))
    # old hooks (no tool_use_id) paired Pre with Post and carry the transcript's call keys
    for session in (es.SESSION, es.CAPTURE_SESSION):
        syn = {c["call_key"]: c for c in after.values() if c["id"].startswith("syn:") and c["session_id"] == session}
        transcript = {c["call_key"]: c for c in after.values() if c["source"] == "transcript"
                      and c["session_id"] == session and c["call_key"]}
        assert len(syn) == 3, syn
        assert set(syn) <= set(transcript)  # the sink merges each into its transcript row
        for key, call in syn.items():
            assert call["status"] == "ok" and call["command"] == transcript[key]["command"]
            assert call["input_bytes"] == transcript[key]["input_bytes"]
            assert call["input_bytes"] == len(orjson.dumps({"command": es.CMD_DB if key.endswith((":0", ":2"))
                                                            else es.CMD_DB2}))
            assert "[REDACTED:" in call["command"]
    # the two calls that differ only in a password are told apart by their ordinal
    keys = sorted(k for k in after if k.startswith(f"syn:{es.SESSION}"))
    assert [k.rsplit(":", 1)[1] for k in keys] == ["0", "1", "2"]


def test_call_keys_and_hook_log_ids_digest_the_redacted_content(tmp_path: Path) -> None:
    raw_input = {"command": es.CMD_DB}
    clean = redact_json(raw_input)
    assert clean != raw_input
    assert input_digest("Bash", clean, redact_canonical) == input_digest("Bash", raw_input, redact_canonical)
    assert input_digest("Bash", {"command": "ls"}, redact_canonical) != input_digest("Bash", clean, redact_canonical)
    ids = [e.id for e in _imported(tmp_path) if e.id.startswith("hl:")]
    assert len(ids) == len(set(ids)) == 12
    # no digest of a secret is published: the id does not change when only the secret does
    a, b = (dict(es.hook_payloads()[6], tool_input={"command": c}) for c in (es.CMD_DB, es.CMD_DB2))
    from outloop.streams.importers.hooklogs import payload_digest
    assert payload_digest(a) == payload_digest(b) == payload_digest(redact_json(a))


# -- the spool (the user's own disk) stays owner-only --------------------------------------------
def test_spool_files_and_folder_are_owner_only(tmp_path: Path) -> None:
    spool = tmp_path / "home" / "spool"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
    env["OUTLOOP_SPOOL"] = str(spool)
    body = orjson.dumps(es.hook_payloads()[0])
    proc = subprocess.run(shlex.split(hook_command()), input=body, env=env, capture_output=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    (rid,) = Spool(spool).ready()
    assert stat.S_IMODE(os.stat(spool).st_mode) & 0o077 == 0
    assert stat.S_IMODE(os.stat(Spool(spool).path(rid)).st_mode) == 0o600
    assert Spool(spool).read(rid).raw == body  # raw: the spool is redacted only on its way to Kafka
