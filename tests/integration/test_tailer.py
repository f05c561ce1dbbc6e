"""The transcript tailer against a real broker, worker and DuckDB file: transcripts written in pieces
(a partial last line), a tailer restarted from its checkpoint, a truncated file, a replaced file, a
file rewritten in place, a deleted one. What DuckDB holds must equal what the importer computes from
the files: nothing lost, nothing doubled (row counts and token sums)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import psutil
import pytest

from outloop.client import WorkerClient
from outloop.replay import publish_markers, wait_for_marker
from outloop.runtime import Stack
from outloop.schemas.topics import TopicCatalogue
from outloop.streams.broker import free_port
from outloop.streams.publisher import Publisher
from outloop.streams.settings import Settings
from outloop.streams.shim import hook_command
from outloop.streams.tailer import Tailer
from tests import SESSION_TIMEOUT
from tests.integration.transcript_sources import expected_rows, source_transcripts, stored_rows
from tests.polling import wait

pytestmark = pytest.mark.integration
OUTLOOP = str(Path(sys.executable).with_name("outloop"))


def _settings(tmp: Path, broker: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings.from_env({}, home=tmp / "home", broker=broker, db=tmp / "out.duckdb", topic_prefix=f"t{tag}",
                             app_id=f"outloop-{tag}", http_port=0, session_timeout=SESSION_TIMEOUT,
                             projects=tmp / "projects")


def _materialized(stack: Stack) -> None:
    s = stack.settings
    assert s.broker
    cat = TopicCatalogue(prefix=s.topic_prefix)
    marker = uuid.uuid4().hex
    with Publisher(s.broker, catalogue=cat, partitions=s.partitions) as pub:
        expected = publish_markers(pub, cat, marker, s.partitions)
    wait_for_marker(stack.client, marker, expected, timeout=120)


def _drain(tailer: Tailer, now: float) -> int:
    """Passes until the tailer read everything there is (its per-pass budget may leave some)."""
    done = tailer.run_once(now=now)
    while tailer.more:
        done += tailer.run_once(now=now)
    return done


def _small(tailer: Tailer) -> Tailer:
    """Budgets small enough that the transcripts take several passes and lines cross the chunk size."""
    tailer.chunk_bytes, tailer.pass_bytes = 1500, 4000
    return tailer


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        fh.write(data)


def test_files_written_in_pieces_truncated_replaced_and_deleted(tmp_path: Path, broker: str) -> None:
    s = _settings(tmp_path, broker)
    one, two, three, four = source_transcripts(tmp_path, 4)
    versions = tmp_path / "versions"  # every content the tailer was shown, for the reference
    versions.mkdir()
    project = tmp_path / "projects" / "-repo"
    live = project / "11111111-aaaa-bbbb-cccc-000000000001.jsonl"
    with Stack(s) as stack:
        tailer = _small(Tailer(s))
        half = len(one) // 2
        _append(live, b"".join(one[:half]))
        assert _drain(tailer, 0.0) > 0
        mark = tailer.marks[str(live)].offset
        assert mark == live.stat().st_size
        partial = one[half][: len(one[half]) // 2]
        _append(live, partial)  # a line being written: it waits for its newline
        _drain(tailer, 1.0)
        assert tailer.marks[str(live)].offset == mark
        _append(live, one[half][len(partial):] + b"".join(one[half + 1: half + 3]))
        _drain(tailer, 2.0)
        tailer.close()

        restarted = _small(Tailer(s))  # from the checkpoint: the rest of the file only
        assert restarted.marks[str(live)].offset == live.stat().st_size
        _append(live, b"".join(one[half + 3:]))
        _drain(restarted, 0.0)
        (versions / "one.jsonl").write_bytes(b"".join(one))

        cut = project / "22222222-aaaa-bbbb-cccc-000000000002.jsonl"
        start = b"".join(two[:2])
        first = b"".join(one)
        assert len(start) < len(first) < len(b"".join(two))  # smallest first: one is shorter than two
        _append(cut, first)  # other lines first (as a file rewritten from scratch)
        _drain(restarted, 10.0)
        cut.write_bytes(start)  # truncated below the mark: read again from its start
        _drain(restarted, 11.0)
        _append(cut, b"".join(two[2:]))
        _drain(restarted, 12.0)
        (versions / "two.jsonl").write_bytes(b"".join(two))

        rotated = project / "33333333-aaaa-bbbb-cccc-000000000003.jsonl"
        _append(rotated, b"".join(one))  # another session's lines, then replaced by this one (longer)
        _drain(restarted, 20.0)
        fresh = project / "next.tmp"
        fresh.write_bytes(b"".join(three))
        fresh.replace(rotated)  # a new inode under the same path
        _drain(restarted, 21.0)
        (versions / "three.jsonl").write_bytes(b"".join(three))

        rewritten = project / "99999999-aaaa-bbbb-cccc-000000000009.jsonl"
        _append(rewritten, b"".join(one))
        _drain(restarted, 25.0)
        with rewritten.open("r+b") as fh:  # truncated and written again, longer, between two looks
            fh.truncate(0)
            fh.write(b"".join(four))
        _drain(restarted, 26.0)
        (versions / "four.jsonl").write_bytes(b"".join(four))

        gone = project / "44444444-aaaa-bbbb-cccc-000000000004.jsonl"
        shutil.copyfile(versions / "one.jsonl", gone)
        _drain(restarted, 30.0)
        assert str(gone) in restarted.marks
        gone.unlink()
        _drain(restarted, 31.0)
        assert str(gone) not in restarted.marks and str(gone) not in restarted.checkpoint.load()
        restarted.close()

        _materialized(stack)
        stored = stored_rows(lambda sql: stack.client.query(sql)[1])
    expected = expected_rows(versions)
    assert expected["usage"] > 0 and expected["tool_calls"] > 0
    assert stored == expected


def test_a_transcript_a_hook_names_is_followed_outside_the_projects_folder(tmp_path: Path, broker: str) -> None:
    s = _settings(tmp_path, broker)
    (lines,) = source_transcripts(tmp_path, 1)
    elsewhere = tmp_path / "elsewhere" / "55555555-aaaa-bbbb-cccc-000000000005.jsonl"
    _append(elsewhere, b"".join(lines))
    with Stack(s) as stack:
        tailer = Tailer(s)
        assert tailer.run_once(now=0.0) == 0  # not under the projects folder, not named yet
        tailer.watch(str(elsewhere))
        tailer.watch(str(tmp_path / "notes.txt"))  # not a transcript: ignored
        assert tailer.run_once(now=1.0) > 0  # between two walks of the folder, a named file is taken at once
        assert sorted(tailer.marks) == [str(elsewhere)]
        tailer.close()
        _materialized(stack)
        stored = stored_rows(lambda sql: stack.client.query(sql)[1])
    assert stored == expected_rows(elsewhere.parent)


@pytest.mark.slow
def test_outloop_up_stores_usage_within_seconds_of_its_line(tmp_path: Path) -> None:
    """``outloop up`` as a user runs it: lines appended to a transcript in the projects folder, and to
    one elsewhere that a hook payload names, reach DuckDB's usage table within seconds."""
    port = free_port()
    env = {**os.environ, "OUTLOOP_HOME": str(tmp_path / "home"), "OUTLOOP_HTTP_PORT": str(port),
           "OUTLOOP_APP_ID": f"tail-{port}", "OUTLOOP_PROJECTS": str(tmp_path / "projects")}
    for name in ("OUTLOOP_BROKER", "OUTLOOP_DB", "OUTLOOP_SPOOL"):
        env.pop(name, None)
    one, two = source_transcripts(tmp_path, 2)
    live = tmp_path / "projects" / "-repo" / "66666666-aaaa-bbbb-cccc-000000000006.jsonl"
    named = tmp_path / "elsewhere" / "77777777-aaaa-bbbb-cccc-000000000007.jsonl"
    up = subprocess.Popen([OUTLOOP, "up"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    said: list[bytes] = []
    threading.Thread(target=lambda: said.extend(iter(up.stderr.readline, b"")) if up.stderr else None,
                     daemon=True).start()
    client = WorkerClient("127.0.0.1", port)
    logs = [tmp_path / "home" / "logs" / "worker.log"]
    try:
        wait(lambda: any(b"outloop is up" in line for line in said), 90, "outloop up started", logs=logs)
        delays = []
        for k, chunk in enumerate((one[: len(one) // 2], one[len(one) // 2:])):
            _append(live, b"".join(chunk))
            written = time.monotonic()
            (tmp_path / "versions").mkdir(exist_ok=True)
            (tmp_path / "versions" / "one.jsonl").write_bytes(b"".join(one[: len(one) // 2] if k == 0 else one))
            want = expected_rows(tmp_path / "versions")
            wait(lambda w=want: _usage(client) == (w["usage"], sum(w["tokens"].values())), 30,  # type: ignore[misc]
                 f"usage of chunk {k} in DuckDB", step=0.05, logs=logs)
            delays.append(time.monotonic() - written)
        _append(named, b"".join(two))
        shim = subprocess.run(hook_command(), shell=True, env=env, capture_output=True, timeout=10, input=orjson.dumps(
            {"session_id": named.stem, "hook_event_name": "UserPromptSubmit", "transcript_path": str(named),
             "cwd": "/repo", "prompt": "go on"}))
        assert shim.returncode == 0
        shutil.copyfile(named, tmp_path / "versions" / "two.jsonl")
        want = expected_rows(tmp_path / "versions")
        wait(lambda: stored_rows(lambda sql: client.query(sql)[1]) == want, 30, "the named transcript in DuckDB",
             logs=logs)
        assert up.poll() is None, b"".join(said[-30:]).decode(errors="replace")
        assert max(delays) < 10, delays  # within seconds (the poll is 0.5 s; measured ~1-2 s, bench_tailer.py)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(up.pid).children(recursive=True):
                child.kill()
            up.kill()
            up.wait()


def _usage(client: WorkerClient) -> tuple[int, int] | None:
    try:
        rows = client.query("SELECT count(*), coalesce(sum(input_tokens + output_tokens + cache_read_input_tokens "
                            "+ cache_creation_input_tokens), 0) FROM usage")[1]
    except Exception:  # noqa: BLE001 - not up yet
        return None
    return int(rows[0][0]), int(rows[0][1])


@pytest.mark.slow
def test_a_broker_lost_under_the_tailer_loses_nothing(tmp_path: Path) -> None:
    """The embedded broker SIGKILLed as soon as it acknowledged a transcript's envelopes, before the
    worker stored them: the supervisor restarts it and the tailer reads recent files again, so DuckDB
    ends with exactly the importer's rows."""
    tag = uuid.uuid4().hex[:8]
    s = Settings.from_env({}, home=tmp_path / "home", broker=None, db=tmp_path / "out.duckdb", topic_prefix=f"k{tag}",
                          app_id=f"kill-{tag}", http_port=0, session_timeout=SESSION_TIMEOUT,
                          projects=tmp_path / "projects", journal_confirm=0)
    transcripts = source_transcripts(tmp_path, 3)
    with Stack(s, supervise=True, tailer=True) as stack:
        assert stack.broker is not None and stack.tailer is not None
        for n, lines in enumerate(transcripts):
            _append(tmp_path / "projects" / "-repo" / f"{n:08d}-aaaa-bbbb-cccc-00000000000{n}.jsonl", b"".join(lines))
        wait(lambda: stack.tailer.published > 0 and not stack.tailer.more, 60, "the tailer published", step=0.005)
        restarts, pid = stack.restarts, stack.broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait(lambda: stack.restarts > restarts, 120, "the supervisor restarted the broker")
        expected = expected_rows(tmp_path / "projects")

        def stored() -> dict | None:
            try:
                return stored_rows(lambda sql: stack.client.query(sql)[1])
            except Exception:  # noqa: BLE001 - the worker is restarting
                return None

        wait(lambda: stored() == expected, 120, f"every row in DuckDB (have {stored()}, want {expected})")
        assert stack.failure is None
