"""Crash scenarios on a real broker with real processes killed by SIGKILL: the forwarder, the
embedded broker, the worker, and the DuckDB sink inside its transaction. After each, the database
must hold every event exactly once and equal the in-memory recomputation (``recompute.py``).

Scales (CI runs on 2 cores; each test stays within ~20-50 s): forwarder 10,000 spooled events and
20 kills; broker ~7,000 events and 5 kills under a supervised stack (scaled down from 100,000);
worker ~12,000 events and 10 kills plus a second worker joining and leaving; sink crash windows
~2,300 records per window.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from outloop.replay import publish_markers, wait_for_marker
from outloop.runtime import Stack
from outloop.schemas.topics import TopicCatalogue
from outloop.streams.publisher import Publisher
from outloop.streams.settings import Settings
from outloop.streams.spool import Spool
from tests import SESSION_TIMEOUT
from tests.polling import wait
from tests.reliability import recompute as rc

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def settings_for(tmp: Path, broker: str, **kw: Any) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings.from_env({}, **{"home": tmp / "home", "broker": broker, "db": tmp / "out.duckdb",
                                    "topic_prefix": f"r{tag}", "app_id": f"outloop-{tag}", "http_port": 0,
                                    "session_timeout": SESSION_TIMEOUT, **kw})


def publish(bootstrap: str, s: Settings, items: list[rc.Input], marker: str | None = None) -> int:
    cat = TopicCatalogue(prefix=s.topic_prefix)
    with Publisher(bootstrap, catalogue=cat, partitions=s.partitions) as pub:
        pub.ensure_topics()
        for key, value in items:
            pub.raw(cat.events.name, key, value)
        pub.flush()
        return publish_markers(pub, cat, marker, s.partitions) if marker else 0


def materialize(stack: Stack, marker: str, timeout: float = 120.0) -> None:
    assert stack.settings.broker
    expected = publish(stack.settings.broker, stack.settings, [], marker)
    wait_for_marker(stack.client, marker, expected, timeout)


def topic_ids(bootstrap: str, topic: str) -> Counter[str]:
    """Envelope id -> how many times it is on ``topic`` (all partitions, from the start)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ids: Counter[str] = Counter()
        quiet = 0
        while quiet < 3:
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            quiet = 0 if batch else quiet + 1
            for records in batch.values():
                ids.update(orjson.loads(r.value)["id"] for r in records)
        return ids
    finally:
        consumer.close()


# -- 4. forwarder killed --------------------------------------------------------------------------
FORWARDER = ("import sys, threading; sys.path.insert(0, sys.argv[1]); from outloop.streams.forwarder import Forwarder; "
             "from outloop.streams.settings import Settings; "
             "Forwarder(Settings.from_env(), batch_size=100).run_forever(threading.Event())")


def hook_payloads(sessions: int, calls: int) -> list[bytes]:
    out = []
    for n in range(sessions):
        session = f"{uuid.uuid4()}"
        for i in range(calls):
            base = {"session_id": session, "transcript_path": f"/home/u/.claude/projects/w/{session}.jsonl",
                    "cwd": "/w", "permission_mode": "default", "tool_name": "Bash",
                    "tool_input": {"command": f"pytest -q tests/unit/test_{i % 7}.py", "description": "tests"},
                    "tool_use_id": f"toolu_01{n:03d}{i:05d}"}
            out.append(orjson.dumps({**base, "hook_event_name": "PreToolUse"}))
            out.append(orjson.dumps({**base, "hook_event_name": "PostToolUse", "tool_response": {
                "stdout": f"{i % 50} passed in 0.{i % 9}s\n" * (1 + i % 5), "stderr": "", "interrupted": False}}))
    return out


def test_forwarder_sigkilled_20_times_while_draining_loses_nothing(tmp_path: Path, broker: str) -> None:
    """10,000 hook events spooled (20 sessions x 250 Pre/Post pairs); a forwarder process (batches
    of 100, so kills land between read, send, broker acknowledgement and spool deletion) is
    SIGKILLed at 20 random moments while it drains and restarted each time. Duplicates on the topic
    are allowed; hook_events must hold exactly the 10,000 spooled ids."""
    s = settings_for(tmp_path, broker, spool=tmp_path / "spool", partitions=4)
    spool = Spool(s.spool)
    ids = {spool.write(raw) for raw in hook_payloads(20, 250)}
    assert len(ids) == 10_000
    env = {**os.environ, **s.to_env()}
    rng = random.Random(4)
    left = [len(ids)]
    kills = 0

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", FORWARDER, str(REPO)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    while kills < 20:
        proc = start()
        before = len(os.listdir(s.spool))
        try:
            wait(lambda b=before: len(os.listdir(s.spool)) < b, 30, "the forwarder never drained", step=0.002)
            time.sleep(rng.uniform(0, 0.025))
        finally:
            proc.kill()
            proc.wait()
        kills += 1
        left.append(len(spool.ready()))
        assert left[-1] > 0, f"the spool emptied after {kills} kills; drained per run: {left}"
    proc = start()
    try:
        wait(lambda: not spool.ready(), 60, "the last forwarder did not drain the spool")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    on_topic = topic_ids(broker, TopicCatalogue(prefix=s.topic_prefix).events.name)
    assert set(on_topic) == ids
    with Stack(s) as stack:
        materialize(stack, "m4")
        _, rows = stack.client.query("SELECT count(*), count(DISTINCT id) FROM hook_events")
        assert rows == [[10_000, 10_000]]
        _, rows = stack.client.query("SELECT id FROM hook_events")
        assert {r[0] for r in rows} == ids
        _, rows = stack.client.query("SELECT count(*), count(*) FILTER (WHERE status = 'ok' AND duration_ms "
                                     "IS NOT NULL) FROM tool_calls")
        assert rows == [[5_000, 5_000]]
    print(f"\nforwarder: {kills} SIGKILLs, spool left after each: {left}; topic holds "
          f"{sum(on_topic.values())} records for {len(on_topic)} ids "
          f"({sum(on_topic.values()) - len(on_topic)} duplicates); hook_events 10,000 distinct rows")


# -- 5. broker killed mid-stream ------------------------------------------------------------------
def confirmed_chunks(stack: Stack, expected: int) -> int:
    """The last chunk k such that the markers of chunks 0..k reached every output partition."""
    _, rows = stack.client.query("SELECT regexp_extract(marker, '^c(\\d+)', 1), count(*) FROM flush_markers "
                                 "WHERE marker LIKE 'c%' GROUP BY 1")
    seen = {int(k): int(n) for k, n in rows}
    k = -1
    while seen.get(k + 1, 0) >= expected:
        k += 1
    return k


def rows_in(stack: Stack) -> int:
    """Hook events in the worker's database; -1 while the worker does not serve yet."""
    try:
        return int(stack.client.query("SELECT count(*) FROM hook_events")[1][0][0])
    except Exception:  # starting (not ready, or not listening yet)
        return -1


def test_broker_sigkilled_mid_stream_and_the_source_republishes(tmp_path: Path) -> None:
    """~7,000 events (14 sessions; scaled down from 100,000 to fit CI) in 8 chunks, each followed
    by a flush marker, through a supervised stack (``outloop up``'s supervision). The memory-only
    broker is SIGKILLed 5 times while the worker materializes; the supervisor alone SIGKILLs the
    worker, restarts the broker on the same port and starts a fresh worker. The broker comes back
    empty, so the replayable source republishes every chunk whose marker had not reached DuckDB
    yet. The restarted sink must notice each new log (shorter than, or refilled past, the offsets
    stored in DuckDB) and the database must equal the recomputation: 0 lost, 0 extra."""
    inputs = rc.synthetic(seed=5, sessions=14, calls=98)
    chunks = [inputs[i:i + 875] for i in range(0, len(inputs), 875)]
    s = replace(settings_for(tmp_path, ""), broker=None)
    rng = random.Random(5)
    kill_at = (1, 2, 3, 4, 5)
    kills: list[tuple[int, int, int]] = []  # (chunk published, chunks confirmed, hook rows) at each kill
    with Stack(s, supervise=True) as stack:
        assert stack.broker is not None
        bootstrap = stack.broker.bootstrap
        expected = publish(bootstrap, s, chunks[0], "c0")
        wait(lambda: confirmed_chunks(stack, expected) >= 0, 90, "first chunk")
        for k in range(1, len(chunks)):
            if k in kill_at:  # the restarted worker is materializing again: kill while it works
                floor = kills[-1][2] if kills else 0

                def resumed(f: int = floor, k: int = k) -> bool:  # new rows, or all published so far is in
                    try:
                        return rows_in(stack) > f or confirmed_chunks(stack, expected) >= k - 1
                    except Exception:  # the worker is starting
                        return False

                wait(resumed, 90, "the worker did not resume after a restart")
            publish(bootstrap, s, chunks[k], f"c{k}")
            if k not in kill_at:
                continue
            time.sleep(rng.uniform(0.0, 0.3))  # the chunk is on its way through the worker
            done = confirmed_chunks(stack, expected)
            kills.append((k, done, rows_in(stack)))
            restarts, pid = stack.restarts, stack.broker.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait(lambda r=restarts: stack.restarts > r, 120, "the supervisor did not restart broker and worker")
            assert stack.failure is None and stack.broker.bootstrap == bootstrap
            for j in range(done + 1, k + 1):  # what the broker lost and DuckDB had not confirmed
                publish(bootstrap, s, chunks[j], f"c{j}")
        last = len(chunks) - 1
        wait(lambda: confirmed_chunks(stack, expected) >= last, 120, "the last chunk")
        assert stack.restarts == len(kill_at)
    want, got = rc.recompute(inputs), rc.stored(s.db)
    assert rc.differences(got, want) == {}
    assert got.aggregates() == want.aggregates()
    noticed = [ln for ln in stack.worker_log.read_text().splitlines() if "sink: " in ln and " restarted (" in ln]
    assert noticed, "the sink never noticed a restarted log"
    print(f"\nbroker: {len(inputs)} events, kills at (chunk, chunks confirmed, hook rows) {kills}; the sink "
          f"noticed {len(noticed)} restarted partition logs; {rc.describe(want)}")


# -- 6. worker killed during a replay ------------------------------------------------------------
def test_worker_sigkilled_10_times_while_a_second_worker_joins_and_leaves(tmp_path: Path, broker: str) -> None:
    """A replay of the generated sample (30 sessions: transcripts, an old hook capture, a trajectory)
    mixed with ~10,000 synthetic events, published in 11 chunks; the worker is SIGKILLed after each
    of the first 10 and restarted. 3 kills land while it writes (after it resumed writing), the
    others at random moments of its start (imports, joining the group, opening DuckDB) or right
    after it became ready: a worker serves only once it joined, 2-6 s after a kill because the dead
    member must time out first (the session timeout, 2 s here), which bounds how many mid-write
    kills fit in CI's time; the random start timeouts (0.5-4 s) span that start. A second worker
    process (its own DuckDB file) joins the same consumer group and leaves it again, forcing
    rebalances. The first worker's database must equal the recomputation: 0 lost, 0 extra rows."""

    from outloop.runtime import StackError
    from outloop.sample import write_sample
    from outloop.streams.broker import free_port
    from outloop.streams.importers import ImportStats
    from outloop.streams.importers.detect import iter_paths

    write_sample(tmp_path / "sample", seed=11, sessions=30)
    sample = [(e.subject.encode(), e.model_dump_json().encode()) for e in iter_paths([tmp_path / "sample"],
                                                                                    ImportStats())]
    rng = random.Random(6)
    inputs = rc.interleave(rng, [sample, rc.synthetic(seed=6, sessions=20, calls=100)])  # each keeps its order
    chunks = [inputs[i:i + 1070] for i in range(0, len(inputs), 1070)]
    s = settings_for(tmp_path, broker, rebalance_timeout=4.0)
    kills: list[tuple[int, str, int | None]] = []  # (chunk, moment, hook rows) at each kill
    ready, floor = True, 0
    with Stack(s) as stack:
        second = Stack(replace(stack.settings, home=tmp_path / "home2", db=tmp_path / "second.duckdb",
                               http_port=free_port()))
        second.log_dir.mkdir(parents=True)
        try:
            for k, chunk in enumerate(chunks[:-1]):
                publish(broker, s, chunk, f"c{k}")
                if k == 2:  # joins the group now (in the background), leaves it at chunk 7
                    with contextlib.suppress(StackError):
                        second.start_worker(timeout=0.5)
                if k == 7:
                    second.stop_worker()
                rows = None
                if k in (1, 4, 8):  # it writes again: kill it in the middle of its work
                    wait(lambda f=floor: rows_in(stack) > f, 150, "the worker did not resume writing after a kill",
                             logs=(stack.worker_log, second.worker_log))
                    time.sleep(rng.uniform(0.0, 1.0))
                    rows = floor = rows_in(stack)
                kills.append((k, "writing" if rows is not None else ("ready" if ready else "starting"), rows))
                stack.kill_worker()
                try:  # a start that is not ready within the timeout is killed while starting
                    stack.start_worker(timeout=30.0 if k + 1 in (1, 4, 8) else rng.uniform(0.5, 4.0))
                    ready = True
                except StackError:
                    ready = False
            publish(broker, s, chunks[-1], f"c{len(chunks) - 1}")
            wait(lambda: bool((stack.client.health(timeout=1.0) or {}).get("ok")), 60, "the last worker",
                 logs=(stack.worker_log,))
            materialize(stack, "m6")
        finally:
            second.stop_worker()
    want, got = rc.recompute(inputs), rc.stored(s.db)
    assert rc.differences(got, want) == {}
    assert got.aggregates() == want.aggregates()
    assert len(kills) == 10 and [m for _, m, _ in kills].count("writing") == 3
    assert "Joined group" in second.worker_log.read_text()
    rebalances = stack.worker_log.read_text().count("Revoking previously assigned partitions")
    print(f"\nworker: {len(inputs)} events, SIGKILLs at (chunk, moment, hook rows) {kills}; the first worker's "
          f"incarnations saw {rebalances} rebalances; {rc.describe(want)}")


# -- 7. sink crash windows ----------------------------------------------------------------------
SINK_PARTITIONS = 2
SINK_INPUTS = rc.synthetic(seed=7, sessions=8, calls=40)


def fill_output_topics(bootstrap: str, prefix: str) -> None:
    """The sessions agent's records for SINK_INPUTS on the output topics, then a flush marker on
    every output partition."""
    cat = TopicCatalogue(prefix=prefix)
    with Publisher(bootstrap, catalogue=cat, partitions=SINK_PARTITIONS) as pub:
        pub.ensure_topics()
        for topic, partition, _, key, value in rc.outputs(SINK_INPUTS, prefix, SINK_PARTITIONS):
            pub.raw(topic, key, value, partition=partition)
        for topic, partition in [(t.name, p) for t in cat.outputs() for p in range(SINK_PARTITIONS)]:
            pub.raw(topic, None, orjson.dumps({"control": "flush", "marker": "end"}), partition=partition)
        pub.flush()


def drain(bootstrap: str, prefix: str, db: Path, sink: Any = None, timeout: float = 60.0) -> None:
    """Run a SinkConsumer (batches of 100 records) until the end marker reached every partition."""
    import asyncio

    from outloop.projections import open_sink
    from outloop.sinks.consumer import SinkConsumer

    cat = TopicCatalogue(prefix=prefix)
    sink = sink or open_sink(db)

    def seen() -> int:
        return int(sink.query("SELECT count(*) FROM flush_markers WHERE marker = 'end'")[1][0][0])

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(SinkConsumer(bootstrap, sink, cat, max_batch=100, refresh_s=0.5).run(stop))
        deadline = time.monotonic() + timeout
        while seen() < len(cat.outputs()) * SINK_PARTITIONS:
            assert not task.done() and time.monotonic() < deadline, f"stopped or too slow: {task}"
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)

    try:
        asyncio.run(run())
    finally:
        sink.close()


def crash_child(window: str, db: str, bootstrap: str, prefix: str, at: int, status: str) -> None:
    """Consume into ``db`` and SIGKILL this process in ``window`` of the ``at``-th write transaction."""
    import threading
    from contextlib import contextmanager

    from outloop.projections import standard
    from outloop.sinks.writer import DuckSink

    def die(what: str) -> None:
        Path(status).write_text(what)
        os.kill(os.getpid(), signal.SIGKILL)

    class CrashingSink(DuckSink):
        writes = 0
        bodies = 0  # transactions whose statements all ran (one that met a stored key is rolled back
        # and written again: the crash must land in a transaction that commits, or would have)

        @contextmanager
        def transaction(self):  # type: ignore[no-untyped-def]
            self.writes += 1
            if self.writes == at and window == "before-begin":
                die(window)
            before = self.stored_offsets() if window == "after-commit" else {}
            with super().transaction() as con:
                yield con
                self.bodies += 1
                fire = self.bodies == at
                if fire and window == "after-inserts":
                    die(window)
            if fire and window == "after-commit":  # what a consumer re-reading this batch starts from
                Path(status + ".offsets").write_bytes(orjson.dumps(
                    [[t, p, o.next_offset] for (t, p), o in before.items()]))
                die(window)
            if fire and window == "checkpoint":
                entered, finished = threading.Event(), threading.Event()

                def kill_soon() -> None:
                    entered.wait()
                    time.sleep(random.uniform(0.001, 0.012))
                    die(window if not finished.is_set() else "checkpoint finished first")

                threading.Thread(target=kill_soon, daemon=True).start()
                entered.set()
                con.execute("CHECKPOINT")
                finished.set()
                time.sleep(60)

    # the run writes ~1 MB of WAL, below DuckDB's automatic checkpoint threshold (16 MiB): the WAL
    # holds every batch until the CHECKPOINT below (or the reopen after the crash) folds it in
    drain(bootstrap, prefix, Path(db), CrashingSink(db, projections=standard()))
    Path(status).write_text("no crash")


@pytest.fixture(scope="module")
def sink_topics(broker: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The output topics every crash window reads, filled once, and the data tables of a clean run
    over them (the same records, read once without a crash). A SinkConsumer joins no group and keeps
    its offsets in its own file: each window reads the topics whole, as from topics of its own."""
    from tests.reliability.test_idempotence import dump

    prefix = f"sc{uuid.uuid4().hex[:8]}"
    fill_output_topics(broker, prefix)
    clean = tmp_path_factory.mktemp("sink-clean") / "clean.duckdb"
    drain(broker, prefix, clean)
    return prefix, dump(clean)


@pytest.mark.parametrize("window", ["before-begin", "after-inserts", "after-commit", "checkpoint"])
def test_sink_crash_windows(tmp_path: Path, broker: str, sink_topics: tuple[str, dict[str, Any]],
                            window: str) -> None:
    """A SinkConsumer process writing ~2,300 records (batches of 100) into a real DuckDB file is
    SIGKILLed (a) before BEGIN, (b) after the inserts, before COMMIT, (c) after COMMIT but before
    the consumer moved on - the stored offsets are then rewound to before that batch, so the
    restarted consumer re-reads an already committed batch - and (d) in the middle of a DuckDB
    CHECKPOINT. The file is reopened, the records redelivered, and every data table must equal a
    clean run's and the rows the recomputation."""
    from tests.reliability.test_idempotence import dump

    prefix, want = sink_topics
    db, status = tmp_path / "sink.duckdb", tmp_path / "status"
    for attempt in range(5):  # a checkpoint may finish before the kill lands: try again, on an empty file
        for stale in (db, db.with_name(db.name + ".wal")):  # else the retry resumes past the killed run's
            stale.unlink(missing_ok=True)  # commits, and may have fewer transactions left than `at`
        at = random.Random(f"{window}{attempt}").randrange(3, 20)
        proc = subprocess.run([sys.executable, "-m", "tests.reliability.test_crashes", window, str(db), broker,
                               prefix, str(at), str(status)], cwd=REPO, capture_output=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        if status.read_text() == window:
            break
    assert status.read_text() == window, f"{attempt + 1} attempts: {status.read_text()}"
    if window == "after-commit":
        con = duckdb.connect(str(db))
        try:
            con.executemany('UPDATE consumer_offsets SET next_offset = ? WHERE topic = ? AND "partition" = ?',
                            [[o, t, p] for t, p, o in orjson.loads(Path(f"{status}.offsets").read_bytes())])
        finally:
            con.close()
    drain(broker, prefix, db)
    assert rc.differences(rc.stored(db), rc.recompute(SINK_INPUTS)) == {}
    got = dump(db)
    assert {t for t in want if got[t] != want[t]} == set()
    print(f"\nsink crash {window}: SIGKILL in write transaction {at} (attempt {attempt + 1}); reopened, "
          f"redelivered: {sum(map(len, got.values()))} rows equal a clean run and the recomputation")


if __name__ == "__main__":
    crash_child(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
