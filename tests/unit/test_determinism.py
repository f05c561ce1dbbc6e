"""Replaying the same input twice changes nothing: a real traces-dev subset through the agents and the sink
(in process, ``tests.unit.replaykit``) twice, cut into different batches, mixing partitions and topics in a
different order, into two DuckDB files; every table but the bookkeeping ones (docs/determinism.md) holds the
same rows. The subset has a hook capture (Stop and SessionEnd close windows; hooks arrive after their
transcript), transcripts whose sub-agent files come after the main one, usage records at the end of their
file, and a trajectory of another month (quota points in several hours)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.replaykit import Batching, differences, replay_into, tables

SUBSET = ("claude-code-hooks/templar@7c1b6b43",
          "claude-code-transcripts/m-claude/0eda269a-9c44-481b-958d-23a3c6361259.jsonl",
          "claude-code-transcripts/m-claude/1249ff48-75ab-42c9-b229-978e17b10c58.jsonl",
          "claude-code-transcripts/m-claude/b8d44276-1f04-4220-98c0-b410f7c58ff5.jsonl",
          "claude-code-transcripts/m-claude/agent-a00ad96.jsonl",
          "claude-code-transcripts/m-claude/agent-aa843bf.jsonl",
          "mini-swe-agent/django__django-11239.traj.json")

COARSE = Batching(partitions=2, agent_batch=2_000, stride=500, sink_batch=5_000)
FINE = Batching(partitions=2, agent_batch=29, stride=7, sink_batch=173, by_topic=True)


def test_two_replays_cut_differently_store_the_same_rows(traces: Path, tmp_path: Path) -> None:
    paths = [traces / p for p in SUBSET]
    replay_into(tmp_path / "coarse.duckdb", paths, COARSE)
    replay_into(tmp_path / "fine.duckdb", paths, FINE)
    first, second = tables(tmp_path / "coarse.duckdb"), tables(tmp_path / "fine.duckdb")
    assert set(first) == set(second)
    for must_hold in ("context_windows", "quota_snapshots", "quota_forecasts", "throttle_decisions", "tool_calls"):
        assert first[must_hold], f"{must_hold} is empty: the subset no longer exercises it"
    assert differences(first, second) == {}
