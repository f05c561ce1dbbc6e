"""The runner's pure parts: the generic summariser (lines and log file give the same result; huge,
binary, ANSI, repeats), log decoding, retention with time passed in, the metadata JSON, argv reading."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from outloop.runner import runlog
from outloop.runner.argv import simple_commands
from outloop.runner.compact import clean, log_lines, summarise
from outloop.runner.families import generic
from outloop.runner.families.base import Limits
from outloop.runner.run import parse

LIMITS = Limits()


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


OUTPUTS = {
    "plain": b"".join(b"line %d\n" % i for i in range(1000)),
    "problems": b"".join(b"step %d ok\n" % i for i in range(500)) + b"src/a.c:12:5: error: bad thing\n" * 3
    + b"warning: deprecated\n" + b"0 errors, no warnings\n" + b"".join(b"more %d\n" % i for i in range(100)),
    "ansi": b"\x1b[1mstart\x1b[0m\n" * 40 + b"\x1b[31merror\x1b[0m: colour \x1b]8;;http://x\x07link\x1b]8;;\x07\n"
    + b"tail\n" * 40,
    "progress": b"".join(b"progress %d%%\r" % i for i in range(100)) + b"done\n" + b"x\n" * 60,
    "no-final-newline": b"a\n" * 100 + b"fatal: last line",
    "long-lines": (b"y" * 200_000 + b"\n") * 3 + b"error: after long lines\n" + b"z\n" * 50,
    "latin1": b"caf\xe9\n" * 60 + b"failed: \xff\xfe\n" + b"end\n" * 40,
    "short": b"a\nb\n",
}


@pytest.mark.parametrize("name", list(OUTPUTS))
@pytest.mark.parametrize("limits", [LIMITS, Limits(head_lines=3, tail_lines=2, max_failures=2)])
def test_generic_same_result_from_lines_and_from_the_log(tmp_path: Path, name: str, limits: Limits) -> None:
    log = write(tmp_path / "x.log", OUTPUTS[name])
    assert generic.summarise("cmd", log_lines(log), 1, limits) == generic.summarise_log(log, 1, limits)


def test_generic_keeps_problems_and_counts_the_rest(tmp_path: Path) -> None:
    c = generic.summarise_log(write(tmp_path / "x.log", OUTPUTS["problems"]), 2, LIMITS)
    assert "501: src/a.c:12:5: error: bad thing (x3)" in c.text and "504: warning: deprecated" in c.text
    assert "0 errors, no warnings" not in c.text.split("--- ")[1]  # not a problem line
    assert c.failures == ["src/a.c:12"] and c.omitted_lines > 400
    assert c.text.startswith("[outloop] 605 lines, exit 2: the first 15, the last 15")
    capped = generic.summarise_log(write(tmp_path / "y.log", b"x\n" * 20 + b"".join(
        b"error %d\n" % i for i in range(50)) + b"y\n" * 20), 1, Limits(max_failures=10))
    assert "and 40 more (not listed here; grep the log)" in capped.text


def test_generic_on_ansi_progress_and_long_lines(tmp_path: Path) -> None:
    ansi = generic.summarise_log(write(tmp_path / "a.log", OUTPUTS["ansi"]), 0, LIMITS).text
    assert "41: error: colour link" in ansi and "\x1b" not in ansi
    prog = generic.summarise_log(write(tmp_path / "p.log", OUTPUTS["progress"]), 0, LIMITS).text
    assert prog.splitlines()[1] == "done"
    long = generic.summarise_log(write(tmp_path / "l.log", OUTPUTS["long-lines"]), 0, LIMITS).text
    assert "error: after long lines" in long and len(long) < 5000 and "more chars]" in long


def test_binary_output_is_not_shown(tmp_path: Path) -> None:
    log = write(tmp_path / "b.log", bytes(range(256)) * 100)
    c = summarise("cat blob", log, 0, LIMITS, None)
    assert c.text.startswith("[outloop] binary output (25600 bytes") and c.family == "generic"


def test_a_family_that_fails_falls_back_to_generic(tmp_path: Path) -> None:
    log = write(tmp_path / "x.log", b"no pytest here\n" * 300)
    c = summarise("pytest -q", log, 1, LIMITS, None)  # pytest declines: generic
    assert c.family == "generic"
    c = summarise("whatever", log, 1, LIMITS, "no-such-family")
    assert c.family == "generic"


def test_clean() -> None:
    assert clean("\x1b[31mred\x1b[0m\n") == "red"
    assert clean("10%\r50%\r100%\r\n") == "100%"
    assert clean("a\r\n") == "a"


def test_prune_by_age_and_size(tmp_path: Path) -> None:
    now = 1_000_000_000.0
    day = 86400
    for i, (age, size) in enumerate([(10 * day, 100), (3 * day, 300), (2 * day, 300), (1 * day, 300), (0, 300)]):
        for ext in ("log", "json"):
            p = tmp_path / f"run{i}.{ext}"
            p.write_bytes(b"x" * (size if ext == "log" else 10))
            os.utime(p, (now - age, now - age))
    (tmp_path / ".pruned").write_text("")
    removed = runlog.prune(str(tmp_path), now, keep_days=7, keep_bytes=700, keep=frozenset({"run1"}))
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    # run0 is too old; then the oldest until the rest fit in 700 bytes, never run1 (kept)
    assert left == ["run1.json", "run1.log", "run4.json", "run4.log"]
    assert removed == 6 and (tmp_path / ".pruned").exists()


def test_prune_runs_at_most_once_a_minute(tmp_path: Path) -> None:
    env = {"OUTLOOP_RUNS_DIR": str(tmp_path), "OUTLOOP_RUNS_KEEP_DAYS": "1"}
    old = tmp_path / "old.log"
    old.write_text("x")
    os.utime(old, (0, 0))
    now = 10 * 86400.0
    assert runlog.maybe_prune(env, frozenset(), now=now) == 1
    old.write_text("x")
    os.utime(old, (0, 0))
    assert runlog.maybe_prune(env, frozenset(), now=now + 30) == 0  # 30 s later: not due
    assert runlog.maybe_prune(env, frozenset(), now=now + 61) == 1


def test_meta_json_round_trips_any_text(tmp_path: Path) -> None:
    meta: dict[str, object] = {"command": 'a "b" \\ \t\n é 😀 \udcff', "n": 3, "x": 1.5, "ok": True, "none": None,
                               "list": ["a", "b\x00"]}
    path = str(tmp_path / "m.json")
    runlog.write_meta(path, meta)
    assert json.loads(Path(path).read_text()) == meta
    assert not list(tmp_path.glob("*.tmp"))


def test_run_ids_sort_by_time() -> None:
    a, b = runlog.new_run_id(1_000.0), runlog.new_run_id(2_000.5)
    assert a < b and b.startswith("19700101T003320500Z-")


def test_runner_command_line() -> None:
    opts = parse(["--outloop-run", "--family", "pytest", "--rule", "r1", "--", "pytest -q"])
    assert opts is not None and (opts.command, opts.family, opts.rule) == ("pytest -q", "pytest", "r1")
    joined = parse(["--outloop-run", "--", "echo", "a b"])
    assert joined is not None and joined.command == "echo 'a b'"
    assert parse(["--outloop-run", "pytest"]) is None and parse(["--bogus", "--", "x"]) is None


def test_simple_commands() -> None:
    assert simple_commands("cd app && FOO=1 uv run python -m pytest -q | tee out") == [
        ["cd", "app"], ["pytest", "-q"], ["tee", "out"]]
    assert simple_commands("sudo -u x env A=1 timeout -s KILL 60 npx jest --ci") == [["jest", "--ci"]]
    assert simple_commands("/usr/bin/python3.11 -m unittest discover") == [["unittest", "discover"]]
    assert simple_commands("time nice -n 5 /opt/bin/cargo test; echo done") == [["cargo", "test"], ["echo", "done"]]
    assert simple_commands("echo 'unclosed") == []


def test_generic_search_budget_says_what_was_not_searched(tmp_path: Path) -> None:
    log = write(tmp_path / "x.log", b"ok\n" * 100 + b"error: late\n" + b"ok\n" * 100)
    full = generic.summarise_log(log, 1, LIMITS, budget=60)
    assert "101: error: late" in full.text and "not searched" not in full.text
    spent = generic.summarise_log(log, 1, LIMITS, budget=0)
    assert "lines from 1 on were not searched for errors" in spent.text and "error: late" not in spent.text
    assert spent.text.startswith("[outloop] 201 lines")


def test_a_structured_family_out_of_time_falls_back_to_generic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"".join(b"test_a.py::test_%d PASSED\n" % i for i in range(10000)) + b"1 failed, 9999 passed in 3.0s\n"
    log = write(tmp_path / "x.log", body)
    assert summarise("pytest -v", log, 1, LIMITS, None).family == "pytest"
    monkeypatch.setenv("OUTLOOP_RUN_SCAN_SECONDS", "0")
    spent = summarise("pytest -v", log, 1, LIMITS, None)
    assert spent.family == "generic" and "not searched for errors" in spent.text
