"""``outloop quota statusline``: Claude Code's status-line command. Stdlib only, like the hook shim.

Claude Code runs the status-line command after each assistant message with a JSON object on stdin
(model, workspace, cost, and for subscribers ``rate_limits.five_hour/seven_day`` with
``used_percentage`` and ``resets_at``) and shows the first line it prints. This command:

1. reads stdin (bounded in size and time, as the hook shim does),
2. spools it as an event named ``Status`` (the payload as received, ``hook_event_name`` added when it
   has none) so the official figures reach the database through the forwarder like hook events,
3. prints one short line: the official used % of each window (``official``), else the latest
   estimate written by ``outloop quota`` (``$OUTLOOP_HOME/quota/status.json``, ``est``), with the
   forecast at the window's end and the time to the limit when known,
4. exits 0, always, and prints ``outloop: quota n/a`` on input it cannot read.

Run as a file with ``python -I -S <this file>`` (see :func:`statusline_command`).
"""

# ruff: noqa: SIM105

import os
import sys
import time

if __package__ in (None, ""):  # run as a file (``-I -S``): the sibling modules, imported on their own
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from shim import _arm, _complain, _Deadline, _disarm, read_stdin  # type: ignore[import-not-found,no-redef]
    from spool import Spool, default_spool_dir  # type: ignore[import-not-found,no-redef]
else:
    from .shim import _arm, _complain, _Deadline, _disarm, read_stdin
    from .spool import Spool, default_spool_dir

MAX_BYTES = 1 << 20  # a status-line input is a few KB
CACHE_MAX_AGE_S = 600  # an estimate older than this is not shown
FALLBACK = "outloop: quota n/a"
_SHORT = {"five_hour": "5h", "seven_day": "7d", "month": "mo"}


def status_cache_path(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    home = os.path.expanduser(env.get("OUTLOOP_HOME") or os.path.join("~", ".outloop"))
    return os.path.join(home, "quota", "status.json")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes >= 60 else f"{minutes}m"


def _reset_in(value: object, now: float) -> str:
    """``resets_at`` as epoch seconds or ISO text -> "in 1h20" (empty when unreadable)."""
    when = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        when = float(value) / (1000 if value > 1e11 else 1)
    elif isinstance(value, str):
        try:
            from datetime import datetime

            when = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return ""
    return f" resets {_duration(max(when - now, 0))}" if when is not None else ""


def render(payload: object, cache: object, now: float) -> str:
    """The line to print, from the status-line input and the cached estimate (either may be junk)."""
    parts = []
    limits = payload.get("rate_limits") if isinstance(payload, dict) else None
    windows = cache.get("windows") if isinstance(cache, dict) and now - float(cache.get("written", 0)) < \
        CACHE_MAX_AGE_S else None
    estimates = {w.get("window"): w for w in windows if isinstance(w, dict)} if isinstance(windows, list) else {}
    for kind in ("five_hour", "seven_day"):
        entry = limits.get(kind) if isinstance(limits, dict) else None
        est = estimates.get(kind) or {}
        pct = entry.get("used_percentage") if isinstance(entry, dict) else None
        if isinstance(entry, dict) and isinstance(pct, int | float) and not isinstance(pct, bool):
            text = f"{_SHORT[kind]} {pct:.0f}% official{_reset_in(entry.get('resets_at'), now)}"
        elif isinstance(est.get("percent"), int | float):
            text = f"{_SHORT[kind]} {est['percent']:.0f}% est"
        elif isinstance(est.get("used"), int | float):
            text = f"{_SHORT[kind]} {est['used'] / 1e6:.1f}M tok est"
        else:
            continue
        if isinstance(est.get("projected_percent"), int | float):
            text += f", fc {est['projected_percent']:.0f}%"
        if isinstance(est.get("time_to_limit_s"), int | float):
            text += f", limit in {_duration(est['time_to_limit_s'])}"
        parts.append(text)
    level = cache.get("level") if isinstance(cache, dict) and estimates else None
    if isinstance(level, str) and level != "low":
        parts.append(f"risk {level}")
    return ("outloop: " + " | ".join(parts)) if parts else FALLBACK


def _read_json(data: bytes) -> object:
    import json

    try:
        return json.loads(data)
    except ValueError:
        return None


def _load_cache() -> object:
    try:
        with open(status_cache_path(), "rb") as f:
            return _read_json(f.read(1 << 16))
    except OSError:
        return None


def _spool(raw: bytes, payload: object, ns: int) -> None:
    """Spool the input as a ``Status`` event; bytes that are not a JSON object are not spooled."""
    if not isinstance(payload, dict):
        return
    if "hook_event_name" not in payload:
        import json

        payload["hook_event_name"] = "Status"
        raw = json.dumps(payload, separators=(",", ":")).encode()
    if not isinstance(payload.get("session_id"), str) or not payload["session_id"]:
        return  # not something the pipeline can store (a session id is required)
    Spool(default_spool_dir(), fsync=False).write(raw, ns=ns, trunc=None)


def main() -> int:
    """Entry point: always prints one line and returns 0."""
    ns = time.time_ns()
    line = FALLBACK
    try:
        _arm()
        chunks: list[bytes] = []
        try:
            read_stdin(chunks, MAX_BYTES)
        except _Deadline:
            pass
        raw = b"".join(chunks)
        payload = _read_json(raw)
        line = render(payload, _load_cache(), ns / 1e9)
        try:
            _spool(raw, payload, ns)
        except BaseException as exc:  # a full disk or an unwritable spool never hides the line
            _complain("statusline spool", exc)
    except BaseException as exc:
        _complain("statusline", exc)
    try:
        _disarm()
        os.write(1, (line + "\n").encode("utf-8", "replace"))
    except BaseException:
        pass
    return 0


def statusline_command(python: str | None = None) -> str:
    """The command line for Claude Code's ``statusLine`` setting."""
    import shlex

    return shlex.join([python or sys.executable, "-I", "-S", os.path.abspath(__file__)])


if __name__ == "__main__":
    main()
    os._exit(0)
