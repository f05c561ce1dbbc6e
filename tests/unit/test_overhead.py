"""The fixed overhead split (agents.overhead, sinks.overhead): memory files measured on a real folder tree,
MCP calls counted, and through the real pipeline: real hook payloads whose session ran in a project folder
at hand get their memory files measured once and kept."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pytest

from outloop.agents.context import Call
from outloop.agents.overhead import mcp_server, mcp_servers, memory_files, memory_paths, overhead_row, read_file
from outloop.projections import open_sink
from outloop.projections.context import refresh_context
from outloop.projections.overhead import store_overhead
from tests.conftest import traces_dir
from tests.unit.contextdata import load

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """home/proj/app as a session's cwd, memory files at three levels, one MCP config."""
    app = tmp_path / "home" / "proj" / "app"
    (app / ".claude").mkdir(parents=True)
    (app / "CLAUDE.md").write_text("# app rules\n" + "use ruff\n" * 100)  # 912 chars
    (app / "CLAUDE.local.md").write_text("local ü notes\n")  # 14 chars, 15 bytes
    (tmp_path / "home" / "proj" / ".claude").mkdir()
    (tmp_path / "home" / "proj" / ".claude" / "CLAUDE.md").write_text("x" * 400)
    (tmp_path / "home" / "proj" / "CLAUDE.md").mkdir()  # a folder of that name is no memory file
    (tmp_path / "home" / ".claude").mkdir()
    (tmp_path / "home" / ".claude" / "CLAUDE.md").write_text("user prefs\n")
    (app / ".mcp.json").write_text(json.dumps({"mcpServers": {"github": {}, "linear": {}}}))
    return tmp_path


def test_memory_files_nearest_first_with_their_sizes(tree: Path) -> None:
    cwd = str(tree / "home" / "proj" / "app")
    paths = memory_paths(cwd, str(tree / "home"))
    assert paths[:3] == [f"{cwd}/CLAUDE.md", f"{cwd}/CLAUDE.local.md", f"{cwd}/.claude/CLAUDE.md"]
    assert "/CLAUDE.md" not in paths  # not the root's
    assert paths.count(str(tree / "home" / ".claude" / "CLAUDE.md")) == 1  # the user's file, once
    found = memory_files(cwd, str(tree / "home"), read_file, 4.0)
    assert [(Path(f["path"]).relative_to(tree).as_posix(), f["bytes"], f["tokens"]) for f in found] == [
        ("home/proj/app/CLAUDE.md", 912, 228), ("home/proj/app/CLAUDE.local.md", 15, math.ceil(14 / 4)),
        ("home/proj/.claude/CLAUDE.md", 400, 100), ("home/.claude/CLAUDE.md", 11, 3)]
    assert memory_files(str(tree / "nowhere"), None, read_file, 4.0) == []
    assert mcp_servers(cwd, read_file) == ["github", "linear"]
    assert mcp_servers(str(tree), read_file) is None


@pytest.mark.parametrize(("name", "server"), [
    ("mcp__github__create_issue", "github"), ("mcp__plugin_x__y__z", "plugin_x"), ("Read", None),
    ("mcp__", None), ("mcp____tool", None)])
def test_mcp_server_of_a_tool_name(name: str, server: str | None) -> None:
    assert mcp_server(name) == server


def test_the_row_splits_the_prefix_and_counts_mcp_calls() -> None:
    calls = [Call("1", "mcp__github__get_issue", {}, "ok", T0, T0, 700),
             Call("2", "mcp__github__get_issue", {}, "error", T0, T0, 50),
             Call("3", "mcp__github__list_prs", {}, "started", T0, None, 0),
             Call("4", "Read", {"file_path": "/a"}, "ok", T0, T0, 900)]
    memory = {"cwd": "/p", "files": [{"path": "/p/CLAUDE.md", "bytes": 4000, "tokens": 1000}],
              "servers": ["github", "linear"], "measured_at": T0}
    row = overhead_row("s", calls, 18_000, memory)
    assert (row["memory_tokens"], row["rest_tokens"], row["mcp_calls"], row["mcp_output_tokens"]) == (1000, 17_000,
                                                                                                    2, 750)
    assert json.loads(row["mcp_tools_called"]) == ["mcp__github__get_issue"]
    assert json.loads(row["mcp_servers_unused"]) == ["linear"] and row["mcp_tools_offered"] is None
    blind = overhead_row("s", calls, 18_000, None)  # the project folder not at hand
    assert (blind["memory_tokens"], blind["rest_tokens"], blind["memory_files"], blind["mcp_calls"]) == (None, None,
                                                                                                        None, 2)


def test_real_hook_payloads_in_a_folder_at_hand_are_measured_once(tmp_path: Path, tree: Path) -> None:
    """The real templar PreToolUse capture, its ``cwd`` pointed at a project folder here: the session's
    memory files are measured at the first refresh and kept when the files change later."""
    cwd = tree / "home" / "proj" / "app"
    payloads = json.loads((traces_dir() / "claude-code-hooks" / "templar@a46211b7" / "pre_tool_use.json").read_text())
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "pre_tool_use.json").write_text(json.dumps([{**p, "cwd": str(cwd)} for p in payloads[:40]]))
    db = tmp_path / "o.duckdb"
    sink = open_sink(db).open()
    try:
        load(sink, [logs])
        (cwd / "CLAUDE.md").write_text("changed\n")
        with sink.transaction() as con:
            refresh_context(con, {payloads[0]["session_id"]})
    finally:
        sink.close()
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT cwd, memory_tokens, memory_files, rest_tokens, mcp_calls, measured_at "
                          "FROM context_overhead WHERE session_id = ?", [payloads[0]["session_id"]]).fetchone()
    assert row is not None and row[0] == str(cwd)
    files = orjson.loads(row[2])
    assert files[0] == {"path": str(cwd / "CLAUDE.md"), "bytes": 912, "tokens": 228}  # the first measurement
    assert row[1] == sum(f["tokens"] for f in files) and row[3] is None  # hook payloads only: no usage, no prefix
    assert row[4] == 0 and row[5] is not None and datetime.now(UTC) - row[5] < timedelta(minutes=5)


def _hook_rows(con: duckdb.DuckDBPyConnection, sid: str, payloads: list[dict[str, object]]) -> None:
    for i, p in enumerate(payloads):
        con.execute("INSERT INTO hook_events (id, session_id, hook_event_name, received_at, source, payload) "
                    "VALUES (?, ?, ?, ?, 'hook', ?)",
                    [f"{sid}-{i}", sid, p["hook_event_name"], T0 + timedelta(seconds=i), orjson.dumps(p).decode()])


def test_a_first_payload_without_a_cwd_takes_the_earliest_that_has_one(tmp_path: Path, tree: Path) -> None:
    payloads = json.loads((traces_dir() / "claude-code-hooks" / "templar@a46211b7" / "pre_tool_use.json").read_text())
    sid = payloads[0]["session_id"]
    cwd = tree / "home" / "proj" / "app"
    first = {k: v for k, v in payloads[0].items() if k != "cwd"}
    sink = open_sink(tmp_path / "o.duckdb").open()
    try:
        with sink.transaction() as con:
            _hook_rows(con, sid, [first, {**payloads[1], "cwd": str(cwd)}, {**payloads[2], "cwd": "/elsewhere"}])
            store_overhead(con, [sid, "no-hooks"], {sid: ([], 0), "no-hooks": ([], 0)}, T0)
        _, rows = sink.query("SELECT session_id, cwd, memory_tokens FROM context_overhead ORDER BY session_id")
    finally:
        sink.close()
    found = {r[0]: r[1:] for r in rows}
    assert found["no-hooks"][0] is None
    assert found[sid][0] == str(cwd) and found[sid][1] > 0


def test_the_cwd_of_a_session_with_large_payloads_fits_a_small_memory_limit(tmp_path: Path) -> None:
    """600 real PostToolUse payloads of a session, each carrying a 30 kB read (18 MB in all): finding the
    session's cwd parsed every payload and needed over 120 MiB inside the batch's transaction (the sink's
    default limit is 128 MB); it now parses the first one."""
    payloads = json.loads((traces_dir() / "claude-code-hooks" / "templar@a46211b7" / "post_tool_use.json").read_text())
    big = [{**payloads[i % len(payloads)], "tool_response": {"content": f"{i:06d}" + "x" * 30_000}}
           for i in range(600)]
    sid = big[0]["session_id"]
    sink = open_sink(tmp_path / "o.duckdb", memory_limit="48MB").open()
    try:
        with sink.transaction() as con:
            _hook_rows(con, sid, big)
        with sink.transaction() as con:
            store_overhead(con, [sid], {sid: ([], 0)}, T0)
        _, rows = sink.query("SELECT cwd FROM context_overhead")
    finally:
        sink.close()
    assert rows == [[big[0]["cwd"]]]
