"""Live savings of enforced decisions: the real runner's log against what it printed, in a transcript
(agents.enforced, outloop.router.measure). Table tests for the footer and Claude Code's cut; the real
runner on a real pytest project for the measurement; the measurer's schedule on a real file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from outloop.agents.calibration import Estimator
from outloop.agents.enforced import RunLog, agent_view, log_path, measure
from outloop.agents.pricing import PriceTable
from outloop.agents.timeline import build_timeline
from outloop.router.measure import Measurer, load_run, measure_file, measure_paths
from outloop.router.state import decision_id
from outloop.runner.rewrite import run_id_for, runner_command, with_run_id
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import iter_paths

SONNET = "claude-sonnet-4-5-20250929"
PROJECT = "import pytest\n\n\n@pytest.mark.parametrize('n', range(40))\ndef test_ok(n):\n    assert n >= 0\n\n\n" \
          "def test_total_is_right():\n    assert 2 + 2 == 5, 'two and two'\n"


@pytest.mark.parametrize(("output", "path"), [
    ("ok\n[outloop] log: /h/runs/20261206T1-1-a.log\n", "/h/runs/20261206T1-1-a.log"),
    ("FAILED x\n[outloop] full output (120 lines, 9000 bytes): /h/runs/r2.log\n[outloop] see more: grep -n P LOG",
     "/h/runs/r2.log"),
    ("[outloop] output passed through unchanged: no log (disk full)\n", None),  # no log: nothing to measure
    ("cat notes.txt: [outloop] log: is a string here\n", None),  # not the runner's line
    ("plain output\n", None),
    (None, None),
])
def test_the_footer_names_the_runners_log(output: str | None, path: str | None) -> None:
    assert log_path(output) == path


@pytest.mark.parametrize(("total", "limit", "want"), [
    (10, 30, "abcdefghij"),  # fits: all of it
    (100, 10, "abcde\nVWXYZ"),  # Claude Code keeps the first and last halves
])
def test_agent_view_cuts_like_claude_code(total: int, limit: int, want: str) -> None:
    assert agent_view("abcdefghij", "QRSTUVWXYZ", total, limit) == want


def _call(mid: str, ctx: int, tools: list[tuple[str, str, dict[str, Any]]] = (),  # type: ignore[assignment]
          text: str = "") -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "tool_use", "id": t, "name": n, "input": i} for t, n, i in tools]
    if text:
        content.append({"type": "text", "text": text})
    return {"type": "assistant", "sessionId": "s-live", "uuid": f"u-{mid}", "requestId": f"r-{mid}",
            "timestamp": "2026-12-06T10:00:00Z",
            "message": {"id": mid, "model": SONNET, "content": content,
                        "usage": {"input_tokens": 3, "cache_read_input_tokens": ctx - 3,
                                  "cache_creation_input_tokens": 0, "output_tokens": 40}}}


def _result(tid: str, text: str) -> dict[str, Any]:
    return {"type": "user", "sessionId": "s-live", "uuid": f"res-{tid}",
            "message": {"content": [{"type": "tool_result", "tool_use_id": tid, "content": text}]}}


def _session(printed: str, used: str, later_calls: int = 2) -> list[dict[str, Any]]:
    """The agent runs pytest (rewritten), reads what ``used`` names, then ``later_calls`` more calls."""
    records = [_call("m0", 20_000, [("t1", "Bash", {"command": "pytest -v"})]), _result("t1", printed),
               _call("m1", 22_000, [("t2", "Read", {"file_path": "test_calc.py"})], text=f"{used} fails."),
               _result("t2", "source")]
    records += [_call(f"m{i}", 22_100 + i) for i in range(2, 2 + later_calls)]
    return records


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One real pytest run through the real runner (as the router rewrites it), shared by the tests."""
    tmp_path = tmp_path_factory.mktemp("run")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "test_calc.py").write_text(PROJECT)
    home = tmp_path / "home"
    env = {**os.environ, "OUTLOOP_HOME": str(home), "OUTLOOP_RUN_MAX_LINES": "20",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("OUTLOOP_RUNS_DIR", None)
    cmd = runner_command("pytest -v -p no:cacheprovider", family="pytest", rule="pytest")
    done = subprocess.run(["bash", "-c", cmd], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    return done, home


def test_an_enforced_run_is_measured_from_the_real_runners_log(
        real_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, home = real_run
    assert done.returncode == 1
    printed = done.stdout + done.stderr
    (log,) = (home / "runs").glob("*.log")
    assert log_path(printed) == str(log)
    run = load_run(str(log))
    assert run is not None and (run.rule, run.family, run.kind) == ("pytest", "pytest", "structured")
    assert run.raw == log.read_text() and run.run_id == log.stem
    timeline = build_timeline(_session(printed, "test_calc.py::test_total_is_right"), "ctx")
    est, prices = Estimator(), PriceTable.default()
    (m,) = measure(timeline, load_run, est, prices)
    assert (m.session_id, m.tool_use_id) == ("s-live", "t1")
    assert m.fidelity.used >= 1 and m.fidelity.value == 1.0  # the failing test id was kept
    sv = m.saving
    assert sv.raw_tokens == est.tokens(log.read_text()) > sv.compact_tokens == est.tokens(printed)
    assert sv.carry_calls == 3  # calls m1, m2, m3 re-read the result
    assert sv.net_tokens == (sv.raw_tokens - sv.compact_tokens) * 3 and not sv.lost
    rates = prices.lookup(SONNET)[1].rates  # type: ignore[index]
    once = sv.raw_tokens - sv.compact_tokens
    assert sv.net_usd == round(once * (rates.cache_write_5m + 2 * rates.cache_read) / 1e6, 8)


def test_a_string_the_compact_result_dropped_is_charged() -> None:
    raw = "collected 3 items\nsrc/deep_module.py:12: NameError in parse_header_block\n" + "ok\n" * 50
    printed = "1 error\n[outloop] full output (52 lines, 300 bytes): /r/x.log\n"
    timeline = build_timeline(_session(printed, "parse_header_block"), "ctx")
    (m,) = measure(timeline, lambda p: RunLog("x", raw, "pytest", "pytest", "structured"), Estimator(),
                   PriceTable.default())
    assert m.fidelity.value == 0.0 and m.saving.lost
    est = Estimator()
    assert m.saving.net_tokens == -(22_000 + est.tokens(printed) * 3)  # the extra turn, the compact text carried


def test_a_pruned_log_is_not_measured(tmp_path: Path) -> None:
    printed = f"[outloop] log: {tmp_path}/gone.log\n"
    timeline = build_timeline(_session(printed, "x"), "ctx")
    assert measure(timeline, load_run, Estimator(), PriceTable.default()) == []


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def test_the_measurer_publishes_a_measurement_once_and_again_when_it_grows(
        tmp_path: Path, real_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, home = real_run
    printed = done.stdout + done.stderr
    transcript = tmp_path / "s-live.jsonl"
    records = _session(printed, "test_total_is_right", later_calls=0)
    _write(transcript, records)
    m = Measurer(PriceTable.default())
    m.note(str(transcript), list(iter_paths([transcript], ImportStats())), now=0.0)  # what the tailer read
    (first,) = m.due(0.0)
    assert first.data["decision_id"] == decision_id("s-live", "t1", 0)
    (log,) = (home / "runs").glob("*.log")
    assert (first.data["basis"], first.data["carry_calls"], first.data["run_id"]) == ("measured", 1, log.stem)
    m.acked([first])
    m.note(str(transcript), [], now=1.0)
    assert m.due(2.0) == []  # at most one measurement per file every `every` seconds
    assert m.due(20.0) == []  # measured again: unchanged, nothing to publish
    _write(transcript, [*records, _call("m9", 23_000)])  # the session goes on: the carry grows
    m.note(str(transcript), [], now=21.0)
    (second,) = m.due(40.0)
    assert second.data["carry_calls"] == 2 and second.id != first.id
    m.failed()  # not acknowledged: measured again at the next pass, whatever the clock
    assert [e.id for e in m.due(40.5)] == [second.id]
    assert measure_file(transcript) == measure_file(transcript)  # the same file, the same events
    other = tmp_path / "sub" / "plain.jsonl"  # a transcript without any runner result is not measured
    other.parent.mkdir()
    _write(other, _session("plain output", "x"))
    assert [e.id for e in measure_paths([tmp_path])] == [e.id for e in measure_file(transcript)] != []


def test_a_file_without_runner_results_is_never_read(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jsonl"
    _write(plain, _session("plain output", "x"))
    m = Measurer()
    m.note(str(plain), list(iter_paths([plain], ImportStats())), now=0.0)
    assert m.due(0.0) == [] and m.files == {}


@pytest.mark.parametrize(("tool_use_id", "run_id"), [
    ("toolu_01AbC-9", "tu-toolu_01AbC-9"), (None, None), ("", None), ("../etc", None), ("a b", None),
    ("x" * 129, None)])
def test_a_run_is_named_after_its_tool_call_when_the_id_is_a_plain_name(tool_use_id: str | None,
                                                                          run_id: str | None) -> None:
    assert run_id_for(tool_use_id) == run_id


def test_a_run_printed_unchanged_is_measured_as_saving_nothing(tmp_path: Path) -> None:
    """The router names the run after the tool call; the runner prints the short output exactly (no
    footer); the tailer still finds the run and measures it: net 0, never a cost."""
    home = tmp_path / "home"
    env = {**os.environ, "OUTLOOP_HOME": str(home)}
    env.pop("OUTLOOP_RUNS_DIR", None)
    cmd = with_run_id(runner_command("printf 'src/calc.py:3 needs a look\\n'; exit 1", "generic", "generic"),
                      "tu-t1")
    done = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == "src/calc.py:3 needs a look\n" and log_path(done.stdout) is None
    transcript = tmp_path / "s-live.jsonl"
    _write(transcript, _session(done.stdout, "src/calc.py:3"))
    runs = str(home / "runs")
    (m,) = measure_file(transcript, PriceTable.default(), runs=runs)
    d = m.data
    assert (d["basis"], d["run_id"], d["rule"], d["decision_id"]) == ("measured", "tu-t1", "generic",
                                                                       decision_id("s-live", "t1", 0))
    assert d["raw_tokens"] == d["compact_tokens"] > 0 and d["carry_calls"] == 3
    assert d["net_tokens"] == 0 and d["net_usd"] == 0 and d["charged_tokens"] == 0
    watcher = Measurer(PriceTable.default(), runs=runs)  # the tailer watches the file for that result alone
    watcher.note(str(transcript), list(iter_paths([transcript], ImportStats())), now=0.0)
    assert [e.id for e in watcher.due(0.0)] == [m.id]
    assert measure_file(transcript, PriceTable.default(), runs=str(tmp_path / "elsewhere")) == []  # no run: none
