"""Importers against the real traces (skipped when absent) and against small hand-made files.

Expected numbers on real traces come from plain, independent computations written in the tests
with the stdlib json module, never from the importer code."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import orjson
import pytest

from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import collect_files, default_claude_projects, detect, iter_paths
from outloop.streams.importers.hooklogs import iter_hook_log
from outloop.streams.importers.trajectories import iter_trajectory
from outloop.streams.importers.transcripts import iter_transcript_file

KINDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def run(paths: list[Path]) -> tuple[list, ImportStats]:
    stats = ImportStats()
    return list(iter_paths(paths, stats)), stats


def direct_transcripts(folder: Path) -> dict:
    """Distinct tool_use / tool_result ids, usage per (message.id, requestId) with the max-total record,
    and unparseable lines, computed line by line with json."""
    uses, results, best, first, damaged, lines = set(), set(), {}, {}, 0, 0
    for path in sorted(folder.rglob("*.jsonl")):
        with path.open("rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                lines += 1
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError:
                    damaged += 1
                    continue
                msg = rec.get("message")
                if not isinstance(msg, dict):
                    continue
                for block in msg.get("content") if isinstance(msg.get("content"), list) else []:
                    if rec["type"] == "assistant" and block.get("type") == "tool_use":
                        uses.add(block["id"])
                    if rec["type"] == "user" and block.get("type") == "tool_result":
                        results.add(block["tool_use_id"])
                usage = msg.get("usage")
                synthetic = msg.get("model") == "<synthetic>"
                if rec["type"] == "assistant" and isinstance(usage, dict) and not synthetic:
                    key = (msg["id"], rec.get("requestId"))
                    total = sum(usage.get(k) or 0 for k in KINDS)
                    first.setdefault(key, usage)
                    if key not in best or total > best[key][0]:
                        best[key] = (total, usage)
    sums = {k: sum(u.get(k) or 0 for _, u in best.values()) for k in KINDS}
    first_out = sum(u.get("output_tokens") or 0 for u in first.values())
    return {"uses": uses, "results": results, "usage_keys": set(best), "sums": sums,
            "first_output": first_out, "damaged": damaged, "lines": lines}


@pytest.mark.traces
def test_transcripts_match_a_direct_computation(traces: Path) -> None:
    folder = traces / "claude-code-transcripts"
    want = direct_transcripts(folder)
    envs, stats = run([folder])
    by_type = Counter(e.type for e in envs)
    uses = {e.data["tool_use_id"] for e in envs if e.type == "transcript.tool_use"}
    assert by_type["transcript.tool_use"] == len(want["uses"]) and uses == want["uses"]
    assert by_type["transcript.tool_result"] == len(want["results"])
    usage = [e.data for e in envs if e.type == "usage.record"]
    assert {tuple(u["id"].split(":", 1)) for u in usage} == {(m, r or "") for m, r in want["usage_keys"]}
    assert {k: sum(u[k] for u in usage) for k in KINDS} == want["sums"]
    # taking the first record of each response would undercount output tokens many times over
    assert want["sums"]["output_tokens"] > 5 * want["first_output"]
    # cache reads dominate real usage
    assert want["sums"]["cache_read_input_tokens"] > 0.8 * sum(want["sums"].values())
    # a redaction script broke 2-5% of the lines: counted, skipped, never fatal
    assert stats.damaged_total == want["damaged"] > 0
    assert 0.01 < stats.damaged_total / want["lines"] < 0.06
    assert stats.files_by_format["transcript"] == len(list(folder.rglob("*.jsonl")))


@pytest.mark.traces
def test_subagent_files_share_the_parent_session(traces: Path) -> None:
    folder = traces / "claude-code-transcripts"
    agents = sorted(folder.rglob("agent-*.jsonl"))
    assert agents, "traces-dev holds sub-agent files"
    mains = {p.stem for p in folder.rglob("*.jsonl") if not p.name.startswith("agent-")}
    stats = ImportStats()
    for path in agents:
        for env in iter_transcript_file(path, stats):
            assert env.subject in mains


@pytest.mark.traces
def test_hook_logs_are_lossless(traces: Path) -> None:
    files = sorted(p for p in (traces / "claude-code-hooks").rglob("*.json") if p.name != "chat.json")
    assert files
    for path in files:
        source = json.loads(path.read_text(encoding="utf-8"))
        stats = ImportStats()
        envs = list(iter_hook_log(path, stats))
        assert stats.damaged_total == 0 and len(envs) == len(source)
        for env, src in zip(envs, source, strict=True):
            data = json.loads(env.model_dump_json())["data"]  # re-serialised the way it travels
            key = data.pop("call_key", None)
            assert data == src and list(data) == list(src)
            assert env.time is None and env.source == "hook-log" and env.subject == src["session_id"]
            assert (key is not None) == ("tool_name" in src and not src.get("tool_use_id"))
        assert len({e.id for e in envs}) == len(envs)  # repeated identical payloads get their own ordinal


@pytest.mark.traces
def test_hook_pre_and_post_keys_pair_up(traces: Path) -> None:
    envs, _ = run([traces / "claude-code-hooks"])
    pre = {e.data["call_key"] for e in envs if e.data.get("hook_event_name") == "PreToolUse"}
    post = [e.data["call_key"] for e in envs if e.data.get("hook_event_name") == "PostToolUse"]
    # captures are partial, yet most PostToolUse payloads find their PreToolUse by key
    assert sum(k in pre for k in post) > 0.9 * len(post)


ACTION = re.compile(r"```bash\s*\n(.*?)\n```", re.DOTALL)


@pytest.mark.traces
def test_trajectories_one_tool_call_per_executed_bash_block(traces: Path) -> None:
    folder = traces / "mini-swe-agent"
    for path in sorted(folder.glob("*.traj.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        assistant = [m for m in doc["messages"] if m["role"] == "assistant"]
        blocks = [len(ACTION.findall(m["content"])) for m in assistant]
        stats = ImportStats()
        envs = list(iter_trajectory(path, stats))
        calls = [e.data for e in envs if e.type == "tool.call"]
        usage = [e.data for e in envs if e.type == "usage.record"]
        assert len(calls) == blocks.count(1)  # several blocks: mini-swe-agent refused to run them
        assert stats.notes["traj_several_actions"] == sum(1 for b in blocks if b > 1)
        assert len(usage) == len(assistant) == doc["info"]["model_stats"]["api_calls"]
        assert all(c["tool_name"] == "Bash" and c["id"] == c["tool_use_id"] for c in calls)
        assert all(e.subject == doc["instance_id"] for e in envs)
        prompt = sum(m["extra"]["response"]["usage"]["prompt_tokens"] for m in assistant)
        assert sum(u["input_tokens"] + u["cache_read_input_tokens"] for u in usage) == prompt
        costs = [u["cost_usd"] for u in usage]
        if None not in costs:
            assert sum(costs) == pytest.approx(doc["info"]["model_stats"]["instance_cost"])


@pytest.mark.traces
def test_import_is_deterministic_and_labels_are_skipped(traces: Path) -> None:
    envs1, stats1 = run([traces])
    envs2, stats2 = run([traces])
    assert [e.id for e in envs1] == [e.id for e in envs2]
    assert [e.model_dump() for e in envs1] == [e.model_dump() for e in envs2]
    assert len({e.id for e in envs1}) == len(envs1)
    assert stats1.as_dict() == stats2.as_dict()
    assert "label" in stats1.skipped_files[str(traces / "mini-swe-agent" / "results_summary.json")]


def test_garbage_is_counted_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "noise.json").write_bytes(b"\x00\xffnot json at all")
    (tmp_path / "noise.jsonl").write_bytes(b"garbage\n{broken\n")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "object.json").write_text('{"some": "thing"}')
    good = {"session_id": "s1", "hook_event_name": "Stop", "stop_hook_active": False}
    (tmp_path / "stop.json").write_text(json.dumps([good, 42, {"hook_event_name": "Stop"}, good]))
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}
    message = {"role": "user", "content": [result]}
    record = {"type": "user", "sessionId": "s2", "uuid": "u1", "message": message}
    lines = [json.dumps(record), "{not json", "[1, 2]", ""]
    (tmp_path / "s2.jsonl").write_text("\n".join(lines))
    messages = [{"role": "assistant", "content": "```bash\nls\n```"}, 7,
                {"role": "user", "content": "<returncode>0</returncode>"}]
    traj = {"trajectory_format": "mini-swe-agent-1", "instance_id": "i1", "messages": messages}
    (tmp_path / "x.traj.json").write_text(json.dumps(traj))
    envs, stats = run([tmp_path, tmp_path / "missing.json"])
    skipped = ("noise.json", "noise.jsonl", "notes.txt", "empty.json", "object.json", "missing.json")
    assert set(stats.skipped_files) == {str(tmp_path / n) for n in skipped}
    assert stats.damaged_by_file[str(tmp_path / "stop.json")] == 2
    assert stats.damaged_by_file[str(tmp_path / "s2.jsonl")] == 2
    assert stats.damaged_by_file[str(tmp_path / "x.traj.json")] == 1
    assert Counter(e.type for e in envs) == {"hook.event": 2, "transcript.tool_result": 1, "tool.call": 1}
    assert len({e.id for e in envs}) == 4


def _jsonl(path: Path, records: list[dict]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def _assistant(uuid: str, mid: str, out: int, block: dict, session: str = "s") -> dict:
    usage = {"input_tokens": 3, "output_tokens": out, "cache_read_input_tokens": 1000,
             "cache_creation_input_tokens": 10}
    return {"type": "assistant", "uuid": uuid, "sessionId": session, "timestamp": "2025-01-02T03:04:05.678Z",
            "requestId": "req_1", "message": {"id": mid, "model": "m", "content": [block], "usage": usage}}


def test_split_records_overlapping_copies_and_call_keys(tmp_path: Path) -> None:
    ls = {"command": "ls"}
    recs = [_assistant("a", "msg_1", 2, {"type": "text", "text": "hi"}),
            _assistant("b", "msg_1", 2, {"type": "tool_use", "id": "t1", "name": "Bash", "input": ls}),
            _assistant("c", "msg_1", 90, {"type": "tool_use", "id": "t2", "name": "Bash", "input": ls})]
    _jsonl(tmp_path / "s.jsonl", recs)
    (tmp_path / "cap").mkdir()
    (tmp_path / "cap" / "chat.json").write_bytes(orjson.dumps(recs[:2]))  # an older, overlapping copy
    pre = [{"session_id": "s", "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": ls}] * 2
    post = [{**p, "hook_event_name": "PostToolUse", "tool_result": {"stdout": "x"}} for p in pre]
    (tmp_path / "cap" / "pre_tool_use.json").write_bytes(orjson.dumps(pre))
    (tmp_path / "cap" / "post_tool_use.json").write_bytes(orjson.dumps(post))
    envs, stats = run([tmp_path])
    uses = [e for e in envs if e.type == "transcript.tool_use"]
    assert [e.id for e in uses] == ["tu:t1", "tu:t2"]
    # chat.json (an older copy) comes first in path order; the complete transcript then supersedes it
    usage = {e.id: e for e in envs if e.type == "usage.record"}
    assert list(usage) == ["us:msg_1:req_1"] and usage["us:msg_1:req_1"].data["output_tokens"] == 90
    assert usage["us:msg_1:req_1"].time.utcoffset().total_seconds() == 0
    hook_keys = [e.data["call_key"] for e in envs if e.type == "hook.event"]
    tool_keys = [e.data["call_key"] for e in uses]
    assert hook_keys[:2] == tool_keys and hook_keys[2:] == tool_keys  # k-th Pre = k-th Post = k-th tool_use
    assert all("tool_result" in e.data and "tool_response" not in e.data for e in envs
               if e.data.get("hook_event_name") == "PostToolUse")
    assert stats.notes["duplicate_record"] == 2


@pytest.mark.parametrize(("first", "second", "emitted"), [(5, 50, [5, 50]), (50, 5, [50]), (50, 50, [50])])
def test_larger_usage_in_a_later_file_supersedes(tmp_path: Path, first: int, second: int,
                                                 emitted: list[int]) -> None:
    for folder, uuid, out in (("a", "x1", first), ("b", "x2", second)):
        (tmp_path / folder).mkdir()
        text = {"type": "text", "text": uuid}
        _jsonl(tmp_path / folder / "s.jsonl", [_assistant(uuid, "msg_9", out, text)])
    envs, stats = run([tmp_path])
    assert {e.id for e in envs} == {"us:msg_9:req_1"}
    assert [e.data["output_tokens"] for e in envs] == emitted
    assert stats.notes["duplicate_usage"] == 2 - len(emitted)


def test_detect_and_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _jsonl(tmp_path / "agent-1.jsonl", [_assistant("u", "m", 1, {"type": "text", "text": "x"})])
    _jsonl(tmp_path / "zz.jsonl", [_assistant("v", "n", 1, {"type": "text", "text": "y"})])
    assert [p.name for p in collect_files([tmp_path], ImportStats())] == ["zz.jsonl", "agent-1.jsonl"]
    assert detect(tmp_path / "zz.jsonl") == ("transcript", None)
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    assert default_claude_projects() == Path.home() / ".claude" / "projects"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path))
    assert default_claude_projects() == tmp_path / "projects"


def test_run_times_from_real_transcripts_and_the_permission_wait_kept_out(traces: Path) -> None:
    """traces-dev: a `cat` of a small file whose tool_result came 638,790 ms after its tool_use (the call
    waited, for the user's permission or behind a long `find` of the same turn: the transcript cannot
    tell) gets no run time and is labelled wall-clock; tools that state their own run time in
    `toolUseResult` (Glob, WebFetch `durationMs`, WebSearch `durationSeconds`, Task `totalDurationMs`)
    carry it. Both through the pairing fold, as the pipeline computes them."""
    from outloop.agents.pairing import BatchOut, Pairing, tool_call_model
    from outloop.agents.toolcalls import run_time
    from outloop.schemas.events import EVENT_TYPES

    files = sorted((traces / "claude-code-transcripts").rglob("*.jsonl"))
    envs, _ = run(files)
    pairing, out = Pairing(), BatchOut()
    for env in envs:
        pairing.apply(env, EVENT_TYPES[env.type].model_validate(env.data), out)
    calls = [(tool_call_model(v), *run_time(v)) for v in out.tool_calls.values()]
    (cat,) = [c for c in calls if c[0].command == "cat /e/refind_linux.conf 2>/dev/null"]
    assert (cat[0].duration_ms, cat[1], cat[2]) == (638_790.0, None, "transcript-wallclock")
    reported = [(c, run) for c, run, source in calls if source == "tool-reported"]
    assert {"Glob", "WebFetch", "WebSearch"} <= {c.tool_name for c, _ in reported}
    # a reported figure is the tool's own: never above the wall-clock span around it (+1 s of rounding)
    assert all(run is not None and 0 <= run <= (c.duration_ms or 0) + 1000 for c, run in reported)
    wall = [run for _, run, source in calls if source == "transcript-wallclock"]
    assert len(wall) > 100 and all(run is None for run in wall)
