"""``outloop wait`` with real processes (and its loop with time passed in), ``outloop run`` through the
installed CLI, and the Python API ``outloop.runner.api.run``."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from outloop.runner.api import run as api_run
from outloop.runner.wait import WaitResult, parse, wait_loop
from tests.unit.runnerkit import runner_env

OUTLOOP = str(Path(sys.executable).with_name("outloop"))


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_wait_loop_returns_on_change_match_and_timeout() -> None:
    outputs = iter([b"pending", b"pending", b"done"])
    clock = FakeClock()
    r = wait_loop(lambda left: (0, next(outputs)), 5, 60, None, clock, clock.sleep)
    assert (r.met, r.reason, r.output, r.checks, r.seconds) == (True, "changed", b"done", 3, 10)
    clock = FakeClock()
    r = wait_loop(lambda left: (0, b"same"), 5, 12, None, clock, clock.sleep)
    assert (r.met, r.reason, r.checks, r.seconds) == (False, "timed out", 4, 12)
    clock = FakeClock()
    states = iter([b"build 1 running", b"build 1 passed"])
    r = wait_loop(lambda left: (0, next(states)), 1, 60, re.compile(rb"passed|failed"), clock, clock.sleep)
    assert (r.met, r.reason, r.checks) == (True, "matched", 2)
    clock = FakeClock()
    codes = iter([1, 0])
    r = wait_loop(lambda left: (next(codes), b""), 1, 60, None, clock, clock.sleep)
    assert r.reason == "changed" and r.exit_code == 0  # the exit code is part of the state


def test_wait_parse() -> None:
    assert parse(["--", "git status"]) == (5.0, 600.0, None, "git status")
    every, timeout, until, cmd = parse(["--every", "2", "--timeout", "30", "--until", "ok$", "--", "a", "b c"])  # type: ignore[misc]
    assert (every, timeout, cmd) == (2.0, 30.0, "a 'b c'") and until is not None and until.search(b"x\nok\n")
    assert parse(["--every", "0", "--", "x"]) is None and parse(["--until", "(", "--", "x"]) is None
    assert parse(["git", "status"]) is None and parse(["--"]) is None


def test_outloop_wait_returns_when_a_real_file_changes(tmp_path: Path) -> None:
    state, seen = tmp_path / "state", tmp_path / "seen"
    state.write_text("running\n")
    proc = subprocess.Popen([OUTLOOP, "wait", "--every", "0.1", "--timeout", "60", "--", f"cat {state}; touch {seen}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not seen.exists() and time.monotonic() < deadline:  # the first check has run
        time.sleep(0.02)
    state.write_text("finished: 3 passed\n")
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert lines[0] == "finished: 3 passed" and "running" not in out.decode()  # only the final state
    assert lines[1].startswith("[outloop] wait: changed after ")


def test_outloop_wait_until_and_timeout(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    cmd = f"echo x >> {counter}; echo checks: $(wc -l < {counter})"
    p = subprocess.run([OUTLOOP, "wait", "--every", "0.05", "--timeout", "20", "--until", "checks: 3$", "--", cmd],
                       capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stdout.decode().startswith("checks: 3\n[outloop] wait: matched")
    t0 = time.monotonic()
    p = subprocess.run([OUTLOOP, "wait", "--every", "0.2", "--timeout", "1", "--", "echo same"],
                       capture_output=True, timeout=30)
    assert p.returncode == 1 and b"[outloop] wait: timed out after 1." in p.stdout
    assert time.monotonic() - t0 < 30  # one-second time-out; the rest is start-up on a loaded machine
    slow = subprocess.run([OUTLOOP, "wait", "--timeout", "0.5", "--", "sleep 30"], capture_output=True, timeout=30)
    assert slow.returncode == 1 and b"cut at the time-out" in slow.stdout
    bad = subprocess.run([OUTLOOP, "wait", "--every", "-1", "--", "true"], capture_output=True, timeout=30)
    assert bad.returncode == 2


def test_outloop_run_cli(tmp_path: Path) -> None:
    env = runner_env(tmp_path / "runs")
    p = subprocess.run([OUTLOOP, "run", "--", "echo", "a  b"], capture_output=True, env=env, timeout=30)
    assert p.returncode == 0 and p.stdout == b"a  b\n"
    p = subprocess.run([OUTLOOP, "run", "--family", "pytest", "--", "printf 'x\\n'; exit 7"], capture_output=True,
                       env=env, timeout=30)
    assert p.returncode == 7 and p.stdout.startswith(b"x\n")


def test_api_run(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    env = runner_env(tmp_path / "runs", OUTLOOP_RUN_MAX_LINES="20")
    r = api_run("pwd; seq 1 300; echo 'lib/x.py:3: error: bad' >&2; exit 2", cwd=tmp_path / "w", env=env)
    assert r.exit_code == 2 and r.kind == "generic" and r.family == "generic"
    assert "lib/x.py:3: error: bad" in r.summary and r.failures == ["lib/x.py:3"]
    assert r.log_path is not None and Path(r.log_path).read_text().startswith(str(tmp_path / "w"))
    assert r.raw_bytes == len(Path(r.log_path).read_bytes()) and r.printed_bytes > 0
    short = api_run("echo hi", env=env)
    assert short.exit_code == 0 and short.summary.startswith("hi\n") and short.kind is None
    # a failed test run short enough to be printed unchanged still names its failing tests
    (tmp_path / "w" / "test_calc.py").write_text(
        "import unittest\n\n\nclass AddTest(unittest.TestCase):\n    def test_add(self):\n"
        "        self.assertEqual(2 - 3, 5)\n\n\nif __name__ == '__main__':\n    unittest.main()\n")
    failed = api_run(f"{sys.executable} -m unittest test_calc", cwd=tmp_path / "w", env=env)
    assert failed.exit_code == 1 and failed.kind is None and "FAILED (failures=1)" in failed.summary
    assert failed.failures == ["FAIL: test_add (test_calc.AddTest.test_add)"], failed.failures
    broken = api_run("echo passed through", env=runner_env(Path("/proc/no-such-dir/runs")))
    assert broken.exit_code == 0 and broken.log_path is None and broken.summary.startswith("passed through\n")
    assert isinstance(WaitResult(True, "changed", b"", 0, 1, 0.0).met, bool)
