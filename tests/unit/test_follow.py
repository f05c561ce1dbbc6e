"""The live measurer reads a growing transcript incrementally (outloop.router.follow): its measurements
must equal those of reading the whole file again (measure_file), at every size, on a real transcript
whose Bash results were made the runner's; a truncated, replaced or rewritten file, a late record
and a changed log restart it cleanly; each byte is read once and what no measurement needs is dropped."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from outloop.agents.pricing import PriceTable
from outloop.router import follow
from outloop.router.follow import FollowedTranscript
from outloop.router.measure import load_run, measure_file, named_run, saving_record
from outloop.runner.rewrite import run_id_for

SOURCE = "claude-code-transcripts/m-claude/3cfce0ff-0725-47be-a572-f8af8122b71e.jsonl"  # 257 Bash calls
PRICES = PriceTable.default()


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(b.get("text") or "") for b in content if isinstance(b, dict))
    return content if isinstance(content, str) else ""


def _run(runs: Path, run_id: str, raw: str) -> Path:
    log = runs / f"{run_id}.log"
    log.write_text(raw)
    (runs / f"{run_id}.json").write_bytes(orjson.dumps({"run_id": run_id, "rule": "pytest", "family": "pytest",
                                                        "kind": "structured"}))
    return log


def runner_transcript(traces: Path, runs: Path, limit: int = 600) -> bytes:
    """The first ``limit`` records of a real session, every second Bash result made the runner's: its
    real output kept as the run's log, its first 10 lines printed with the runner's footer; one in four
    printed unchanged (no footer: a run named after its tool call)."""
    runs.mkdir(parents=True, exist_ok=True)
    records = [orjson.loads(line) for line in (traces / SOURCE).read_bytes().splitlines()[:limit]]
    bash = {b["id"] for r in records if r.get("type") == "assistant" for b in r["message"].get("content") or ()
            if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == "Bash"}
    n = 0
    for rec in records:
        content = (rec.get("message") or {}).get("content") if rec.get("type") == "user" else None
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("tool_use_id") in bash:
                n += 1
                raw = _text(block.get("content"))
                if n % 4 == 1:
                    _run(runs, str(run_id_for(block["tool_use_id"])), raw)
                if n % 2:
                    continue
                log = _run(runs, f"run{n}", raw)
                lines = raw.splitlines()
                block["content"] = "\n".join(lines[:10]) + f"\n[outloop] full output ({len(lines)} lines, " \
                                                           f"{len(raw.encode())} bytes): {log}\n"
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def incremental(f: FollowedTranscript) -> list[tuple[str, dict[str, Any]]]:
    return [(e.id, e.data) for e in (saving_record(m) for m in f.measure(load_run, PRICES))]


def whole(path: Path, runs: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(e.id, e.data) for e in measure_file(path, PRICES, runs=str(runs))]


def follower(path: Path, runs: Path) -> FollowedTranscript:
    return FollowedTranscript(str(path), lambda tool_use_id: named_run(tool_use_id, str(runs)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def session(traces: Path, runs: Path) -> bytes:
    return runner_transcript(traces, runs)


@pytest.mark.parametrize("digest", [follow.DIGEST_BYTES, 40_000])  # 40 KB: settled within each read too
def test_growing_in_pieces_measures_what_the_whole_file_does(session: bytes, runs: Path, tmp_path: Path, digest: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "DIGEST_BYTES", digest)
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"")
    f = follower(path, runs)
    cuts = [len(session) * k // 9 + 17 for k in range(1, 9)] + [len(session)]  # mid-line cuts, then the end
    sizes = []
    for cut in cuts:
        path.write_bytes(session[:cut])  # the same inode: appended to
        got, want = incremental(f), whole(path, runs)
        assert got == want
        sizes.append(len(want))
    assert sizes[-1] >= 40 and len(set(sizes)) > 3  # runner steps appeared as it grew, and were measured
    assert f.rebuilds == 0 and f.bytes_read == len(session)  # each byte read once
    unchanged = {r.step.tool_use_id for r in f.runner if r.unchanged}  # printed unchanged: measured, saving 0
    assert len(unchanged) >= 20 and all(d["net_tokens"] == 0 for _, d in got if d["tool_use_id"] in unchanged)
    t = f.timeline
    runner = {r.index for r in f.runner}
    assert all(s.output == "" for i, s in enumerate(t.steps) if i not in runner and s.output is not None)
    assert f.pruned_calls > len(t.calls) // 2 and sum(r.settled for r in f.runner) > len(f.runner) // 2
    assert all(r.run is not None and r.run.raw == "" for r in f.runner if r.settled)  # raw texts not kept


def test_a_truncated_replaced_or_rewritten_file_is_measured_again_from_its_start(session: bytes, runs: Path,
                                                                                 tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    half = session[: session.index(b"\n", len(session) // 2) + 1]
    path.write_bytes(session)
    f = follower(path, runs)
    assert incremental(f) == whole(path, runs) != []
    with path.open("r+b") as fh:  # truncated
        fh.truncate(len(half))
    assert incremental(f) == whole(path, runs) != [] and f.rebuilds == 1
    other = tmp_path / "other.jsonl"  # replaced by another file (a new inode)
    other.write_bytes(session)
    os.replace(other, path)
    assert incremental(f) == whole(path, runs) and f.rebuilds == 2
    path.write_bytes(session.replace(b'"Bash"', b'"Bish"')[:-1] + b" \n")  # rewritten in place, as long
    assert incremental(f) == whole(path, runs) and f.rebuilds == 3


def test_a_late_record_of_an_earlier_call_rebuilds_the_state(session: bytes, runs: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.jsonl"
    lines = session.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:400]))
    f = follower(path, runs)
    assert incremental(f) == whole(path, runs)
    early = next(orjson.loads(x) for x in lines[5:] if orjson.loads(x).get("type") == "assistant")
    early["uuid"] = "late-copy"
    early["message"]["content"] = [{"type": "text", "text": "a late text block"}]
    with path.open("ab") as fh:
        fh.write(orjson.dumps(early) + b"\n" + b"".join(lines[400:]))
    assert incremental(f) == whole(path, runs) and f.rebuilds == 1
    monkeypatch.setattr(follow, "DIGEST_BYTES", 40_000)  # read at once, but settled as it goes: rebuilt too
    f = follower(path, runs)
    assert incremental(f) == whole(path, runs) and f.rebuilds == 1 and not f.stale  # the rebuild drops nothing early


def test_a_changed_log_is_measured_again(traces: Path, tmp_path: Path) -> None:
    path, runs = tmp_path / "s.jsonl", tmp_path / "runs"
    path.write_bytes(runner_transcript(traces, runs))  # logs of its own: one is changed
    f = follower(path, runs)
    assert incremental(f) == whole(path, runs)
    settled = next(r for r in f.runner if r.settled)
    Path(settled.log).write_text("src/changed_module.py:3: error in parse_header_block\n" * 40)
    assert incremental(f) == whole(path, runs) and f.rebuilds == 1
    os.unlink(settled.log)  # a pruned log: no measurement
    got = incremental(f)
    assert got == whole(path, runs) and settled.step.tool_use_id not in {d["tool_use_id"] for _, d in got}
    fresh = follower(path, runs)  # read from the start with that log gone: it keeps nothing open for it
    assert incremental(fresh) == got and next(r for r in fresh.runner if r.log == settled.log).settled


def test_a_runner_result_long_after_its_call_rebuilds_the_state(session: bytes, runs: Path, tmp_path: Path) -> None:
    lines = session.splitlines(keepends=True)
    late = next(i for i, x in enumerate(lines[:200]) if b"[outloop] full output" in x)
    moved = [*lines[:late], *lines[late + 1:], lines[late]]  # the result written after everything else
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"".join(moved[:-1]))
    f = follower(path, runs)
    assert incremental(f) == whole(path, runs) and f.pruned_steps > late // 2  # what its later texts need is dropped
    path.write_bytes(b"".join(moved))
    assert incremental(f) == whole(path, runs) and f.rebuilds == 1


def test_a_measurement_between_a_call_and_its_result_keeps_what_the_result_needs(session: bytes, runs: Path,
                                                                               tmp_path: Path) -> None:
    """Live, the runner's result is written seconds after its tool call: a measurement in between
    must not drop what the coming result's fidelity needs (no rebuild, the same measurements)."""
    lines = session.splitlines(keepends=True)
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"")
    f = follower(path, runs)
    calls = 0
    with path.open("ab") as fh:
        for line in lines:
            fh.write(line)
            fh.flush()
            if b'"name":"Bash"' in line and b'"tool_use"' in line:
                calls += 1
                if calls % 3 == 0:
                    incremental(f)  # the call is written, its result not yet
    assert calls > 60
    assert incremental(f) == whole(path, runs) and f.rebuilds == 0
