"""A routed command never costs the agent tokens: the runner's choice between the output unchanged and its
compact result (``outloop.runner.net``), table-tested, and the real runner on real short and long commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from outloop.agents.calibration import Estimator
from outloop.agents.enforced import agent_view
from outloop.runner import net
from outloop.runner.recorded import printed_for
from tests.unit.runnerkit import bare, only_run, run


@pytest.mark.parametrize(("raw", "compact", "min_saving", "through"), [
    (0, 0, 0, True),  # empty output: nothing to shorten
    (0, 80, 0, True),
    (79, 80, 0, True),  # the footer alone is larger than the output
    (80, 80, 0, True),  # exactly at the threshold: equal cost, printed unchanged
    (81, 80, 0, False),  # one token saved: compact
    (3278, 406, 0, False),
    (130, 80, 50, True),  # saves exactly the configured minimum: not enough
    (131, 80, 50, False),  # saves one more than the minimum
    (10, 80, 50, True),
])
def test_passthrough_unless_the_compact_text_saves_more_than_the_threshold(raw: int, compact: int, min_saving: int,
                                                                          through: bool) -> None:
    assert net.passthrough(raw, compact, min_saving) is through
    assert net.surely_short(raw, compact, min_saving) is through  # the footer is the compact text's lower bound


@pytest.mark.parametrize("chars", [0, 1, 3, 4, 5, 7, 8, 999, 1000, 30_001])
@pytest.mark.parametrize("cpt", [1.0, 3.06, 4.0, 7.5])
def test_tokens_are_the_projects_estimate(chars: int, cpt: float) -> None:
    assert net.tokens(chars, cpt) == Estimator(chars_per_token=cpt).tokens("x" * chars)


@pytest.mark.parametrize(("total", "limit"), [(0, 10), (10, 10), (11, 10), (11, 9), (100_000, 30_000)])
def test_agent_chars_is_the_length_of_claude_codes_cut(total: int, limit: int) -> None:
    text = "y" * total
    assert net.agent_chars(total, limit) == len(agent_view(text, text, total, limit))


@pytest.mark.parametrize(("env", "cpt", "min_saving", "limit"), [
    ({}, 4.0, 0, 30_000),
    ({"OUTLOOP_CHARS_PER_TOKEN": "3.06", "OUTLOOP_RUN_MIN_SAVING_TOKENS": "25", "BASH_MAX_OUTPUT_LENGTH": "5000"},
     3.06, 25, 5000),
    ({"OUTLOOP_CHARS_PER_TOKEN": "0.5", "OUTLOOP_RUN_MIN_SAVING_TOKENS": "-3", "BASH_MAX_OUTPUT_LENGTH": "x"},
     4.0, 0, 30_000),  # out of range or unreadable: the defaults (a bad value never stops a run)
])
def test_settings_come_from_the_environment(env: dict[str, str], cpt: float, min_saving: int, limit: int) -> None:
    s = net.Settings.from_env(env)
    assert (s.chars_per_token, s.min_saving, s.agent_limit) == (cpt, min_saving, limit)


def test_a_recorded_short_output_is_rendered_unchanged_and_a_long_one_compact() -> None:
    """Shadow replay renders with the same rule: what it prices is what a live run prints."""
    short = "On branch main\nnothing to commit, working tree clean\n"
    assert printed_for("git status", short, 0, "git-status", "git-status", env={}) == short
    assert printed_for("true", "", 0, env={}) == ""
    long = "".join(f"line {i}\n" for i in range(3000)) + "src/app.c:12:5: error: something broke\n"
    compact = printed_for("make", long, 2, "generic", "generic", env={})
    assert "src/app.c:12:5: error: something broke" in compact and "[outloop] full output (3001 lines" in compact
    assert len(compact) < len(long) / 10
    # the threshold moves the boundary: a compact text that does not save enough is not printed
    assert printed_for("make", long, 2, "generic", "generic", env={"OUTLOOP_RUN_MIN_SAVING_TOKENS": "1000000"}) == long


def _repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(path)], check=True, timeout=30)
    (path / "notes.txt").write_text("a file git has not seen\n")
    return path


def test_a_short_real_command_prints_exactly_what_it_prints_bare(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    cmd = "git status; git rev-parse --verify HEAD"  # no commit yet: the last command fails with 128
    p = run(cmd, tmp_path / "runs", cwd=repo, family="git-status")
    raw = bare(cmd, cwd=repo)
    assert raw.returncode == 128 and b"notes.txt" in raw.stdout
    assert p.returncode == 128 and p.stdout == raw.stdout and p.stderr == b""  # same bytes, no footer
    meta, log = only_run(tmp_path / "runs")
    assert log == raw.stdout and meta["compact"] is False and meta["printed_bytes"] == len(raw.stdout)
    empty = run("true", tmp_path / "runs2")
    assert empty.returncode == 0 and empty.stdout == b""


def test_a_long_real_command_prints_its_summary_and_footer(tmp_path: Path) -> None:
    tests = "".join(f"    def test_{i}(self):\n        self.assertTrue({i} != 217)\n\n" for i in range(400))
    (tmp_path / "test_many.py").write_text(f"import unittest\n\n\nclass Many(unittest.TestCase):\n{tests}")
    cmd = f"{sys.executable} -m unittest -v test_many"
    p = run(cmd, tmp_path / "runs", cwd=tmp_path, family="unittest")
    meta, log = only_run(tmp_path / "runs")
    out = p.stdout.decode()
    assert p.returncode == 1 and meta["compact"] is True and meta["family"] == "unittest"
    assert "FAIL: test_217 (test_many.Many.test_217)" in out and "Ran 400 tests" in out
    assert out.endswith(net.footer(meta["log"], meta["raw_lines"], meta["raw_bytes"]) + "\n")
    assert len(p.stdout) < len(log) / 5
