"""Context efficiency of the real traces through the real pipeline (importers, sessions fold, sink):
files_read / files_used recomputed independently from the raw files, efficiency bounds, idempotence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from outloop.projections import open_sink
from tests.conftest import traces_dir
from tests.unit.contextdata import load, outputs

EDITS = {"Edit", "Write", "MultiEdit", "NotebookEdit"}
TABLES = ("context_efficiency", "context_outputs", "file_reads", "cache_breaks", "context_profiles", "context_windows",
          "context_overhead")


def _transcript_records(root: Path) -> list[dict]:
    records: list[dict] = []
    for path in sorted(root.rglob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    for path in sorted(root.rglob("chat.json")):
        records += [r for r in json.loads(path.read_text()) if isinstance(r, dict)]
    return records


def reference(root: Path) -> dict[str, tuple[int, int]]:
    """(files read, files used) per session straight from the files: transcript tool_use blocks with
    their record time, and hook-log PreToolUse payloads (no time) not already seen in a transcript
    (the k-th identical call of a session is the same call)."""
    calls: dict[str, list[tuple[str, str, float | None]]] = defaultdict(list)
    seen: Counter[tuple[str, str, str]] = Counter()
    uuids: set[str] = set()
    for rec in _transcript_records(root):
        msg = rec.get("message")
        if rec.get("type") != "assistant" or not isinstance(msg, dict) or rec.get("uuid") in uuids:
            continue
        uuids.add(rec.get("uuid"))
        at = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
        for b in msg.get("content") or []:
            if isinstance(b, dict) and b.get("type") == "tool_use" and isinstance(b.get("input"), dict):
                key = (rec["sessionId"], b["name"], json.dumps(b["input"], sort_keys=True))
                if seen[key + (b["id"],)] == 0:
                    seen[key + (b["id"],)] += 1
                    seen[key] += 1
                    calls[rec["sessionId"]].append((b["name"], b["input"].get("file_path"), at))
    hooked: Counter[tuple[str, str, str]] = Counter()
    for path in sorted(root.rglob("pre_tool_use.json")):
        for p in json.loads(path.read_text()):
            key = (p["session_id"], p["tool_name"], json.dumps(p["tool_input"], sort_keys=True))
            hooked[key] += 1
            if hooked[key] > seen[key]:
                seen[key] += 1  # later captures repeat earlier payloads: one call each
                calls[p["session_id"]].append((p["tool_name"], p["tool_input"].get("file_path"), None))
    out = {}
    for session, items in calls.items():
        reads = {p for t, p, _ in items if t == "Read" and p}
        used = {p for p in reads if any(
            t in EDITS and q == p and (e is None or r is None or e > r)
            for t, q, e in items for t2, q2, r in items if t2 == "Read" and q2 == p)}
        out[session] = (len(reads), len(used))
    return out


@pytest.fixture(scope="module")
def loaded(traces_db: Path) -> Path:
    return traces_db  # shared with the other modules that read the loaded traces (tests/conftest.py)


def test_files_read_and_used_equal_an_independent_count(loaded: Path) -> None:
    ref = reference(traces_dir())
    con = duckdb.connect(str(loaded), read_only=True)
    got = {s: (r, u) for s, r, u in con.execute(
        "SELECT session_id, files_read, files_used FROM context_efficiency").fetchall()}
    with_files = {s: v for s, v in ref.items() if v[0]}
    assert len(with_files) >= 10
    assert {s: got.get(s) for s in with_files} == with_files
    assert all(v == (0, 0) for s, v in got.items() if s not in with_files)


def test_efficiency_within_bounds_and_figures_add_up(loaded: Path) -> None:
    con = duckdb.connect(str(loaded), read_only=True)
    rows = con.execute("SELECT efficiency, loaded_tokens, used_tokens, waste_tokens, carry_tokens, "
                       "used_carry_tokens FROM context_efficiency").fetchall()
    assert rows
    for eff, loaded_, used, waste, carry, used_carry in rows:
        assert eff is None or 0.0 <= eff <= 1.0
        assert used + waste == loaded_ and 0 <= used_carry <= carry
    profiles = con.execute("SELECT efficiency, potential_pct, potential_tokens, carry_tokens FROM context_profiles "
                           "ORDER BY carry_tokens DESC LIMIT 5").fetchall()
    assert len(profiles) == 5
    assert all((e is None or 0 <= e <= 1) and 0 <= pct <= 100 and 0 <= pot <= c for e, pct, pot, c in profiles)
    assert con.execute("SELECT count(*), min(extra_cost_usd) FROM cache_breaks").fetchone()[1] > 0
    # outputs whose text a stored PostToolUse payload carries are judged by their evidence; the others
    # (transcripts: sizes only) count as used unless they are file reads
    judged = dict(con.execute("SELECT t.source LIKE '%hook%', count(*) FILTER (WHERE NOT o.used) "
                              "FROM context_outputs o JOIN tool_calls t USING (id) WHERE t.tool_name = 'Bash' "
                              "GROUP BY ALL").fetchall())
    assert judged[True] > 0 and judged[False] == 0
    windows = con.execute("SELECT session_id, opened_at, last_event_at, closed_at, loaded_tokens FROM context_windows"
                          ).fetchall()
    assert len({w[0] for w in windows}) >= 20  # the sessions agent's windows, through the same sink
    assert all(o <= last and (c is None or last <= c) for _, o, last, c, _ in windows)
    timed = con.execute("SELECT DISTINCT session_id FROM usage WHERE \"timestamp\" IS NOT NULL").fetchall()
    assert {t[0] for t in timed} <= {w[0] for w in windows}


def test_sub_agent_calls_are_their_own_context(loaded: Path) -> None:
    """Session 18240050 starts two sub-agents (agent-a00ad96, agent-aa843bf: one small call each, before the
    main chain's first call). Their prompts are not the session's fixed prefix (the main chain's first
    prompt is, taken over the main chain's calls), and no output is carried by a sub-agent's calls: each
    output's carry is the number of its own chain's calls after it."""
    with duckdb.connect(str(loaded), read_only=True) as con:
        _sub_agents(con)


def _sub_agents(con: duckdb.DuckDBPyConnection) -> None:
    session = "18240050-3ee8-41cd-a89a-0a5c4b709607"
    main = con.execute("SELECT u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens, "
                       "u.\"timestamp\" FROM usage u JOIN api_messages m USING (id) WHERE u.session_id = ? "
                       "AND NOT m.is_sidechain ORDER BY 2", [session]).fetchall()
    side = con.execute("SELECT count(*) FROM api_messages WHERE session_id = ? AND is_sidechain", [session]).fetchone()
    assert side == (2,) and len(main) > 10
    prefix, overhead = con.execute("SELECT fixed_prefix_tokens, fixed_overhead_tokens FROM context_efficiency "
                                   "WHERE session_id = ?", [session]).fetchone()
    side_prompts = con.execute("SELECT sum(u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens)"
                               " FROM usage u JOIN api_messages m USING (id) WHERE u.session_id = ? AND m.is_sidechain",
                               [session]).fetchone()[0]
    assert prefix == main[0][0] and overhead == sum(min(prefix, p) for p, _ in main) + side_prompts
    carried = con.execute("SELECT o.carry, t.ended_at FROM context_outputs o JOIN tool_calls t USING (id) "
                          "WHERE o.session_id = ? AND t.ended_at IS NOT NULL", [session]).fetchall()
    assert carried and all(c == sum(1 for _, at in main if at > end) for c, end in carried)
    windows = con.execute("SELECT sum(api_calls) FROM context_windows WHERE session_id = ? AND closed_at IS NOT NULL",
                          [session]).fetchone()
    assert windows == (len(main),)  # the sessions agent's windows leave the sub-agents' calls out too


def _dump(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    finally:
        con.close()


def test_replaying_the_same_input_changes_nothing(loaded: Path, tmp_path: Path) -> None:
    before = _dump(loaded)
    sink = open_sink(loaded).open()
    try:
        msgs = outputs([traces_dir()])
        for start in range(0, len(msgs), 3000):  # other batch boundaries, offsets already stored or not
            sink.write_batch(msgs[start:start + 3000])
        from outloop.projections.context import refresh_context
        with sink.transaction() as con:
            refresh_context(con)
    finally:
        sink.close()
    assert _dump(loaded) == before
    other = tmp_path / "again.duckdb"
    sink = open_sink(other).open()
    try:
        load(sink, [traces_dir()], batch=777)
    finally:
        sink.close()
    assert _dump(other) == before


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUTLOOP_HTTP_PORT": "1"}  # no worker answers there: the file is read read-only
    return subprocess.run([sys.executable, "-m", "outloop.cli", "context", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_cli_reads_sessions_one_session_and_profiles(loaded: Path) -> None:
    con = duckdb.connect(str(loaded), read_only=True)
    top = con.execute("SELECT session_id, carry_tokens FROM context_efficiency ORDER BY carry_tokens DESC, "
                      "session_id LIMIT 3").fetchall()
    con.close()
    listed = json.loads(_cli("--json", "--top", "3", "--db", str(loaded)).stdout)
    assert [(r["session_id"], r["carry_tokens"]) for r in listed] == top
    one = json.loads(_cli(top[0][0], "--json", "--db", str(loaded)).stdout)
    assert one["session_id"] == top[0][0] and one["file_reads"] and one["cache_breaks"]
    assert sum(f["tokens"] for f in one["file_reads"]) <= one["loaded_tokens"]
    # the fixed overhead split: the prefix is the row's; the dev traces' project folders are not at hand here
    # (their cwds are other machines'), so no memory file is measured; none of them called an MCP tool
    ovh = one["overhead"]
    assert ovh["fixed_prefix_tokens"] == one["fixed_prefix_tokens"] > 0
    assert (ovh["memory_tokens"], ovh["memory_files"], ovh["mcp_calls"], ovh["mcp_tools_offered"]) == (None, None, 0,
                                                                                                      None)
    assert all(r["mcp_calls"] == 0 and "memory_tokens" in r for r in listed)
    with duckdb.connect(str(loaded), read_only=True) as con:
        cwds = con.execute("SELECT count(cwd), count(memory_tokens) FROM context_overhead").fetchone()
    assert cwds is not None and cwds[0] >= 1 and cwds[1] == 0  # hook sessions name their folder: not at hand here
    profiles = json.loads(_cli("profiles", "--json", "--top", "5", "--db", str(loaded)).stdout)
    assert len(profiles) == 5 and all(isinstance(p["needed"], list) for p in profiles)
    assert [p["carry_tokens"] for p in profiles] == sorted((p["carry_tokens"] for p in profiles), reverse=True)
    table = _cli("profiles", "--db", str(loaded))
    assert table.returncode == 0 and profiles[0]["signature"][:20] in table.stdout.replace("\n", "")
    missing = _cli("no-such-session", "--db", str(loaded))
    assert missing.returncode == 1 and "no context figures" in missing.stderr
