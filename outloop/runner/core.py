"""The runner's core: run ``bash -c COMMAND`` as the agent would have, keep the whole output in a log, and
hand back the output unchanged when short or a compact result when long. Stdlib only, and only cheap
modules on the path every run takes (no ``subprocess``, ``re`` or ``json``): the runner's start-up is
paid on every rewritten tool call.

Fail open: whatever goes wrong on outloop's side (no log folder, a full disk, a bug here or in a
summariser), the caller gets every byte the command printed and the command's own exit code.
"""

# contextlib.suppress is not used: importing contextlib costs the runner's start more than it saves.
# ruff: noqa: SIM105

from __future__ import annotations

import os
import sys
import time

try:  # the C module: ``signal.py`` imports enum, which costs a noticeable part of the start-up
    import _signal
except ImportError:  # pragma: no cover - other interpreters
    import signal as _signal  # type: ignore[no-redef]

import select

from outloop.runner import runlog

FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
DEFAULT_MAX_LINES = 100
DEFAULT_MAX_TOKENS = 2500
AFTER_EXIT = 0.5  # seconds to keep reading after the shell exited (output its background children hold)
_CHUNK = 1 << 16

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs more than the whole run

if TYPE_CHECKING:
    from collections.abc import Callable

    Write = Callable[[bytes], None]


def env_int(env: dict[str, str] | os._Environ[str], name: str, default: int) -> int:
    """A positive integer from the environment, else ``default`` (a bad value never stops a run)."""
    try:
        value = int(env.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


class Pump:
    """Where the command's bytes go: held in memory while the output is short, always into the log, and
    straight to the caller (``passthrough``) once the log cannot be written."""

    def __init__(self, write: Write, log_fd: int | None, max_lines: int, max_bytes: int) -> None:
        self.write = write
        self.log_fd = log_fd
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.over = False  # output past the thresholds: the log alone holds it
        self.passthrough = log_fd is None
        self.raw_bytes = self.raw_lines = self.printed = 0
        self.last = b"\n"
        self.log_error: str | None = None if log_fd is not None else "no log"

    def out(self, data: bytes) -> None:
        """Write to the caller, counting what was printed; a closed stdout never stops the run."""
        self.printed += len(data)
        try:
            self.write(data)
        except OSError:
            pass

    def feed(self, data: bytes) -> None:
        """Take one chunk of the command's output."""
        self.raw_bytes += len(data)
        self.raw_lines += data.count(b"\n")
        self.last = data[-1:]
        if self.passthrough:
            self.out(data)
            return
        if not self.over:
            self.held.append(data)
            self.held_bytes += len(data)
            if self.raw_lines > self.max_lines or self.held_bytes > self.max_bytes:
                self.over = True
        start = self.raw_bytes - len(data)
        try:
            _write_all(self.log_fd, data)  # type: ignore[arg-type]
        except OSError as e:
            self.fail_log(start, data, f"{e.strerror or e}")
            return
        if self.over:
            self.held, self.held_bytes = [], 0

    def fail_log(self, start: int, data: bytes, reason: str) -> None:
        """The log stopped taking bytes (full disk, I/O error): from now on everything goes straight to
        the caller, beginning with what it has not seen (held in memory, or read back from the log)."""
        self.passthrough = True
        self.log_error = reason
        if self.held:
            for chunk in self.held:
                self.out(chunk)
            self.held = []
            return
        self.replay_log(start)
        self.out(data)

    def replay_log(self, upto: int) -> None:
        """Print the log's first ``upto`` bytes (fully written before it failed) in bounded chunks."""
        if self.log_fd is None or upto <= 0:
            return
        try:
            pos = 0
            while pos < upto:
                chunk = os.pread(self.log_fd, min(_CHUNK * 16, upto - pos), pos)
                if not chunk:
                    break
                self.out(chunk)
                pos += len(chunk)
        except OSError as e:
            self.out(f"\n[outloop] could not read back the first {upto - pos} bytes from the log: {e}\n".encode())

    @property
    def lines(self) -> int:
        """Lines of output, counting an unterminated last line."""
        return self.raw_lines + (0 if self.last == b"\n" or not self.raw_bytes else 1)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def stdout_writer(fd: int = 1) -> Write:
    """A writer to a file descriptor that writes everything (``os.write`` may write part of a chunk)."""
    return lambda data: _write_all(fd, data)


class Child:
    """``bash -c COMMAND`` with stdout and stderr on one pipe, in a process group of its own when stdin
    is not a terminal (so a forwarded signal reaches its whole tree)."""

    def __init__(self, command: str) -> None:
        self.read_fd, write_fd = os.pipe()  # both ends close on exec; dup2 makes 1 and 2 inheritable
        self.own_group = not _isatty(0)
        actions = [(os.POSIX_SPAWN_DUP2, write_fd, 1), (os.POSIX_SPAWN_DUP2, write_fd, 2)]
        defaults = {_signal.SIGPIPE, *FORWARDED}
        if hasattr(_signal, "SIGXFSZ"):
            defaults.add(_signal.SIGXFSZ)
        try:
            if self.own_group:
                self.pid = os.posix_spawnp("bash", ["bash", "-c", command], os.environ, file_actions=actions,
                                           setsigdef=defaults, setpgroup=0)
            else:
                self.pid = os.posix_spawnp("bash", ["bash", "-c", command], os.environ, file_actions=actions,
                                           setsigdef=defaults)
        finally:
            os.close(write_fd)
        self.status: int | None = None
        self.signal: int | None = None

    def forward(self, signum: int) -> None:
        """Pass a signal on to the command (its process group, or itself when it shares ours)."""
        try:
            if self.own_group:
                os.killpg(self.pid, signum)
            elif signum != _signal.SIGINT:  # a terminal's ^C already reached the whole foreground group
                os.kill(self.pid, signum)
        except OSError:
            pass

    def poll(self) -> bool:
        """Whether the shell has exited (reaps it once)."""
        if self.status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return False
            self.status = status
        return True

    def wait(self) -> int:
        """The command's exit code as bash reports it: its own code, or 128+N when killed by signal N."""
        while self.status is None:
            try:
                _, self.status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.status = 0
        code = os.waitstatus_to_exitcode(self.status)
        self.signal = -code if code < 0 else None
        return 128 - code if code < 0 else code


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def pump_output(child: Child, pump: Pump) -> None:
    """Read the command's output until the pipe closes, or until ``AFTER_EXIT`` after the shell exited
    (a background process the command started may hold the pipe open for ever)."""
    poller = select.poll()
    poller.register(child.read_fd, select.POLLIN | select.POLLHUP)
    deadline: float | None = None
    while True:
        timeout_ms = 100 if deadline is None else max(int((deadline - time.monotonic()) * 1000), 0)
        events = poller.poll(timeout_ms)
        if events:
            data = os.read(child.read_fd, _CHUNK)
            if not data:
                return
            pump.feed(data)
            continue
        if deadline is not None:
            if time.monotonic() >= deadline:
                return
        elif child.poll():
            deadline = time.monotonic() + AFTER_EXIT


def drain_raw(child: Child, pump: Pump) -> None:
    """After a failure on outloop's side: everything left on the pipe goes straight to the caller."""
    pump.passthrough = True
    try:
        pump_output(child, pump)
    except OSError:
        pass


def install_forwarding(child: Child) -> dict[int, object]:
    """Forward SIGINT, SIGTERM and SIGHUP to the command while it runs; returns the old handlers."""
    old: dict[int, object] = {}
    for sig in FORWARDED:
        try:
            old[sig] = _signal.signal(sig, lambda signum, frame: child.forward(signum))
        except (OSError, ValueError):  # not the main thread (the Python API): no forwarding
            pass
    return old


def restore(old: dict[int, object]) -> None:
    for sig, handler in old.items():
        try:
            _signal.signal(sig, handler)  # type: ignore[arg-type]
        except (OSError, ValueError, TypeError):
            pass


def now_iso() -> str:
    """UTC now as ISO 8601 with milliseconds (no datetime import: it costs start-up)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _stderr(msg: str) -> None:
    try:
        sys.stderr.write(msg)
        sys.stderr.flush()
    except Exception:  # noqa: BLE001,S110 - the note is best effort
        pass


def open_log(env: dict[str, str] | os._Environ[str],
             run_id: str | None = None) -> tuple[runlog.RunFiles | None, int | None, str | None]:
    """The run's files and its log opened for writing, or Nones and the reason (the run goes on)."""
    try:
        files = runlog.new_run(env, run_id)
        fd = os.open(files.log, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)  # read back if it fails
        return files, fd, None
    except OSError as e:
        return None, None, f"{e.strerror or e}"
