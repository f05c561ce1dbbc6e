"""Orphan results end to end: a transcript whose first tool_use is missing (as in a resumed or
truncated session) replayed through the real pipeline. The result is kept, left out of the replay
summary's tool calls and reported apart."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from outloop.replay import replay
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import iter_paths
from outloop.streams.settings import Settings
from tests import SESSION_TIMEOUT
from tests.integration.transcript_sources import source_transcripts

pytestmark = pytest.mark.integration


def test_replay_counts_orphan_results_apart(tmp_path: Path, broker: str) -> None:
    (lines,) = source_transcripts(tmp_path, 1)
    first_use = next(i for i, line in enumerate(lines) if b'"type":"tool_use"' in line.replace(b" ", b""))
    folder = tmp_path / "resumed"
    folder.mkdir()
    path = folder / "88888888-aaaa-bbbb-cccc-000000000008.jsonl"
    path.write_bytes(b"".join(lines[:first_use] + lines[first_use + 1:]))
    envs = list(iter_paths([folder], ImportStats()))
    uses = {e.data["tool_use_id"] for e in envs if e.type == "transcript.tool_use"}
    results = {e.data["tool_use_id"] for e in envs if e.type == "transcript.tool_result"}
    dropped = orjson.loads(lines[first_use])["message"]["content"][0]["id"]
    assert dropped in results - uses
    tag = uuid.uuid4().hex[:8]
    s = Settings.from_env({}, home=tmp_path / "home", broker=broker, db=tmp_path / "out.duckdb",
                          topic_prefix=f"o{tag}", app_id=f"outloop-{tag}", http_port=0,
                          session_timeout=SESSION_TIMEOUT)
    summary = replay([folder], s)
    assert summary.tool_calls == len(uses) and summary.orphan_results == len(results - uses)
    assert summary.api_messages > 0
