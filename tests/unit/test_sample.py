"""The generated demo sample: deterministic, in the real formats, importable, and realistic in the
ways the analyses need (repeated commands, split usage records, cache-dominated tokens)."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from outloop.sample import write_sample
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import iter_paths

KINDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("sample")
    write_sample(dest)
    return dest


def run(paths: list[Path]) -> tuple[list, ImportStats]:
    stats = ImportStats()
    return list(iter_paths(paths, stats)), stats


def records(sample: Path) -> dict[Path, list[dict]]:
    out: dict[Path, list[dict]] = {}
    for path in sorted(sample.rglob("*.jsonl")):
        out[path] = []
        for line in path.read_bytes().split(b"\n"):
            try:
                out[path].append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def content(root: Path, files: list[Path]) -> dict[Path, bytes]:
        assert all(p.is_file() and root in p.parents for p in files)
        return {p.relative_to(root): p.read_bytes() for p in files}

    a = content(tmp_path / "a", write_sample(tmp_path / "a"))
    assert a == content(tmp_path / "b", write_sample(tmp_path / "b"))
    assert a != content(tmp_path / "c", write_sample(tmp_path / "c", seed=8))


def test_session_count(tmp_path: Path) -> None:
    write_sample(tmp_path, sessions=3)
    mains = [p for p in tmp_path.rglob("*.jsonl") if not p.name.startswith("agent-")]
    assert len(mains) == 3 and len(list(tmp_path.rglob("agent-*.jsonl"))) == 1


def test_sample_imports_cleanly_and_deterministically(sample: Path, tmp_path: Path) -> None:
    envs, stats = run([sample])
    assert stats.files_by_format == {"transcript": 7, "hook-log": 7, "trajectory": 1}
    assert list(stats.skipped_files) == [str(sample / "mini-swe-agent" / "results_summary.json")]
    assert stats.damaged_total == 2  # two lines broken on purpose
    assert set(Counter(e.type for e in envs)) == {"transcript.tool_use", "transcript.tool_result",
                                                  "usage.record", "hook.event", "tool.call"}
    shutil.copytree(sample, tmp_path / "elsewhere")
    again, _ = run([tmp_path / "elsewhere"])
    assert [e.model_dump() for e in again] == [e.model_dump() for e in envs]


def test_the_same_commands_recur_within_and_across_sessions(sample: Path) -> None:
    per_session: dict[str, Counter[str]] = defaultdict(Counter)
    for recs in records(sample).values():
        for rec in recs:
            for block in rec.get("message", {}).get("content", []) if rec.get("type") == "assistant" else []:
                if block.get("name") == "Bash":
                    per_session[rec["sessionId"]][block["input"]["command"]] += 1
    repeated = [s for s, c in per_session.items() if c["pytest tests/unit -q"] >= 2]
    assert len(repeated) >= 3
    assert sum(c["git status"] for c in per_session.values()) >= 2 * len(per_session)
    assert sum(c["npm run build"] for c in per_session.values()) >= 2


def test_usage_is_split_per_block_and_dominated_by_cache_reads(sample: Path) -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    synthetic = 0
    for recs in records(sample).values():
        for rec in recs:
            if rec.get("type") != "assistant":
                continue
            if rec["message"]["model"] == "<synthetic>":
                synthetic += 1
                assert not any(rec["message"]["usage"].values())
                continue
            groups[(rec["message"]["id"], rec["requestId"])].append(rec["message"]["usage"])
    split = [g for g in groups.values() if len(g) > 1]
    assert len(split) > 10
    assert all(g[-1]["output_tokens"] >= g[0]["output_tokens"] for g in split)
    assert any(g[-1]["output_tokens"] > 5 * g[0]["output_tokens"] for g in split)
    best = [max(g, key=lambda u: sum(u[k] for k in KINDS)) for g in groups.values()]
    totals = {k: sum(u[k] for u in best) for k in KINDS}
    assert totals["cache_read_input_tokens"] > 0.8 * sum(totals.values())
    assert synthetic == 1
    envs, _ = run([sample / "claude-projects"])
    assert {k: sum(e.data[k] for e in envs if e.type == "usage.record") for k in KINDS} == totals


def test_subagent_shares_its_parent_session(sample: Path) -> None:
    recs = records(sample)
    (agent,) = [p for p in recs if p.name.startswith("agent-")]
    parents = {p.stem for p in recs if p is not agent}
    assert {r["sessionId"] for r in recs[agent]} <= parents
    assert all(r["isSidechain"] and r["agentId"] for r in recs[agent])


def test_hook_capture_old_and_new(sample: Path) -> None:
    capture = sample / "hook-logs" / "shop-api"
    pre = json.loads((capture / "pre_tool_use.json").read_text())
    post = json.loads((capture / "post_tool_use.json").read_text())
    with_id = {p["tool_use_id"] for p in pre if "tool_use_id" in p}
    assert with_id and any("tool_use_id" not in p for p in pre)
    assert any("tool_result" in p for p in post) and any("tool_response" in p for p in post)
    envs, _ = run([sample])
    # the new session arrived twice: as hook events and as a transcript
    assert with_id <= {e.data["tool_use_id"] for e in envs if e.type == "transcript.tool_use"}
    keys = defaultdict(list)
    for e in envs:
        if e.type == "hook.event" and "call_key" in e.data:
            keys[e.data["hook_event_name"]].append(e.data["call_key"])
    assert keys["PreToolUse"] and keys["PreToolUse"] == keys["PostToolUse"]


def test_trajectory(sample: Path) -> None:
    envs, stats = run([sample / "mini-swe-agent"])
    calls = [e.data for e in envs if e.type == "tool.call"]
    assert {c["status"] for c in calls} == {"ok", "error"}
    assert stats.notes["traj_several_actions"] == 1
    assert Counter(c["command"] for c in calls).most_common(1)[0][1] == 3  # the test command, three times
    assert len([e for e in envs if e.type == "usage.record"]) == len(calls) + 1
