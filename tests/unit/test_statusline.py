"""The status-line command run as Claude Code runs it (the installed command line, a real status-line
JSON on stdin): one line, exit 0 whatever the input, the snapshot spooled as a ``Status`` event."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from outloop.hooks_install import HooksFileError, install_statusline
from outloop.streams.spool import Spool
from outloop.streams.statusline import FALLBACK, render, statusline_command

STATUS = {
    "hook_event_name": "Status", "session_id": "0b4c2f7e-5f1e-4a8e-9d0c-1c2b3a4d5e6f",
    "transcript_path": "/home/user/.claude/projects/demo/0b4c2f7e.jsonl", "cwd": "/home/user/demo",
    "model": {"id": "claude-opus-4-5", "display_name": "Opus 4.5"}, "version": "2.1.0",
    "cost": {"total_cost_usd": 1.25}, "rate_limits": {
        "five_hour": {"used_percentage": 42.4, "resets_at": int(time.time()) + 3600 + 1200},
        "seven_day": {"used_percentage": 13.0, "resets_at": "2099-01-10T09:00:00Z"}}}


def run(stdin: bytes, home: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "OUTLOOP_HOME": str(home), "OUTLOOP_SPOOL": str(home / "spool")}
    return subprocess.run(shlex.split(statusline_command()), input=stdin, capture_output=True, env=env,
                          timeout=30)


def test_official_figures_are_printed_and_spooled(tmp_path: Path) -> None:
    proc = run(json.dumps(STATUS).encode(), tmp_path)
    assert proc.returncode == 0
    line = proc.stdout.decode()
    assert line.startswith("outloop: 5h 42% official resets 1h") and "7d 13% official" in line
    assert line.count("\n") == 1
    records = Spool(str(tmp_path / "spool")).ready()
    assert len(records) == 1
    assert json.loads(Spool(str(tmp_path / "spool")).read(records[0]).raw) == STATUS


def test_a_status_without_event_name_is_spooled_as_status(tmp_path: Path) -> None:
    payload = {k: v for k, v in STATUS.items() if k != "hook_event_name"}
    assert run(json.dumps(payload).encode(), tmp_path).returncode == 0
    spool = Spool(str(tmp_path / "spool"))
    assert json.loads(spool.read(spool.ready()[0]).raw)["hook_event_name"] == "Status"


@pytest.mark.parametrize("stdin", [b"", b"not json", b"[1, 2]", b"\xff\xfe\x00", b'{"rate_limits": 5}',
                                   b'{"rate_limits": {"five_hour": {"used_percentage": "x"}}}', b"{" * 5000])
def test_garbage_prints_the_fallback_and_exits_0(tmp_path: Path, stdin: bytes) -> None:
    proc = run(stdin, tmp_path)
    assert (proc.returncode, proc.stdout.decode()) == (0, FALLBACK + "\n")
    assert not Spool(str(tmp_path / "spool")).ready() if (tmp_path / "spool").exists() else True


def test_an_unwritable_spool_still_prints(tmp_path: Path) -> None:
    (tmp_path / "spool").write_text("a file where the folder should be")
    proc = run(json.dumps(STATUS).encode(), tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(b"outloop: 5h 42% official")


def test_estimates_from_the_cache_when_no_official_figure() -> None:
    now = time.time()
    cache = {"written": now - 10, "level": "high", "windows": [
        {"window": "five_hour", "percent": 88.2, "basis": "estimate", "used": 8_820_000,
         "projected_percent": 104.0, "time_to_limit_s": 1500.0},
        {"window": "seven_day", "percent": None, "basis": "none", "used": 30_500_000}]}
    assert render({"session_id": "s"}, cache, now) == (
        "outloop: 5h 88% est, fc 104%, limit in 25m | 7d 30.5M tok est | risk high")
    assert render({"session_id": "s"}, {**cache, "written": now - 3600}, now) == FALLBACK  # stale


def test_install_statusline(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"model": "opus"}))
    cmd = statusline_command()
    assert install_statusline(settings, cmd).changed
    assert json.loads(settings.read_text())["statusLine"] == {"type": "command", "command": cmd, "padding": 0}
    assert json.loads(settings.read_text())["model"] == "opus"
    assert not install_statusline(settings, cmd).changed  # idempotent
    settings.write_text(json.dumps({"statusLine": {"type": "command", "command": "~/bin/my-line"}}))
    with pytest.raises(HooksFileError, match="another program"):
        install_statusline(settings, cmd)


def test_cli_install_statusline_and_the_cli_form(tmp_path: Path) -> None:
    import sys

    outloop = str(Path(sys.executable).with_name("outloop"))
    settings = tmp_path / "settings.json"
    env = {**os.environ, "OUTLOOP_HOME": str(tmp_path / "home")}
    proc = subprocess.run([outloop, "hooks", "install", "--settings", str(settings), "--statusline"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(settings.read_text())
    assert data["statusLine"]["command"] == statusline_command() and "PreToolUse" in data["hooks"]
    cli = subprocess.run([outloop, "quota", "statusline"], input=b"garbage", env=env, capture_output=True,
                         timeout=60)
    assert (cli.returncode, cli.stdout) == (0, (FALLBACK + "\n").encode())
