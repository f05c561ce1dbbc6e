"""Installing the hook shim into a Claude Code settings.json."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from outloop.hooks_install import (
    HOOK_EVENTS,
    TOOL_EVENTS,
    HooksFileError,
    install_hooks,
    installed_command,
    uninstall_hooks,
)
from outloop.streams.shim import hook_command
from outloop.streams.spool import Spool

CMD = hook_command()

USER_SETTINGS = {
    "model": "opus",
    "permissions": {"allow": ["Bash(git status)"], "deny": []},
    "env": {"FOO": "1"},
    "hooks": {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "/usr/local/bin/guard.sh"}]}
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
        "MyFutureEvent": [{"hooks": [{"type": "command", "command": "x"}]}],
    },
}


def write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2))


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.outloop-*.bak"))


def commands(groups: list[dict]) -> list[str]:
    return [h["command"] for g in groups for h in g["hooks"]]


def test_required_hook_events_are_covered() -> None:
    required = {"PreToolUse", "PostToolUse", "PostToolUseFailure", "UserPromptSubmit", "Stop",
                "SubagentStop", "Notification", "SessionStart", "SessionEnd", "PreCompact"}
    assert required <= set(HOOK_EVENTS)
    assert len(set(HOOK_EVENTS)) == len(HOOK_EVENTS)
    assert "WorktreeCreate" not in HOOK_EVENTS  # a hook there replaces git's worktree creation


def test_install_into_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / ".claude" / "settings.json"
    result = install_hooks(path, CMD)
    assert result.changed and result.backup is None
    assert result.added == list(HOOK_EVENTS)
    data = json.loads(path.read_text())
    assert set(data) == {"hooks"}
    for name in HOOK_EVENTS:
        (group,) = data["hooks"][name]
        assert group["hooks"] == [{"type": "command", "command": CMD, "timeout": 5}]
        if name in TOOL_EVENTS:
            assert group["matcher"] == "*"
        else:
            assert "matcher" not in group


def test_install_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    write(path, USER_SETTINGS)
    first = install_hooks(path, CMD)
    assert first.changed
    text = path.read_text()
    n_backups = len(backups(path))
    second = install_hooks(path, CMD)
    assert not second.changed and second.backup is None and second.added == []
    assert path.read_text() == text
    assert len(backups(path)) == n_backups


def test_install_keeps_every_other_key_and_hook_and_backs_up(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    write(path, USER_SETTINGS)
    original = path.read_text()
    result = install_hooks(path, CMD)
    assert result.backup is not None and result.backup.read_text() == original
    data = json.loads(path.read_text())
    for key in ("model", "permissions", "env"):
        assert data[key] == USER_SETTINGS[key]
    assert data["hooks"]["MyFutureEvent"] == USER_SETTINGS["hooks"]["MyFutureEvent"]
    pre = data["hooks"]["PreToolUse"]
    assert pre[0] == USER_SETTINGS["hooks"]["PreToolUse"][0]  # the user's hook first, untouched
    assert commands(pre) == ["/usr/local/bin/guard.sh", CMD]
    assert commands(data["hooks"]["Stop"]) == ["notify-send done", CMD]


def test_install_refuses_invalid_json_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"model": "opus",, }')
    with pytest.raises(HooksFileError, match="not valid JSON"):
        install_hooks(path, CMD)
    assert path.read_text() == '{"model": "opus",, }'
    assert backups(path) == []


@pytest.mark.parametrize("content", ['[1, 2]', '{"hooks": []}', '{"hooks": {"Stop": {"a": 1}}}'])
def test_install_refuses_unexpected_shapes(tmp_path: Path, content: str) -> None:
    path = tmp_path / "settings.json"
    path.write_text(content)
    with pytest.raises(HooksFileError):
        install_hooks(path, CMD)
    assert path.read_text() == content


def test_a_moved_shim_is_replaced_not_duplicated(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    old = "/old/venv/bin/python -I -S /old/checkout/streams/shim.py"
    install_hooks(path, old)
    result = install_hooks(path, CMD)
    assert result.changed and set(result.removed) == set(HOOK_EVENTS)
    data = json.loads(path.read_text())
    for name in HOOK_EVENTS:
        assert commands(data["hooks"][name]) == [CMD]


def test_uninstall_restores_the_users_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    write(path, USER_SETTINGS)
    install_hooks(path, CMD)
    result = uninstall_hooks(path, CMD)
    assert result.changed and set(result.removed) == set(HOOK_EVENTS)
    assert json.loads(path.read_text()) == USER_SETTINGS
    assert not uninstall_hooks(path, CMD).changed


def test_uninstall_drops_an_empty_hooks_key(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    write(path, {"model": "sonnet"})
    install_hooks(path, CMD)
    uninstall_hooks(path, CMD)
    assert json.loads(path.read_text()) == {"model": "sonnet"}
    assert not uninstall_hooks(tmp_path / "missing.json", CMD).changed


def test_uninstall_keeps_other_commands_sharing_a_group(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    shared = {"hooks": {"PostToolUse": [{"matcher": "*", "hooks": [
        {"type": "command", "command": CMD}, {"type": "command", "command": "logger"}]}]}}
    write(path, shared)
    assert not install_hooks(path, CMD, events=("PostToolUse",)).changed  # already there
    uninstall_hooks(path, CMD)
    assert json.loads(path.read_text()) == {"hooks": {"PostToolUse": [
        {"matcher": "*", "hooks": [{"type": "command", "command": "logger"}]}]}}


OUTLOOP = str(Path(sys.executable).with_name("outloop"))


def test_the_installed_command_records_the_spool_and_home_and_spools_there_from_any_shell(
        tmp_path: Path, traces: Path) -> None:
    """`outloop hooks install` run with OUTLOOP_SPOOL/OUTLOOP_HOME set; the command read back from the
    settings file, run by a shell whose environment has neither (another terminal), spools a real
    Claude Code payload into the installed spool, and the default spool stays empty."""
    home, spool, elsewhere = tmp_path / "home", tmp_path / "compose-spool", tmp_path / "user"
    settings = tmp_path / "claude" / "settings.json"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
    done = subprocess.run([OUTLOOP, "hooks", "install", "--settings", str(settings)], capture_output=True,
                          env={**clean, "OUTLOOP_SPOOL": str(spool), "OUTLOOP_HOME": str(home)}, timeout=60)
    assert done.returncode == 0, done.stderr
    command = json.loads(settings.read_text())["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
    assert f"OUTLOOP_SPOOL={spool}" in command and f"OUTLOOP_HOME={home}" in command
    capture = sorted((traces / "claude-code-hooks").glob("*/pre_tool_use.json"))[0]
    payload = json.dumps(json.loads(capture.read_text())[0]).encode()
    shim = subprocess.run(command, shell=True, input=payload, capture_output=True, timeout=10,
                          env={**clean, "HOME": str(elsewhere)})
    assert shim.returncode == 0 and shim.stdout == b"", shim.stderr
    ids = Spool(spool).ready()
    assert len(ids) == 1 and Spool(spool).read(ids[0]).raw == payload
    assert not (elsewhere / ".outloop").exists()
    # installing again with the same settings changes nothing; uninstall removes the command
    again = subprocess.run([OUTLOOP, "hooks", "install", "--settings", str(settings)], capture_output=True,
                           env={**clean, "OUTLOOP_SPOOL": str(spool), "OUTLOOP_HOME": str(home)}, timeout=60)
    assert again.returncode == 0 and len(backups(settings)) == 0
    assert uninstall_hooks(settings, CMD).changed and "hooks" not in json.loads(settings.read_text())


def test_installed_command_paths_are_absolute_and_it_is_still_recognised_as_ours(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch
                                                                                  ) -> None:
    monkeypatch.chdir(tmp_path)
    cmd = installed_command(Path("rel/spool"), Path("~/oh"))
    env = dict(a.split("=", 1) for a in shlex.split(cmd)[1:3])
    assert env == {"OUTLOOP_HOME": str(Path("~/oh").expanduser()), "OUTLOOP_SPOOL": str(tmp_path / "rel/spool")}
    path = tmp_path / "settings.json"
    install_hooks(path, CMD)  # an install from before the command carried its settings
    result = install_hooks(path, cmd)
    assert set(result.removed) == set(HOOK_EVENTS)
    assert all(commands(g) == [cmd] for g in json.loads(path.read_text())["hooks"].values())
