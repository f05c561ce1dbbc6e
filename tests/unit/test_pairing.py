from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from outloop.agents.pairing import BatchOut, Pairing, tool_call_model
from outloop.agents.toolcalls import merge_tool_calls, run_time
from outloop.schemas.events import Envelope, EventType, HookEvent, ToolResultRecord, ToolUseRecord, UsageRecord
from outloop.schemas.ids import call_key
from outloop.streams.redact import redact_canonical

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def hook(name, tool_input, tool_use_id=None, at=T0, response=None, session="s1", call_key=None):
    data = {"session_id": session, "hook_event_name": name, "tool_name": "Bash", "tool_input": tool_input}
    if tool_use_id:
        data["tool_use_id"] = tool_use_id
    if call_key:
        data["call_key"] = call_key
    if response is not None:
        data["tool_response"] = response
    env = Envelope(id=f"{name}-{tool_use_id}-{at}", type=EventType.HOOK_EVENT, source="hook", time=at,
                   subject=session, data=data)
    return env, HookEvent.model_validate(data)


def run(events, pairing=None):
    pairing = pairing or Pairing()
    out = BatchOut()
    for env, data in events:
        pairing.apply(env, data, out)
    return out


def test_pre_post_pair_by_tool_use_id_with_duration():
    out = run([
        hook("PreToolUse", {"command": "pytest -q"}, "t1", T0),
        hook("PostToolUse", {"command": "pytest -q"}, "t1", T0 + timedelta(seconds=2),
             {"stdout": "x" * 400, "stderr": ""}),
    ])
    call = tool_call_model(out.tool_calls["t1"])
    assert call.status == "ok"
    assert call.command == "pytest -q"
    assert call.duration_ms == 2000.0
    assert call.output_bytes == 400
    assert call.output_tokens_est == 100
    assert len(out.hook_events) == 2


def runs(events):
    """(run_ms, duration_source) of every call the events make, as the sink derives them."""
    return {k: run_time(v) for k, v in run(events).tool_calls.items()}


def test_a_hook_pair_measures_the_run_time_and_a_transcript_only_call_says_it_cannot():
    """The hook's Pre/Post times give the run time (source hook); a transcript call without a figure of
    its own keeps only wall-clock (its tool_result may come after a wait for the user's permission),
    labelled so and without a run time; a tool's own figure wins over both; and whatever the order, a
    call seen by hooks and transcript keeps the measured run time."""
    cmd = {"command": "cat /e/refind_linux.conf"}
    pre = hook("PreToolUse", cmd, "t1", T0)
    post = hook("PostToolUse", cmd, "t1", T0 + timedelta(milliseconds=45), {"stdout": "x", "stderr": ""})
    use = (Envelope(id="tu:t1", type=EventType.TOOL_USE, source="transcript", time=T0, subject="s1", data={}),
           ToolUseRecord(session_id="s1", tool_use_id="t1", tool_name="Bash", tool_input=cmd, call_key="k",
                         timestamp=T0 - timedelta(seconds=2)))
    late = T0 + timedelta(minutes=10, seconds=38)  # the result record after the user answered the dialog
    result = (Envelope(id="tr:t1", type=EventType.TOOL_RESULT, source="transcript", time=late, subject="s1", data={}),
              ToolResultRecord(session_id="s1", tool_use_id="t1", output_text="x", timestamp=late))
    assert runs([use, result])["t1"] == (None, "transcript-wallclock")
    assert tool_call_model(run([use, result]).tool_calls["t1"]).duration_ms == 640_000.0  # wall-clock, kept
    assert runs([pre, post])["t1"] == (45.0, "hook")
    assert runs([post])["t1"] == (None, None)  # a lone Post (after a restart): nothing to measure from
    for order in ([use, pre, post, result], [result, pre, use, post], [pre, post, result, use], [post, result, pre]):
        assert runs(order)["t1"] == (45.0, "hook"), order
    glob = (result[0], ToolResultRecord(session_id="s1", tool_use_id="t1", output_text="x", timestamp=late,
                                        duration_ms=12.0))
    assert runs([pre, use, glob, post])["t1"] == (12.0, "tool-reported")


def test_a_permission_dialog_between_the_hook_times_makes_them_wall_clock():
    """Claude Code runs PreToolUse before it asks for permission: when a PermissionRequest for the same
    input comes between Pre and Post, the hook span holds the user's answer too, so no run time; a
    dialog for another input, or after the Post, changes nothing."""
    cmd, other = {"command": "rm -rf build"}, {"command": "ls"}
    asked = hook("PermissionRequest", cmd, at=T0 + timedelta(seconds=1))
    asked_other = hook("PermissionRequest", other, at=T0 + timedelta(seconds=1))
    pre = hook("PreToolUse", cmd, "t1", T0)
    post = hook("PostToolUse", cmd, "t1", T0 + timedelta(seconds=30), {"stdout": "", "stderr": ""})
    assert runs([pre, asked, post])["t1"] == (None, "hook-wallclock")
    assert tool_call_model(run([pre, asked, post]).tool_calls["t1"]).duration_ms == 30_000.0
    for events in ([pre, asked_other, post], [pre, post, asked], [asked, pre, post]):
        assert runs(events)["t1"] == (30_000.0, "hook"), events


def test_the_sink_derives_the_run_time_as_the_agents_do() -> None:
    from outloop.projections.patterns import run_of

    pre, post = T0, T0 + timedelta(microseconds=123_456_789)
    us = int(pre.timestamp() * 1_000_000)
    for call in ({}, {"reported_ms": 7.5, "hook_pre_at": pre, "hook_post_at": post},
                 {"hook_pre_at": pre, "hook_post_at": post}, {"hook_pre_at": post, "hook_post_at": pre},
                 {"hook_pre_at": pre, "hook_post_at": post, "permission_asked": True}, {"hook_pre_at": pre},
                 {"source": "hook+transcript", "ended_at": post}, {"source": "hook", "ended_at": post}):
        row = (None,) * 15 + (call.get("source"), call.get("ended_at") is not None, call.get("reported_ms"),
                              *(None if call.get(k) is None else us + (call[k] - pre) // timedelta(microseconds=1)
                                for k in ("hook_pre_at", "hook_post_at")), call.get("permission_asked"))
        assert run_of(row) == run_time(call), call


def test_post_alone_after_a_restart_is_still_a_complete_call():
    out = run([hook("PostToolUse", {"command": "ls"}, "t9", T0, {"stdout": "a", "stderr": ""})])
    call = tool_call_model(out.tool_calls["t9"])
    assert (call.status, call.command, call.duration_ms) == ("ok", "ls", None)


def test_interrupted_and_failure_status():
    out = run([
        hook("PostToolUse", {"command": "sleep 9"}, "a", response={"stdout": "", "stderr": "", "interrupted": True}),
        hook("PostToolUseFailure", {"command": "false"}, "b", response={"stdout": "", "stderr": "boom"}),
    ])
    assert out.tool_calls["a"]["status"] == "interrupted"
    assert out.tool_calls["b"]["status"] == "error"


def test_without_ids_pairs_by_order_and_identical_input():
    # two identical commands, then a different one: Pre#k pairs with Post#k
    cmd = {"command": "pytest"}
    out = run([
        hook("PreToolUse", cmd, at=T0),
        hook("PreToolUse", cmd, at=T0 + timedelta(seconds=10)),
        hook("PostToolUse", cmd, at=T0 + timedelta(seconds=1), response={"stdout": "1", "stderr": ""}),
        hook("PostToolUse", cmd, at=T0 + timedelta(seconds=13), response={"stdout": "22", "stderr": ""}),
    ])
    assert len(out.tool_calls) == 2
    first = out.tool_calls["syn:" + call_key("s1", "Bash", cmd, 0, redact_canonical)]
    second = out.tool_calls["syn:" + call_key("s1", "Bash", cmd, 1, redact_canonical)]
    assert first["duration_ms"] == 1000.0 and first["output_bytes"] == 1
    assert second["duration_ms"] == 3000.0 and second["output_bytes"] == 2


def test_importer_call_key_is_used_when_present():
    out = run([hook("PreToolUse", {"command": "x"}, call_key="K")])
    assert list(out.tool_calls) == ["syn:K"]


def test_transcript_blocks_pair_and_result_without_use_is_kept():
    use = ToolUseRecord(session_id="s", tool_use_id="u1", tool_name="Read", tool_input={"file_path": "/a.py"},
                        call_key="k", timestamp=T0)
    res = ToolResultRecord(session_id="s", tool_use_id="u1", output_text="abcd", timestamp=T0 + timedelta(seconds=1))
    orphan = ToolResultRecord(session_id="s", tool_use_id="u2", is_error=True, output_text="no")
    p = Pairing()
    out = BatchOut()
    for t, d in ((EventType.TOOL_USE, use), (EventType.TOOL_RESULT, res), (EventType.TOOL_RESULT, orphan)):
        p.apply(Envelope(id="x", type=t, source="transcript", subject="s", data=d.model_dump(mode="json")), d, out)
    call = tool_call_model(out.tool_calls["u1"])
    assert (call.file_path, call.status, call.duration_ms, call.output_bytes) == ("/a.py", "ok", 1000.0, 4)
    lone = tool_call_model(out.tool_calls["u2"])
    assert lone.tool_name is None and lone.status == "error"


def test_usage_keeps_largest_totals_and_prices():
    def u(out_tokens):
        return UsageRecord(id="m1:r1", session_id="s", model="claude-x", timestamp=T0, input_tokens=3,
                           output_tokens=out_tokens, cache_read_input_tokens=100)

    p = Pairing(price=lambda rec: rec.output_tokens * 0.001)
    out = BatchOut()
    for rec in (u(1), u(40), u(7)):
        p.apply(Envelope(id="x", type=EventType.USAGE, source="t", subject="s", data=rec.model_dump(mode="json")),
                rec, out)
    assert out.usage["m1:r1"].output_tokens == 40
    assert out.usage["m1:r1"].cost_usd == 0.04


views = st.fixed_dictionaries(
    {"id": st.just("t1"), "session_id": st.just("s")},
    optional={
        "tool_name": st.sampled_from(["Bash", "Read"]),
        "status": st.sampled_from(["started", "ok", "error", "interrupted"]),
        "started_at": st.integers(0, 100).map(lambda s: T0 + timedelta(seconds=s)),
        "ended_at": st.integers(0, 100).map(lambda s: T0 + timedelta(seconds=s)),
        "output_bytes": st.integers(0, 10_000),
        "input_bytes": st.integers(0, 100),
        "source": st.sampled_from(["hook", "transcript"]),
        "tool_input": st.sampled_from([{"command": "a"}, {"command": "b"}, None]),
        "hook_pre_at": st.integers(0, 100).map(lambda s: T0 + timedelta(seconds=s)),
        "hook_post_at": st.integers(0, 100).map(lambda s: T0 + timedelta(seconds=s)),
        "reported_ms": st.sampled_from([0.0, 7.5, 120.0]),
        "permission_asked": st.sampled_from([None, True]),
    },
)


def norm(v):
    return {k: val for k, val in v.items() if val is not None}


@given(views, views, views)
def test_merge_is_commutative_associative_idempotent(a, b, c):
    a.setdefault("source", "hook")
    b.setdefault("source", "hook")
    c.setdefault("source", "hook")
    assert norm(merge_tool_calls(a, b)) == norm(merge_tool_calls(b, a))
    assert norm(merge_tool_calls(merge_tool_calls(a, b), c)) == norm(merge_tool_calls(a, merge_tool_calls(b, c)))
    ab = merge_tool_calls(a, b)
    assert norm(merge_tool_calls(ab, b)) == norm(ab)
