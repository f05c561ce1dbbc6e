"""The Claude Code hook shim: stdin -> one spool record. Runs on every tool call of the agent.

Contract (the hook never harms the agent): stdlib only, always exits 0, ends within ``DEADLINE``
seconds whatever happens (unwritable or full spool, endless stdin), never talks to the broker.
Bytes that are not a hook payload are kept exactly as read; the forwarder turns them into dead
letters downstream.

Routing: a PreToolUse payload is first handed to the router component (``outloop up`` runs it) over
its Unix socket, within a hard budget (``OUTLOOP_ROUTE_BUDGET_MS``, default 150 ms from the shim's
start); its answer, when there is one, is printed on stdout as is (the PreToolUse JSON). No router,
an error or the budget spent: nothing is printed and the call proceeds unchanged. A PostToolUse
payload (and a PreCompact one) is passed on without waiting (the router's session memory learns each
command's result, each file read, and when the context was compacted).
``OUTLOOP_ROUTER=0`` turns both off. The payload is spooled in every case, as before.

Run it as a file with ``python -I -S <this file>`` (see :func:`hook_command`): isolated mode skips
site-packages and their ``.pth`` import hooks, which cost more than the whole shim.
"""

# contextlib.suppress is not used: importing contextlib costs the shim more than it saves.
# ruff: noqa: SIM105

import os
import sys
import time

if __package__ in (None, ""):  # run as a file (``-I -S``): the sibling spool module, imported on its own
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from spool import Spool, default_spool_dir  # type: ignore[import-not-found,no-redef]
else:
    from .spool import Spool, default_spool_dir

ROUTE_BUDGET_MS = 150.0  # default hard budget for the router's answer, from the shim's start
MAX_BYTES = 16 * 1024 * 1024  # stdin kept at most; the rest is read and discarded
TAIL_BYTES = 64 * 1024  # of what is discarded, the last bytes are kept too (after the first MAX_BYTES)
SOFT_DEADLINE = 1.5  # stop reading stdin, keep what was read, write it
DEADLINE = 2.0  # hard stop: exit 0 whatever is happening
_CHUNK = 1 << 20


class _Deadline(BaseException):
    """Raised by the watchdog inside whatever the shim is doing."""


_fired = [False]


def _on_signal(signum: int, frame: object) -> None:
    if _fired[0]:
        os._exit(0)
    _fired[0] = True
    try:
        _signal.setitimer(_signal.ITIMER_REAL, max(DEADLINE - SOFT_DEADLINE, 0.05))
    except Exception:
        pass
    raise _Deadline


try:  # the C module: ``signal.py`` would import enum, which costs more than the shim
    import _signal
except ImportError:  # pragma: no cover - other interpreters
    import signal as _signal


def _arm() -> None:
    try:
        _signal.signal(_signal.SIGALRM, _on_signal)
        _signal.signal(_signal.SIGTERM, _on_signal)
        _signal.setitimer(_signal.ITIMER_REAL, SOFT_DEADLINE)
    except Exception:
        pass


def _disarm() -> None:
    try:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
    except Exception:
        pass


def read_stdin(chunks: list[bytes], limit: int = MAX_BYTES, tail: bytearray | None = None) -> str | None:
    """Read fd 0 to its end into ``chunks`` (kept even when interrupted), keeping at most ``limit``
    bytes, and in ``tail`` the last ``TAIL_BYTES`` of those it did not keep (where a hook payload
    keeps ``tool_use_id``). Returns ``"size"`` when bytes were discarded, else None. A closed fd 0
    reads as empty."""
    kept = 0
    trunc = None
    while True:
        try:
            block = os.read(0, _CHUNK)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; belt and braces
            continue
        except OSError:  # EBADF (closed stdin), EIO ...
            return trunc
        if not block:
            return trunc
        room = limit - kept
        if len(block) > room:
            trunc = "size"
            if tail is not None:
                tail += block[max(room, 0):]
                del tail[:-TAIL_BYTES]
            if room <= 0:
                continue
            block = block[:room]
        chunks.append(block)
        kept += len(block)


def _complain(what: str, exc: BaseException) -> None:
    """One line on stderr (Claude Code shows it in verbose mode only; stdout stays empty)."""
    try:
        os.write(2, f"outloop-hook: {what}: {exc!r}\n".encode("utf-8", "replace")[:1000])
    except Exception:
        pass


def router_socket(environ: "os._Environ[str] | dict[str, str] | None" = None) -> str:
    """``OUTLOOP_ROUTER_SOCKET``, else ``$OUTLOOP_HOME/router.sock`` (``~/.outloop/router.sock``)."""
    env = os.environ if environ is None else environ
    path = env.get("OUTLOOP_ROUTER_SOCKET")
    if path:
        return os.path.expanduser(path)
    return os.path.join(os.path.expanduser(env.get("OUTLOOP_HOME") or os.path.join("~", ".outloop")), "router.sock")


def _budget() -> float:
    try:
        return float(os.environ.get("OUTLOOP_ROUTE_BUDGET_MS") or ROUTE_BUDGET_MS) / 1000.0
    except ValueError:
        return ROUTE_BUDGET_MS / 1000.0


def route(raw: bytes, start: float) -> bytes:
    """The router's answer to a PreToolUse payload (b"" for none), within the budget counted from
    ``start`` (monotonic); a PostToolUse payload is sent without waiting. Never raises."""
    pre = b'"PreToolUse"' in raw
    passed = b'"PostToolUse"' in raw or b'"PreCompact"' in raw
    if (not pre and not passed) or os.environ.get("OUTLOOP_ROUTER") == "0":
        return b""
    deadline = start + _budget()
    try:
        import _socket  # the C module: ``socket.py`` would import enum, selectors ...

        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except Exception:
        return b""
    try:
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        sock.settimeout(left)
        sock.connect(router_socket())
        sock.sendall(raw)
        sock.shutdown(1)  # SHUT_WR: the request is complete
        if not pre:
            return b""
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            sock.settimeout(left)
            block = sock.recv(65536)
            if not block:
                break
            chunks.append(block)
        reply = b"".join(chunks)
        return reply if reply.startswith(b"{") and reply.endswith(b"}\n") else b""
    except Exception:  # no router, refused, timed out, reset: the call proceeds unchanged
        return b""
    finally:
        try:
            sock.close()
        except Exception:
            pass


def _answer(reply: bytes) -> None:
    try:
        view = memoryview(reply)
        while view:
            view = view[os.write(1, view):]
    except Exception:
        pass


def _run(ns: int, start: float) -> None:
    chunks: list[bytes] = []
    tail = bytearray()
    trunc: str | None
    try:
        trunc = read_stdin(chunks, tail=tail)
    except _Deadline:
        trunc = "timeout"
    if trunc is None:
        try:
            reply = route(b"".join(chunks), start)
            if reply:
                _answer(reply)
        except _Deadline:
            pass
    try:
        if tail:
            chunks.append(bytes(tail))
        Spool(default_spool_dir(), fsync=os.environ.get("OUTLOOP_SPOOL_FSYNC") == "1").write(
            b"".join(chunks), ns=ns, trunc=trunc, tail=len(tail)
        )
    except _Deadline as exc:
        _complain("spool write timed out", exc)
    except BaseException as exc:  # full disk, unwritable folder, a file where the folder should be
        _complain("spool write failed", exc)


def main() -> int:
    """Entry point. Always returns 0."""
    ns = time.time_ns()  # the receive time: Claude Code hands the payload over at once
    start = time.monotonic()
    try:
        _arm()
        _run(ns, start)
    except BaseException as exc:  # never an exception, never a non-zero exit
        _complain("failed", exc)
    try:
        _fired[0] = True  # from here on a late signal exits 0 at once
        _disarm()
    except BaseException:
        pass
    return 0


def shim_path() -> str:
    return os.path.abspath(__file__)


ENV_PROGRAM = "/usr/bin/env"


def hook_command(python: str | None = None, env: dict[str, str] | None = None) -> str:
    """The command line to register in Claude Code's settings: this file run by the current
    interpreter in isolated mode without site (no ``.pth`` processing: the shim is stdlib only).
    ``env`` (e.g. ``OUTLOOP_SPOOL``) is set on the command line through ``env``, so a Claude Code
    started from any shell spools where the installer said; ``-I`` ignores only ``PYTHON*``
    variables, the shim still reads ``OUTLOOP_*``."""
    import shlex

    prefix = [ENV_PROGRAM, *(f"{k}={v}" for k, v in sorted(env.items()))] if env else []
    return shlex.join([*prefix, python or sys.executable, "-I", "-S", shim_path()])


if __name__ == "__main__":
    main()
    os._exit(0)  # skip interpreter teardown; nothing is buffered (stdout is written with os.write)
