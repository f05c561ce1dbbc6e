"""The hook shim, always run as a real subprocess with the command Claude Code would run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from outloop.streams.shim import DEADLINE, MAX_BYTES, TAIL_BYTES, hook_command, shim_path
from outloop.streams.spool import Spool

CMD = shlex.split(hook_command())
REPO = Path(__file__).resolve().parents[2]


def shim_env(spool: Path | str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
    env["OUTLOOP_SPOOL"] = str(spool)
    env.update(extra)
    return env


def run_shim(stdin: bytes | None, env: dict[str, str], *, close_stdin: bool = False,
             timeout: float = 10.0) -> tuple[subprocess.CompletedProcess[bytes], float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        CMD,
        input=stdin if not close_stdin else None,
        stdin=subprocess.DEVNULL if stdin is None and not close_stdin else None,
        capture_output=True,
        env=env,
        timeout=timeout,
        preexec_fn=(lambda: os.close(0)) if close_stdin else None,  # closes fd 0 in the child
    )
    return proc, time.monotonic() - t0


def payload(**fields: object) -> bytes:
    base = {"session_id": "sess-1", "transcript_path": "/t.jsonl", "cwd": "/w",
            "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "pytest -q"},
            "tool_use_id": "toolu_1"}
    base.update(fields)
    return json.dumps(base).encode()


def only_record(spool_dir: Path) -> tuple[str, dict[str, object], bytes]:
    spool = Spool(spool_dir)
    ids = spool.ready()
    assert len(ids) == 1, ids
    rec = spool.read(ids[0])
    header = json.loads((spool_dir / f"{ids[0]}.rec").read_bytes().split(b"\n", 1)[0])
    return rec.id, header, rec.raw


def test_hook_command_is_isolated_and_points_at_this_shim() -> None:
    cmd = CMD
    assert cmd[0] == sys.executable
    assert cmd[1:3] == ["-I", "-S"]
    assert cmd[3] == shim_path() and Path(cmd[3]).is_file()
    assert shlex.join(cmd) == hook_command()


def test_valid_payload_is_spooled_exactly(tmp_path: Path) -> None:
    body = payload()
    before = time.time()
    proc, _ = run_shim(body, shim_env(tmp_path / "spool"))
    after = time.time()
    assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b""
    rid, header, raw = only_record(tmp_path / "spool")
    assert raw == body
    assert header["v"] == 1 and header["id"] == rid and "trunc" not in header
    from datetime import datetime

    received = datetime.fromisoformat(str(header["received_at"]))
    assert received.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert before - 0.01 <= received.timestamp() <= after + 0.01
    assert Spool(tmp_path / "spool").temp_files() == []


@pytest.mark.parametrize(
    "stdin",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is {not json", id="garbage"),
        pytest.param(b'{"session_id": "s\xff\xfe", "x": "\xc3\x28"}', id="invalid-utf8"),
        pytest.param(b'{"session_id": "big", "blob": "' + b"x" * (5 * 1024 * 1024) + b'"}', id="5MB"),
    ],
)
def test_any_stdin_exits_0_silently_and_is_kept_raw(tmp_path: Path, stdin: bytes) -> None:
    proc, elapsed = run_shim(stdin, shim_env(tmp_path / "spool"))
    assert proc.returncode == 0
    assert proc.stdout == b""
    assert elapsed < DEADLINE + 1
    _, header, raw = only_record(tmp_path / "spool")
    assert raw == stdin
    assert "trunc" not in header


def test_closed_stdin(tmp_path: Path) -> None:
    proc, _ = run_shim(None, shim_env(tmp_path / "spool"), close_stdin=True)
    assert proc.returncode == 0 and proc.stdout == b""
    _, _, raw = only_record(tmp_path / "spool")
    assert raw == b""


def test_stdin_over_the_cap_keeps_the_first_and_the_last_bytes(tmp_path: Path) -> None:
    body = b"a" * MAX_BYTES + b"b" * (1024 * 1024) + b"c" * 1000
    proc, _ = run_shim(body, shim_env(tmp_path / "spool"))
    assert proc.returncode == 0 and proc.stdout == b""
    _, header, raw = only_record(tmp_path / "spool")
    assert header["trunc"] == "size" and header["tail"] == TAIL_BYTES
    assert raw == body[:MAX_BYTES] + body[-TAIL_BYTES:]


def test_stdin_that_never_ends_is_cut_at_the_deadline(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.Popen(CMD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=shim_env(tmp_path / "spool"))
    assert proc.stdin is not None
    proc.stdin.write(b'{"session_id": "slow", "partial": ')
    proc.stdin.flush()
    try:
        proc.wait(timeout=DEADLINE + 3)  # stdin is still open: the shim must not wait for its end
    finally:
        proc.stdin.close()
    out = proc.stdout.read()  # type: ignore[union-attr]
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0 and out == b""
    assert elapsed < DEADLINE + 1.5
    _, header, raw = only_record(tmp_path / "spool")
    assert header["trunc"] == "timeout"
    assert raw == b'{"session_id": "slow", "partial": '


@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_unwritable_spool_still_exits_0_silently_and_fast(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    spool = blocker / "spool" if where == "under-a-file" else blocker
    proc, elapsed = run_shim(payload(), shim_env(spool))
    assert proc.returncode == 0
    assert proc.stdout == b""
    assert b"outloop-hook: spool write failed" in proc.stderr
    assert elapsed < DEADLINE + 1
    assert blocker.read_text() == "a regular file"


@pytest.mark.serial  # a wall-clock bound of 1 s: measured alone
def test_no_broker_is_irrelevant(tmp_path: Path) -> None:
    """The shim never talks to a broker: an unreachable one changes nothing."""
    env = shim_env(tmp_path / "spool", OUTLOOP_BROKER="127.0.0.1:1", OUTLOOP_HOME=str(tmp_path / "home"))
    proc, elapsed = run_shim(payload(), env)
    assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b""
    assert elapsed < 1.0
    assert only_record(tmp_path / "spool")[2] == payload()


def test_spool_folder_from_outloop_home(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
    env["OUTLOOP_HOME"] = str(tmp_path / "home")
    proc, _ = run_shim(payload(), env)
    assert proc.returncode == 0
    assert only_record(tmp_path / "home" / "spool")[2] == payload()


def test_shim_imports_nothing_outside_the_stdlib_hot_path(tmp_path: Path) -> None:
    heavy = ("pydantic", "orjson", "kafka", "schemas", "faust", "json", "pathlib", "enum", "typing", "re")
    code = (
        f"import sys; sys.path.append({str(REPO)!r}); import streams.shim; streams.shim.main();"
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], input=payload(), capture_output=True,
                         check=True, env=shim_env(tmp_path / "spool"))
    assert out.stdout.strip() == b""
    assert only_record(tmp_path / "spool")[2] == payload()


def test_sixteen_concurrent_shims_spool_every_event_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    env = shim_env(spool_dir)

    def worker(w: int) -> list[int]:
        codes = []
        for i in range(50):
            proc = subprocess.run(CMD, input=payload(session_id=f"s{w}", seq=i), capture_output=True, env=env)
            assert proc.stdout == b""
            codes.append(proc.returncode)
        return codes

    with ThreadPoolExecutor(16) as pool:
        codes = [c for cs in pool.map(worker, range(16)) for c in cs]
    assert codes == [0] * 800
    spool = Spool(spool_dir)
    assert spool.temp_files() == []
    ids = spool.ready()
    assert len(ids) == len(set(ids)) == 800
    seen = [(p["session_id"], p["seq"]) for p in (json.loads(spool.read(r).raw) for r in ids)]
    assert sorted(seen) == sorted((f"s{w}", i) for w in range(16) for i in range(50))
    for w in range(16):  # the events of one session keep their order
        assert [s for sess, s in seen if sess == f"s{w}"] == list(range(50))


def _median_wall(cmd: list[str], env: dict[str, str], stdin: bytes, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, input=stdin, capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def test_whole_process_time_within_twice_a_bare_interpreter_start(tmp_path: Path) -> None:
    env = shim_env(tmp_path / "spool")
    body = payload(tool_response={"stdout": "." * 2000})
    bare = [sys.executable, "-c", "pass"]
    _median_wall(CMD, env, body, 3)  # warm caches
    shim = _median_wall(CMD, env, body, 21)
    reference = _median_wall(bare, env, b"", 21)
    assert shim < 2 * reference, f"shim {shim * 1e3:.1f} ms vs bare start {reference * 1e3:.1f} ms"


def test_sigterm_keeps_what_was_read_and_exits_0(tmp_path: Path) -> None:
    proc = subprocess.Popen(CMD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=shim_env(tmp_path / "spool"))
    assert proc.stdin is not None
    proc.stdin.write(b'{"session_id": "term"')
    proc.stdin.flush()
    time.sleep(0.5)  # well past interpreter start: the handler is installed
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=DEADLINE)
    finally:
        proc.stdin.close()
    assert proc.returncode == 0 and proc.stdout.read() == b""  # type: ignore[union-attr]
    _, header, raw = only_record(tmp_path / "spool")
    assert header["trunc"] == "timeout" and raw == b'{"session_id": "term"'
