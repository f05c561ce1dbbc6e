"""The runner as the agent meets it: the real entry file run as a process on real commands (exit codes,
signals, stdin, the log and metadata files, thresholds, and failing open on outloop's side)."""

from __future__ import annotations

import json
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from outloop.runner.rewrite import runner_command
from tests.unit.runnerkit import bare, only_run, run, runner_env


def test_short_output_is_printed_exactly_and_logged(tmp_path: Path) -> None:
    cmd = "echo out; echo err >&2; printf 'no newline'; exit 3"
    p = run(cmd, tmp_path / "runs")
    raw = bare(cmd).stdout
    meta, log = only_run(tmp_path / "runs")
    assert p.returncode == 3
    assert p.stdout == raw  # nothing added: a line naming the log would cost more than the output
    assert log == raw
    assert meta["exit_code"] == 3 and meta["signal"] is None and meta["compact"] is False
    assert meta["raw_bytes"] == len(raw) and meta["raw_lines"] == 3
    assert meta["printed_bytes"] == len(p.stdout) and meta["command"] == cmd


def test_exit_codes_are_the_commands_own(tmp_path: Path) -> None:
    missing = run("no-such-command-xyz", tmp_path / "a")
    assert missing.returncode == 127 and b"no-such-command-xyz: command not found" in missing.stdout
    killed = run("kill -9 $$", tmp_path / "b")
    assert killed.returncode == 128 + 9
    meta, _ = only_run(tmp_path / "b")
    assert meta["signal"] == 9 and meta["exit_code"] == 137
    assert run("exit 0", tmp_path / "c").returncode == 0


def test_stdin_cwd_and_environment_reach_the_command(tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    p = run('cat; pwd; echo "$OUTLOOP_TEST_VAR"', tmp_path / "runs", cwd=tmp_path / "here", stdin=b"from stdin\n",
            OUTLOOP_TEST_VAR="value")
    assert p.stdout.splitlines()[:3] == [b"from stdin", str(tmp_path / "here").encode(), b"value"]


def test_long_output_is_compacted_and_the_log_keeps_every_byte(tmp_path: Path) -> None:
    cmd = "seq 1 3000; echo 'src/app.c:12:5: error: something broke' >&2; seq 3001 6000"
    p = run(cmd, tmp_path / "runs")
    meta, log = only_run(tmp_path / "runs")
    assert p.returncode == 0
    assert log == bare(cmd).stdout
    out = p.stdout.decode()
    assert meta["compact"] is True and meta["family"] == "generic" and meta["printed_bytes"] == len(p.stdout)
    assert "src/app.c:12:5: error: something broke" in out and meta["failures"] == ["src/app.c:12"]
    assert out.splitlines()[1] == "1" and "6000" in out.splitlines()[-3]
    assert meta["log"] in out and len(p.stdout) < len(log) / 5


def test_thresholds_come_from_the_environment(tmp_path: Path) -> None:
    cmd = "seq 1 500"
    assert run(cmd, tmp_path / "a", OUTLOOP_RUN_MAX_LINES="1000").stdout == bare(cmd).stdout  # within: as is
    assert run(cmd, tmp_path / "b").stdout.startswith(b"[outloop] 500 lines")  # default: 100 lines
    wide = "seq 1 2000"  # 8,893 bytes: within the default 2,500 tokens (about 10,000 bytes)
    assert run(wide, tmp_path / "c", OUTLOOP_RUN_MAX_LINES="5000").stdout == bare(wide).stdout
    tokens = run(wide, tmp_path / "e", OUTLOOP_RUN_MAX_LINES="5000", OUTLOOP_RUN_MAX_TOKENS="1000").stdout
    assert tokens.startswith(b"[outloop] 2000 lines")
    assert run(cmd, tmp_path / "d", OUTLOOP_RUN_MAX_LINES="not-a-number").stdout.startswith(b"[outloop] 500")
    # past the thresholds the two texts decide: a summary that does not save enough tokens is not printed
    assert run(cmd, tmp_path / "f", OUTLOOP_RUN_MIN_SAVING_TOKENS="100000").stdout == bare(cmd).stdout
    blank = "yes '' | head -n 300"  # 300 lines, 300 bytes: shorter than the footer alone
    assert run(blank, tmp_path / "g").stdout == bare(blank).stdout


def test_sigterm_is_forwarded_to_the_whole_command(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    cmd = f"sleep 60 & sleep 61 & touch {marker}; wait"
    argv = shlex.split(runner_command(cmd))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=runner_env(tmp_path / "runs"))
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 10  # at once (a generous bound for a loaded machine); sleep 60 would take 60
    assert proc.returncode == 128 + signal.SIGTERM
    pgrep = subprocess.run(["pgrep", "-f", "sleep 6[01]$"], capture_output=True, text=True)
    assert pgrep.stdout.strip() == "", "the command's background children survived"


def test_unwritable_log_folder_passes_the_output_through(tmp_path: Path) -> None:
    runs = tmp_path / "not-a-dir"
    runs.write_text("a file where the runs folder should be")
    cmd = "seq 1 5000; exit 4"
    p = run(cmd, runs)
    assert p.returncode == 4
    raw = bare(cmd).stdout
    assert p.stdout.startswith(raw)
    assert p.stdout[len(raw):].startswith(b"[outloop] output passed through unchanged: no log")


def test_full_disk_mid_output_gives_every_byte(tmp_path: Path) -> None:
    """The log stops taking bytes at 64 KiB (a file size limit, as a full disk fails a write): the
    first part is read back from the log and the rest streamed, so the caller gets the whole output."""
    cmd = "seq 1 100000; echo done >&2; exit 5"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    p = run(cmd, tmp_path / "runs", preexec=limit)
    raw = bare(cmd).stdout
    assert p.returncode == 5
    assert p.stdout.startswith(raw), (len(p.stdout), len(raw))
    assert b"passed through unchanged" in p.stdout[len(raw):]


def test_binary_and_invalid_utf8(tmp_path: Path) -> None:
    short = "printf 'a\\0b\\xff\\xfe\\n'"
    p = run(short, tmp_path / "a")
    assert p.stdout.startswith(bare(short).stdout)  # short binary output: unchanged, byte for byte
    big = "head -c 300000 /dev/urandom; printf '\\0'"
    p = run(big, tmp_path / "b")
    meta, log = only_run(tmp_path / "b")
    assert p.returncode == 0 and len(log) == 300001 and b"binary output (300001 bytes" in p.stdout
    latin = "for i in $(seq 1 400); do printf 'caf\\xe9 line %d\\n' $i; done; printf 'fatal: broken \\xff\\n' >&2"
    p = run(latin, tmp_path / "c")
    out = p.stdout.decode()
    assert "caf\ufffd line 1" in out and "fatal: broken \ufffd" in out


def test_ansi_colours_are_stripped_in_the_compact_result(tmp_path: Path) -> None:
    cmd = "seq 1 300; printf '\\033[31merror\\033[0m: \\033[1mbad.py:3\\033[0m went wrong\\n'; seq 1 300"
    p = run(cmd, tmp_path / "runs")
    assert "error: bad.py:3 went wrong" in p.stdout.decode() and b"\x1b[" not in p.stdout


def test_huge_output_streams_to_the_log_in_bounded_memory(tmp_path: Path) -> None:
    """30 MB of output: the runner's peak RSS stays far below it (measured with wait4)."""
    cmd = "yes 'a line of output that repeats' | head -c 30000000; echo 'error: the end' >&2"
    argv = shlex.split(runner_command(cmd))
    # a small launcher forks the runner and reports its peak: a child forked straight from this
    # (large, late in a full run) test process would count this process's pages in its own peak
    launcher = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execv(sys.argv[1], sys.argv[1:])\n"
                "_, status, usage = os.wait4(pid, 0)\nsys.stderr.write(str(usage.ru_maxrss))\n"
                "sys.exit(os.waitstatus_to_exitcode(status))")
    proc = subprocess.run([sys.executable, "-c", launcher, *argv], capture_output=True,
                          env=runner_env(tmp_path / "runs"), timeout=120)
    meta, _ = only_run(tmp_path / "runs")
    assert proc.returncode == 0 and meta["raw_bytes"] == 30_000_015
    assert len(proc.stdout) < 20_000
    peak_kib = int(proc.stderr.decode().strip().splitlines()[-1])
    assert peak_kib < 40 * 1024, f"peak RSS {peak_kib} KiB"


def test_metadata_is_valid_json_for_any_command(tmp_path: Path) -> None:
    cmd = 'echo "quotes \\" back\\\\slash tab\t é 😀"'
    run(cmd, tmp_path / "runs")
    meta, _ = only_run(tmp_path / "runs")
    assert meta["command"] == cmd
    assert json.loads(Path(meta["log"]).with_suffix(".json").read_text()) == meta


def test_a_bad_command_line_runs_nothing(tmp_path: Path) -> None:
    argv = shlex.split(runner_command("true"))[:-2]  # no "-- COMMAND"
    p = subprocess.run(argv, capture_output=True, env=runner_env(tmp_path / "runs"))
    assert p.returncode == 2 and b"usage" in p.stderr


def test_a_broken_install_still_runs_the_command(tmp_path: Path) -> None:
    """main.py alone, without the package beside it: the import fails and bash runs the command."""
    import shutil
    import sys

    from outloop.runner.rewrite import runner_path

    lone = tmp_path / "outloop" / "runner"
    lone.mkdir(parents=True)
    shutil.copy(runner_path(), lone / "main.py")
    cmd = "echo out; echo err >&2; exit 6"
    p = subprocess.run([sys.executable, "-I", "-S", str(lone / "main.py"), "--outloop-run", "--", cmd],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=runner_env(tmp_path / "runs"))
    assert p.returncode == 6 and p.stdout == b"out\nerr\n"
    assert not (tmp_path / "runs").exists()


# What a bare ``python -I -S`` start does not import and the runner may: its own modules and the few
# stdlib ones they need. Anything else (``typing`` through the package's ``__init__`` cost 10 ms and
# took the runner to 2.7x a bare start) fails here before a benchmark notices.
RUNNER_IMPORTS = {"__future__", "_collections_abc", "_stat", "genericpath", "os", "posixpath", "select", "stat",
                  "outloop", "outloop.runner", "outloop.runner.run", "outloop.runner.core", "outloop.runner.runlog",
                  "outloop.runner.net"}


def _imported(argv: list[str], tmp_path: Path) -> set[str]:
    p = subprocess.run([sys.executable, "-X", "importtime", "-I", "-S", *argv], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path, env=runner_env(tmp_path))
    return {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}


def test_the_runner_imports_nothing_a_short_run_does_not_need(tmp_path: Path) -> None:
    argv = shlex.split(runner_command("true"))[1:]  # without the interpreter
    extra = _imported(argv, tmp_path) - _imported(["-c", "pass"], tmp_path)
    assert extra <= RUNNER_IMPORTS, sorted(extra - RUNNER_IMPORTS)
