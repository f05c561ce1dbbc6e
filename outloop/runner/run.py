"""One run of the runner, from its command line to its exit code: ``--outloop-run [--family F]
[--rule R] [--run-id ID] -- COMMAND``. Stdlib only (see ``core``).

Exit code: the command's own (128+N when a signal N killed it), 2 for a command line the runner cannot
read (nothing is run then), 127 when ``bash`` itself cannot be started (as a shell reports a missing
program).
"""

# contextlib.suppress is not used: importing contextlib costs the runner's start more than it saves.
# ruff: noqa: SIM105

from __future__ import annotations

import os
import sys
import time

from outloop.runner import core, net, runlog

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs more than the whole run

if TYPE_CHECKING:
    from outloop.runner.core import Write
    from outloop.runner.families.base import Compact

MARKER = "--outloop-run"  # as in rewrite.MARKER (not imported: rewrite imports shlex, which costs start-up)

STARTED = False  # set once the command runs: before that, main.py falls back to exec'ing bash itself
USAGE = "usage: outloop run [--family F] [--rule R] [--run-id ID] -- COMMAND\n"


class Options:
    __slots__ = ("command", "family", "rule", "run_id")

    def __init__(self) -> None:
        self.command = ""
        self.family: str | None = None
        self.rule: str | None = None
        self.run_id: str | None = None


def parse(argv: list[str]) -> Options | None:
    """The runner's options; None when the command line is not one (no ``--`` followed by a command).
    Words after ``--`` are the command: one word is run as is (``bash -c WORD``), several are quoted
    and joined so that each stays one word (``outloop run -- pytest -q "a b"``)."""
    opts = Options()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest = argv[i + 1:]
            if not rest:
                return None
            if len(rest) == 1:
                opts.command = rest[0]
            else:
                import shlex

                opts.command = shlex.join(rest)
            return opts
        if a == MARKER:
            i += 1
        elif a in ("--family", "--rule", "--run-id") and i + 1 < len(argv):
            setattr(opts, a[2:].replace("-", "_"), argv[i + 1])
            i += 2
        else:
            return None
    return None


def main(argv: list[str], env: dict[str, str] | os._Environ[str] = os.environ,
         write: Write | None = None) -> int:
    """Run the command and print its result; returns the exit code for the process."""
    opts = parse(argv)
    if opts is None:
        sys.stderr.write(USAGE)
        return 2
    write = write or core.stdout_writer(1)
    started, t0 = core.now_iso(), time.monotonic()
    files, log_fd, log_error = core.open_log(env, opts.run_id)
    max_lines = core.env_int(env, "OUTLOOP_RUN_MAX_LINES", core.DEFAULT_MAX_LINES)
    max_tokens = core.env_int(env, "OUTLOOP_RUN_MAX_TOKENS", core.DEFAULT_MAX_TOKENS)
    pump = core.Pump(write, log_fd, max_lines, max_tokens * 4)
    pump.log_error = log_error
    try:
        child = core.Child(opts.command)
    except OSError as e:
        pump.out(f"outloop run: cannot start bash: {e.strerror or e}\n".encode())
        return 127
    global STARTED
    STARTED = True
    old = core.install_forwarding(child)
    try:
        core.pump_output(child, pump)
    except BaseException:  # noqa: BLE001 - a bug here must not cost the agent its output
        if not pump.passthrough:
            pump.fail_log(pump.raw_bytes, b"", "runner error")
        core.drain_raw(child, pump)
    code = child.wait()
    core.restore(old)
    result = finish(opts, pump, files, code, max_lines, max_tokens, env)
    if log_fd is not None:
        try:
            os.close(log_fd)
        except OSError:
            pass
    if files is not None:
        meta: dict[str, object] = {"run_id": files.run_id, "command": opts.command, "cwd": _cwd(), "family": result[0],
                "kind": result[1], "rule": opts.rule, "exit_code": code, "signal": child.signal,
                "started_at": started, "ended_at": core.now_iso(),
                "duration_ms": round((time.monotonic() - t0) * 1000, 1), "raw_bytes": pump.raw_bytes,
                "raw_lines": pump.lines, "printed_bytes": pump.printed, "compact": result[2],
                "failures": result[3], "summary_line": result[4], "log": files.log,
                "log_error": pump.log_error if pump.passthrough else None}
        try:
            runlog.write_meta(files.meta, meta)
            runlog.maybe_prune(env, frozenset({files.run_id}))
        except OSError:
            pass
    return code


Result = tuple  # (family, kind, compact, failures, summary line)


def finish(opts: Options, pump: core.Pump, files: runlog.RunFiles | None, code: int,
           max_lines: int, max_tokens: int, env: dict[str, str] | os._Environ[str] = os.environ,
           log_shown: str | None = None) -> Result:
    """Print what the caller gets after the command ended: the compact result when it saves tokens, else
    the output exactly as the command printed it, nothing added (see ``net``); returns (family, kind,
    compact, failures, summary line) for the metadata. An output that ended within the thresholds is
    short: printed as is without paying for the summariser's import (about two interpreter starts).
    ``log_shown`` is the log path the footer names (a recorded run's: the path a live run would print,
    so that the footer's size is the same)."""
    if pump.passthrough or files is None:  # everything was printed as it came
        reason = pump.log_error or "no log"
        pump.out(f"{_sep(pump)}[outloop] output passed through unchanged: no log ({reason})\n".encode())
        return opts.family, None, False, [], None
    summary = None
    if pump.over:
        compacted, summary = _compact(opts, pump, (files.log, log_shown or files.log), code, max_lines, max_tokens,
                                      env)
        if compacted and summary is not None:
            return summary.family, summary.kind, True, summary.failures, summary.summary_line
        pump.replay_log(pump.raw_bytes)
    else:
        for chunk in pump.held:
            pump.out(chunk)
        pump.held = []
    if code == 0:  # the metadata and the API name a failed run's failures even when it is printed unchanged
        return opts.family, None, False, [], None
    if summary is not None:
        return opts.family, None, False, list(summary.failures), summary.summary_line
    return opts.family, None, False, *_short_failures(opts, files, code, max_lines, max_tokens)


def _compact(opts: Options, pump: core.Pump, logs: tuple[str, str], code: int, max_lines: int, max_tokens: int,
             env: dict[str, str] | os._Environ[str]) -> tuple[bool, Compact | None]:
    """Print the compact result of a long output when it costs fewer tokens than the output as the agent
    would read it (``net.passthrough``); returns (printed, the summary or None). ``logs``: the log read
    and the path its footer names."""
    log, shown = logs
    settings = net.Settings.from_env(env)
    cpt = settings.chars_per_token
    raw = net.tokens(net.agent_chars(_raw_chars(pump, settings.agent_limit), settings.agent_limit), cpt)
    foot = net.footer(shown, pump.lines, pump.raw_bytes)
    if net.surely_short(raw, net.tokens(len(foot) + 1, cpt), settings.min_saving):
        return False, None
    try:
        from outloop.runner import compact
        from outloop.runner.families.base import Limits

        summary = compact.summarise(opts.command, log, code,
                                    Limits(max_lines=max_lines, max_tokens=max_tokens), opts.family)
        text = f"{summary.text}\n{foot}\n"
        if net.passthrough(raw, net.tokens(len(text), cpt), settings.min_saving):
            return False, summary
        pump.out(text.encode())
        return True, summary
    except Exception:  # noqa: BLE001 - fall back to the whole output
        return False, None


def _raw_chars(pump: core.Pump, limit: int) -> int:
    """Characters of the whole output as the agent's tool decodes it (UTF-8, bad bytes replaced), read
    back from the log when it may be within ``limit`` characters; past ``4 * limit`` bytes it is
    certainly longer than ``limit``, and the log is not read. A held output is short: not counted."""
    if not pump.over:
        return pump.raw_bytes
    if pump.raw_bytes > 4 * limit or pump.log_fd is None:
        return pump.raw_bytes
    data = b""
    try:
        while len(data) < pump.raw_bytes:
            chunk = os.pread(pump.log_fd, pump.raw_bytes - len(data), len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return pump.raw_bytes
    return len(data.decode("utf-8", "replace"))


def _short_failures(opts: Options, files: runlog.RunFiles, code: int, max_lines: int,
                    max_tokens: int) -> tuple[list[str], str | None]:
    """(failures, summary line) of a failed run printed unchanged, for the metadata and the API (a failing
    test run said ``failures []`` when its output was short); a run that passed, or any error: none."""
    if code == 0:  # only a failed run pays for the summariser's import
        return [], None
    try:
        from outloop.runner import compact
        from outloop.runner.families.base import Limits

        c = compact.summarise(opts.command, files.log, code, Limits(max_lines=max_lines, max_tokens=max_tokens),
                              opts.family)
        return list(c.failures), c.summary_line
    except Exception:  # noqa: BLE001 - the metadata goes without them
        return [], None


def _sep(pump: core.Pump) -> str:
    """A newline before outloop's own line when the output did not end with one."""
    return "" if pump.last == b"\n" or not pump.raw_bytes else "\n"


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None
