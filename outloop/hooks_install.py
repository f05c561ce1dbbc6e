"""Register (or remove) the outloop hook shim in a Claude Code ``settings.json``.

Idempotent: installing twice changes nothing and writes nothing. Every other key of the file and
every hook of the user is kept as it was; the previous file is kept beside it as
``settings.json.outloop-<UTC stamp>.bak`` before each change. A file that is not valid JSON is
refused, never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Events whose matcher is a tool name: "*" matches every tool.
TOOL_EVENTS: tuple[str, ...] = (
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "PermissionRequest",
    "PermissionDenied",
)
# Events registered without a matcher (they fire on every occurrence). Left out on purpose:
# WorktreeCreate/WorktreeRemove (a hook there *replaces* git's own worktree handling and must print
# a path) and FileChanged (its matcher names the files to watch).
OTHER_EVENTS: tuple[str, ...] = (
    "UserPromptSubmit",
    "Stop",
    "StopFailure",
    "SubagentStart",
    "SubagentStop",
    "Notification",
    "SessionStart",
    "SessionEnd",
    "PreCompact",
    "PostCompact",
    "PostToolBatch",
    "TaskCreated",
    "TaskCompleted",
    "TeammateIdle",
    "InstructionsLoaded",
    "ConfigChange",
    "CwdChanged",
    "Elicitation",
    "ElicitationResult",
    "Setup",
)
HOOK_EVENTS: tuple[str, ...] = TOOL_EVENTS + OTHER_EVENTS
TOOL_MATCHER = "*"
HOOK_TIMEOUT_S = 5  # Claude Code's per-hook timeout, seconds; the shim itself stops after 2 s


class HooksFileError(ValueError):
    """The settings file cannot be used as it is (not JSON, or ``hooks`` of the wrong shape)."""


@dataclass
class InstallResult:
    path: Path
    changed: bool
    backup: Path | None = None
    added: list[str] = field(default_factory=list)  # event names that got the command
    removed: list[str] = field(default_factory=list)  # event names it was taken from


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"{path} is not valid JSON ({exc}); fix or move it, nothing was changed"
        raise HooksFileError(msg) from exc
    if not isinstance(data, dict):
        raise HooksFileError(f"{path} holds a JSON {type(data).__name__}, not an object; nothing was changed")
    hooks = data.get("hooks")
    if hooks is not None and not isinstance(hooks, dict):
        raise HooksFileError(f"'hooks' in {path} is not an object; nothing was changed")
    for name, groups in (hooks or {}).items():
        if not isinstance(groups, list):
            raise HooksFileError(f"'hooks.{name}' in {path} is not a list; nothing was changed")
    return data


SHIM_SUFFIX = "/streams/shim.py"


def _is_ours(hook: Any, command: str) -> bool:
    """The hook entry runs ``command``, or an outloop shim of another path (a moved checkout or
    virtualenv): those are replaced on install and removed on uninstall."""
    if not isinstance(hook, dict) or not isinstance(hook.get("command"), str):
        return False
    cmd: str = hook["command"]
    return cmd == command or cmd.strip().strip("'\"").endswith(SHIM_SUFFIX)


def _has_exact(groups: list[Any], command: str) -> bool:
    return any(
        isinstance(g, dict) and isinstance(g.get("hooks"), list)
        and any(isinstance(h, dict) and h.get("command") == command for h in g["hooks"])
        for g in groups
    )


def _without(groups: list[Any], command: str, keep_exact: bool) -> list[Any]:
    """``groups`` minus our hook entries (the exact command kept when ``keep_exact``); groups left
    empty by that are dropped."""
    out = []
    for g in groups:
        if isinstance(g, dict) and isinstance(g.get("hooks"), list):
            inner = [h for h in g["hooks"]
                     if not _is_ours(h, command) or (keep_exact and h.get("command") == command)]
            if len(inner) != len(g["hooks"]):
                if not inner:
                    continue
                g = {**g, "hooks": inner}
        out.append(g)
    return out


def _write(path: Path, data: dict[str, Any]) -> Path | None:
    """Keep a timestamped backup of the current file, then replace it atomically."""
    backup = None
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        backup = path.with_name(f"{path.name}.outloop-{stamp}.bak")
        shutil.copy2(path, backup)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
        if backup is not None:
            shutil.copymode(backup, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup


def install_hooks(settings_path: Path, command: str, events: tuple[str, ...] = HOOK_EVENTS) -> InstallResult:
    """Add ``command`` as a hook of every event in ``events`` (tool events with matcher ``"*"``);
    outloop shim entries of another path are replaced."""
    settings_path = Path(settings_path)
    data = _load(settings_path)
    if data.get("hooks") is None:
        data["hooks"] = {}
    hooks: dict[str, Any] = data["hooks"]
    added: list[str] = []
    removed: list[str] = []
    for name in events:
        groups: list[Any] = hooks.get(name) or []
        kept = _without(groups, command, keep_exact=True)
        if kept != groups:
            removed.append(name)
        if not _has_exact(kept, command):
            group: dict[str, Any] = {"matcher": TOOL_MATCHER} if name in TOOL_EVENTS else {}
            group["hooks"] = [{"type": "command", "command": command, "timeout": HOOK_TIMEOUT_S}]
            kept.append(group)
            added.append(name)
        if kept != groups:
            hooks[name] = kept
    if not added and not removed:
        return InstallResult(settings_path, changed=False)
    backup = _write(settings_path, data)
    return InstallResult(settings_path, changed=True, backup=backup, added=added, removed=removed)


def uninstall_hooks(settings_path: Path, command: str) -> InstallResult:
    """Remove every hook entry running ``command`` (or an outloop shim of another path); groups and
    event lists left empty by that are removed too, and ``hooks`` itself when nothing is left in
    it. Everything else is kept."""
    settings_path = Path(settings_path)
    if not settings_path.exists():
        return InstallResult(settings_path, changed=False)
    data = _load(settings_path)
    hooks = data.get("hooks")
    if not hooks:
        return InstallResult(settings_path, changed=False)
    removed: list[str] = []
    for name in list(hooks):
        groups = hooks[name]
        kept = _without(groups, command, keep_exact=False)
        if kept == groups:
            continue
        removed.append(name)
        if kept:
            hooks[name] = kept
        else:
            del hooks[name]
    if not removed:
        return InstallResult(settings_path, changed=False)
    if not hooks:
        del data["hooks"]
    backup = _write(settings_path, data)
    return InstallResult(settings_path, changed=True, backup=backup, removed=removed)


def installed_command(spool: Path, home: Path, python: str | None = None) -> str:
    """The hook command ``outloop hooks install`` registers: the shim with the spool folder and the
    home recorded on its command line (absolute paths), so a Claude Code started from a shell
    without them (another terminal, an IDE) spools where the forwarder reads, not in the default
    folder."""
    from outloop.streams.shim import hook_command

    paths = {"OUTLOOP_SPOOL": spool, "OUTLOOP_HOME": home}
    return hook_command(python, env={k: str(Path(v).expanduser().absolute()) for k, v in paths.items()})


def default_settings_path() -> Path:
    """The user's Claude Code settings: ``~/.claude/settings.json``."""
    return Path(os.path.expanduser("~")) / ".claude" / "settings.json"


def _events(names: list[str]) -> str:
    return f"{len(names)} hook event{'s' if len(names) != 1 else ''}"


def describe(result: InstallResult, installing: bool) -> str:
    """What ``outloop hooks install``/``uninstall`` did, in words (what the user reads)."""
    where = result.path
    if not result.changed:
        if installing:
            return f"the outloop hook is already installed in {where} for every hook event; nothing changed"
        return f"no outloop hook in {where}; nothing changed"
    backup = f" (previous file kept as {result.backup})" if result.backup else " (the file is new)"
    if installing:
        text = f"installed the outloop hook in {where} for {_events(result.added)}"
        if result.removed:
            text += f"; replaced an outloop hook of another path in {_events(result.removed)}"
        return text + backup
    return f"removed the outloop hook from {_events(result.removed)} in {where}" + backup


STATUSLINE_SUFFIX = "/streams/statusline.py"


def install_statusline(settings_path: Path, command: str) -> InstallResult:
    """Set Claude Code's ``statusLine`` to ``command`` (``outloop quota statusline``). A status line of
    another program is refused, never replaced (Claude Code has only one); an outloop one of another
    path is replaced; the same one changes nothing."""
    settings_path = Path(settings_path)
    data = _load(settings_path)
    current = data.get("statusLine")
    if isinstance(current, dict) and current.get("command") == command:
        return InstallResult(settings_path, changed=False)
    ours = isinstance(current, dict) and str(current.get("command", "")).strip().strip("'\"").endswith(
        STATUSLINE_SUFFIX)
    if current is not None and not ours:
        raise HooksFileError(f"{settings_path} already has a statusLine of another program ({current!r}); "
                             "remove it first, nothing was changed")
    data["statusLine"] = {"type": "command", "command": command, "padding": 0}
    backup = _write(settings_path, data)
    return InstallResult(settings_path, changed=True, backup=backup, added=["statusLine"])
