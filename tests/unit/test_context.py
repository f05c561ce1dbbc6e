"""The pure context-efficiency measures (agents.context): table tests of each rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from outloop.agents.context import (
    OVERSIZED_TOKENS,
    UNNAMED_CHAIN,
    Api,
    Call,
    cache_breaks,
    carries,
    distinctive,
    files_read_and_used,
    fixed_overhead,
    measure,
    words,
)
from outloop.agents.pricing import PriceTable

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
SONNET = "claude-sonnet-4-5-20250929"


def call(n: int, tool: str, tokens: int = 100, status: str = "ok", at: datetime | None = None,
         text: str | None = None, **inp: Any) -> Call:
    when = at if at is not None else T0 + timedelta(seconds=10 * n)
    return Call(f"c{n}", tool, inp, status, when, when, tokens, f"sig:{tool}", text)


def api(n: int, seconds: float, write: int = 500, read: int = 20_000, model: str = SONNET, w1: int | None = None,
        text: str = "") -> Api:
    return Api(f"a{n}", model, T0 + timedelta(seconds=seconds), 10, 100, read, write, None, w1, text)


@pytest.mark.parametrize(("calls", "read", "used"), [
    ([call(1, "Read", file_path="/a.py"), call(2, "Edit", file_path="/a.py")], 1, 1),
    ([call(1, "Edit", file_path="/a.py"), call(2, "Read", file_path="/a.py")], 1, 0),  # edited before, not after
    ([call(1, "Read", file_path="/a.py"), call(2, "Read", file_path="/b.py"), call(3, "Write", file_path="/b.py"),
      call(4, "MultiEdit", file_path="/c.py")], 2, 1),
    ([call(1, "Read", file_path="/a.py", at=T0), call(2, "NotebookEdit", at=T0, file_path="/a.py")], 1, 0),  # same time
    ([Call("x", "Read", {"file_path": "/a.py"}, "ok", None, None, 5), call(2, "Edit", file_path="/a.py")], 1, 1),
    ([call(1, "Read", file_path="/a.py"), call(2, "Bash", command="sed -i s/x/y/ /a.py")], 1, 0),
])
def test_files_read_and_used(calls: list[Call], read: int, used: int) -> None:
    r, u = files_read_and_used(calls)
    assert (len(r), len(u)) == (read, used)


def test_carry_counts_calls_until_the_next_compaction() -> None:
    calls = [call(0, "Bash", command="ls"), call(3, "Read", file_path="/a"), call(9, "Bash", status="started")]
    apis = [api(i, 10 * i + 5) for i in range(8)]  # calls at 5, 15, ... 75 s
    assert carries(calls, apis, []) == [8, 5, 0]
    assert carries(calls, apis, [T0 + timedelta(seconds=40)]) == [4, 1, 0]  # 5..35 s, then 35 s only


@pytest.mark.parametrize(("later", "used"), [
    ([call(5, "Edit", file_path="/src/app.py")], True),
    ([call(5, "Bash", command="python /src/app.py")], True),
    ([call(5, "Read", file_path="/src/app.py")], False),  # a re-read is not a use
    ([call(5, "Bash", command="ls")], False),
    ([], False),
])
def test_a_file_read_is_used_when_edited_or_named_later(later: list[Call], used: bool) -> None:
    result = measure("s", [call(1, "Read", file_path="/src/app.py"), *later], [])
    assert next(o for o in result.outputs if o.id == "c1").used is used


def test_other_outputs_by_their_distinctive_strings_else_counted_used() -> None:
    grep = call(1, "Grep", text="src/handlers/user_service.py:12: def load_user_profile", pattern="load")
    blind = call(2, "Bash", command="ls")  # no text at hand: counted as used (waste is a lower bound)
    err = call(3, "Bash", status="error", text="boom", command="make")
    msg = [api(0, 100, text="load_user_profile is the culprit")]
    r = measure("s", [grep, blind, err], msg)
    assert [o.used for o in r.outputs] == [True, True, True]
    r = measure("s", [grep, blind, err], [])
    assert [o.used for o in r.outputs] == [False, True, True]


def test_unchanged_rereads_are_waste_and_a_change_or_compaction_resets() -> None:
    calls = [call(1, "Read", file_path="/a"), call(2, "Read", file_path="/a"),  # same: re-read
             call(3, "Read", file_path="/a", offset=10, limit=5),  # narrower: re-read
             call(4, "Edit", file_path="/a"), call(5, "Read", file_path="/a"),  # after an edit: not
             call(7, "Read", file_path="/a"), call(8, "Read", file_path="/b", offset=1, limit=5),
             call(9, "Read", file_path="/b")]  # wider than before: not
    r = measure("s", calls, [], [T0 + timedelta(seconds=65)])  # compaction between c5 and c7
    assert {o.id for o in r.outputs if o.reread} == {"c2", "c3"}
    assert r.row["reread_tokens"] == 200 and r.row["waste_tokens"] >= 200
    reads = {f["file_path"]: f for f in r.file_reads}
    assert (reads["/a"]["times_read"], reads["/a"]["rereads"], reads["/a"]["edited"]) == (5, 2, True)


def test_cache_breaks_by_cause_with_their_cost() -> None:
    prices = PriceTable.default()
    apis = [api(0, 0, write=30_000, read=0),  # the first call: a cold start, not a break
            api(1, 60), api(2, 60 + 301, write=40_000, read=2_000),  # idle past 5 min
            api(3, 400, write=40_000, read=0, model="claude-haiku-4-5-20251001"),  # a model first used here
            api(4, 410, write=3_000, read=0),  # small: not a break
            api(5, 500, write=50_000, read=0, w1=50_000), api(6, 500 + 1800, write=50_000, read=0),  # 1-h cache
            api(7, 2400, write=45_000, read=1_000)]
    got = [(b.usage_id, b.cause) for b in cache_breaks("s", apis, [T0 + timedelta(seconds=2350)], prices)]
    assert got == [("a2", "idle"), ("a3", "model_switch"), ("a7", "compaction")]
    idle = cache_breaks("s", apis, [], prices)[0]
    assert idle.tokens == 40_000 and idle.cost_usd == pytest.approx(40_000 * 3.75 / 1e6)
    assert idle.extra_cost_usd == pytest.approx(40_000 * (3.75 - 0.3) / 1e6)


def test_session_row() -> None:
    calls = [call(1, "Read", tokens=OVERSIZED_TOKENS, file_path="/a"), call(2, "Read", file_path="/b"),
             call(3, "Edit", tokens=10, file_path="/a"), call(4, "mcp__db__query", tokens=0)]
    apis = [api(i, 5 + 10 * i, write=20_000 if i == 0 else 500, read=0 if i == 0 else 20_000) for i in range(6)]
    row = measure("s", calls, apis).row
    assert (row["files_read"], row["files_used"], row["outputs"]) == (2, 1, 4)
    assert row["loaded_tokens"] == OVERSIZED_TOKENS + 110 and row["used_tokens"] == OVERSIZED_TOKENS + 10
    assert row["efficiency"] == pytest.approx(row["used_tokens"] / row["loaded_tokens"])
    assert row["oversized_output_tokens"] == row["oversized_used_tokens"] == OVERSIZED_TOKENS
    assert row["carry_tokens"] == OVERSIZED_TOKENS * 5 + 100 * 4 + 10 * 3
    assert row["fixed_prefix_tokens"] == 20_010 and row["fixed_overhead_tokens"] == 6 * 20_010
    assert row["mcp_tools_called"] == "mcp__db__query" and row["cache_breaks"] == 0
    assert row["window_start"] == T0 + timedelta(seconds=5) and row["window_end"] == T0 + timedelta(seconds=55)


@pytest.mark.parametrize(("text", "expected"), [
    ("see src/app.py:12 for load_user", {"src/app.py:12", "src/app.py", "app.py", "load_user"}),
    ('grep -n "parseConfig" ./cmd/main.go', {"grep", "parseConfig", "./cmd/main.go", "cmd/main.go", "main.go"}),
    ("tests/test_x.py::test_y failed", {"tests/test_x.py::test_y", "test_x.py::test_y", "failed"}),
])
def test_words(text: str, expected: set[str]) -> None:
    assert words(text) == expected


@pytest.mark.parametrize(("word", "yes"), [
    ("src/app.py", True), ("app.py", True), ("tests/x.py::test_y", True), ("E501", True), ("TS2304", True),
    ("load_user", True), ("parseConfig", True), ("failed", False), ("src/", False), ("1.2.3", True),
    ("_private", False), ("HTTP", False),
])
def test_distinctive(word: str, yes: bool) -> None:
    assert distinctive(word) is yes


def _in(c: Call, chain: str | None) -> Call:
    return replace(c, chain=chain)


def _api_in(a: Api, chain: str | None) -> Api:
    return replace(a, chain=chain)


# main calls at 5, 15, 25, ..., 75 s; sub-agent "sa1" calls at 32, 34, 36, 38 s (it ran between 30 and 40 s)
MAIN = [api(i, 10 * i + 5) for i in range(8)]
SUB = [_api_in(api(100 + i, 32 + 2 * i), "sa1") for i in range(4)]


@pytest.mark.parametrize(("calls", "apis", "expected"), [
    # no sub-agent: every later call of the session re-reads the output
    ([call(1, "Read", file_path="/a")], MAIN, [7]),
    # the parent's Read at 10 s: carried by the parent's 7 later calls, not by the sub-agent's 4
    ([call(1, "Read", file_path="/a")], MAIN + SUB, [7]),
    # the sub-agent's own Read at 33 s: carried by its own calls at 34, 36, 38 s only, not the parent's
    ([_in(call(1, "Read", at=T0 + timedelta(seconds=33), file_path="/a"), "sa1")], MAIN + SUB, [3]),
    # the parent's Task call (ended at 40 s: its final result) is carried by the parent's calls after it
    ([call(4, "Task", prompt="find the bug", subagent_type="Explore")], MAIN + SUB, [4]),
    # a sub-agent output with no call of its chain after it is carried by nothing
    ([_in(call(1, "Bash", at=T0 + timedelta(seconds=39), command="ls"), "sa1")], MAIN + SUB, [0]),
    # a compaction of the session still cuts both chains
    ([_in(call(1, "Read", at=T0 + timedelta(seconds=31), file_path="/a"), "sa1")], MAIN + SUB, [2]),
])
def test_sub_agent_outputs_are_carried_by_their_own_chain_only(calls: list[Call], apis: list[Api],
                                                                expected: list[int]) -> None:
    cut = [T0 + timedelta(seconds=35)] if expected == [2] else []
    assert carries(calls, apis, cut) == expected


def test_sub_agent_carry_in_the_session_figures() -> None:
    """The session's carry_tokens: the sub-agent's 1,000-token Read weighs 3 of its own calls, not the 5
    parent calls plus 3 sub-agent calls the session-wide count gave (8,000)."""
    sub_read = _in(call(1, "Read", tokens=1_000, at=T0 + timedelta(seconds=33), file_path="/a"), "sa1")
    r = measure("s", [sub_read], MAIN + SUB)
    assert r.row["carry_tokens"] == 3_000
    flat = measure("s", [replace(sub_read, chain=None)], MAIN + [replace(a, chain=None) for a in SUB])
    assert flat.row["carry_tokens"] == 8_000


def test_a_sub_agent_read_is_no_re_read_of_the_parent_and_starts_no_cache_break() -> None:
    reads = [call(1, "Read", file_path="/a"), _in(call(2, "Read", file_path="/a"), "sa1"),
             _in(call(3, "Read", file_path="/a"), "sa1")]
    r = measure("s", reads, MAIN)
    assert [o.reread for o in r.outputs] == [False, False, True]
    haiku = "claude-haiku-4-5-20251001"
    first_of_sub = _api_in(api(200, 33, write=15_000, read=0, model=haiku), "sa1")
    assert cache_breaks("s", [*MAIN[:4], first_of_sub], [], PriceTable.default()) == []
    switch = api(201, 45, write=15_000, read=0, model=haiku)  # the main chain changing model is a switch
    assert [b.cause for b in cache_breaks("s", [*MAIN[:4], switch], [], PriceTable.default())] == ["model_switch"]


def test_fixed_overhead_per_chain() -> None:
    main = [api(0, 5, write=30_000, read=0), api(1, 15, write=500, read=30_000)]  # prompts 30,010 and 30,510
    sub = [_api_in(api(2, 8, write=8_000, read=0), "sa1"), _api_in(api(3, 9, write=10, read=8_000), "sa1")]
    assert fixed_overhead(main + sub) == (30_010, 30_010 * 2 + 8_010 * 2)
    assert fixed_overhead(sorted(main + sub, key=lambda a: a.at)) == (30_010, 30_010 * 2 + 8_010 * 2)


def test_no_cache_break_is_judged_on_sub_agents_without_an_agent_id() -> None:
    """Sub-agents without an agent id share one chain: a new one's first call 30 min after the last one's
    looks like an idle gap but is a fresh context."""
    first = _api_in(api(300, 10, write=15_000, read=0), UNNAMED_CHAIN)
    new_one = _api_in(api(301, 1_810, write=15_000, read=0), UNNAMED_CHAIN)
    assert cache_breaks("s", [first, new_one], [], PriceTable.default()) == []
    named = [_api_in(first, "a1"), _api_in(replace(new_one, id="a302"), "a1")]  # one named sub-agent idle 30 min
    assert [b.cause for b in cache_breaks("s", named, [], PriceTable.default())] == ["idle"]
