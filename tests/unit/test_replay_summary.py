"""The replay summary on a real DuckDB file, and ``outloop replay`` on input with nothing to import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from outloop.projections import open_sink
from outloop.replay import ReplaySummary, summarize
from outloop.report import print_summary
from tests.unit import sinkdata as d

OUTLOOP = str(Path(sys.executable).with_name("outloop"))


def test_the_summary_counts_unpriced_responses_by_model(tmp_path: Path) -> None:
    items = [d.usage_msg(id="m1:r", model="claude-sonnet-4-5", cost_usd=0.5),
             d.usage_msg(id="m2:r", model="mystery-model-9", cost_usd=None),
             d.usage_msg(id="m3:r", model="mystery-model-9", cost_usd=None),
             d.usage_msg(id="m4:r", model="other-unknown", cost_usd=None),
             d.usage_msg(id="m5:r", model="mystery-model-9", cost_usd=None, session_id="elsewhere")]
    with open_sink(tmp_path / "s.duckdb", clock=d.clock) as sink:
        sink.write_batch(d.with_offsets(items))
        summary = ReplaySummary()
        summarize(sink, ["s1"], summary)
    assert summary.usage_records == 4
    assert summary.cost_usd == 0.5
    assert summary.unpriced_by_model == {"mystery-model-9": 2, "other-unknown": 1}
    assert summary.as_dict()["unpriced_by_model"] == {"mystery-model-9": 2, "other-unknown": 1}
    console = Console(record=True, width=200)
    print_summary(console, summary, tmp_path / "s.duckdb")
    text = console.export_text()
    assert "responses without a price" in text and "3 of 4" in text
    assert "mystery-model-9" in text and "other-unknown" in text


def _replay(tmp_path: Path, *paths: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    db = tmp_path / "out" / "r.duckdb"
    env = {**os.environ, "OUTLOOP_HOME": str(tmp_path / "home")}
    env.pop("OUTLOOP_BROKER", None)
    proc = subprocess.run([OUTLOOP, "replay", *map(str, paths), "--db", str(db)], env=env, capture_output=True,
                          text=True, timeout=60)
    return proc, db


def test_replay_of_an_empty_folder_says_so_and_creates_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc, db = _replay(tmp_path, empty)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: nothing to import: no files in"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not db.exists() and not db.parent.exists() and not (tmp_path / "home").exists()


def test_replay_of_files_that_are_no_trace_says_what_was_found(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "binary.jsonl").write_bytes(bytes(range(256)) * 64 + b"\n\x00\xff{\n" * 10)
    exe = folder / "tool.json"
    shutil.copyfile(shutil.which("true") or sys.executable, exe)
    exe.chmod(0o755)
    proc, db = _replay(tmp_path, folder)
    assert proc.returncode == 1, proc.stderr
    err = " ".join(proc.stderr.split())
    assert err.startswith("error: nothing to import in"), err
    assert "all 2 files skipped" in err
    assert "1 unknown format: no transcript records in the first lines" in err
    assert "1 unknown format: not JSON" in err
    assert not db.exists() and not (tmp_path / "home").exists()
