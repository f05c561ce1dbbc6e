"""The hook never harms the agent, and nothing it spools is lost or doubled: real shim processes
(the exact registered command), no broker, parallel writers, hostile input, broken and full spools,
then the forwarder and a worker drain everything into DuckDB."""

from __future__ import annotations

import base64
import contextlib
import os
import random
import re
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from outloop.streams.shim import DEADLINE, MAX_BYTES, TAIL_BYTES
from outloop.streams.spool import Spool
from tests import reliability as rel

BUDGET = DEADLINE + 1.0  # wall seconds a shim run may take, whatever it is fed (tests that check it: serial)
HOOKS = 600  # exactly-once and byte-for-byte hold per record; the latency figures come from bench_hook_reliability.py


def ok(r: Any) -> bool:
    return r.returncode == 0 and r.stdout == b""


# -- 1. broker down, then up --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.integration
def test_hooks_spooled_while_no_broker_runs_reach_duckdb_exactly_once(
        tmp_path: Path, late_broker: Any, drained_stack: Any) -> None:
    spool = tmp_path / "spool"
    events = rel.hook_workload(seed=7, n=HOOKS)
    env = rel.shim_env(spool, OUTLOOP_BROKER=late_broker.bootstrap)
    assert not rel.listening(late_broker.bootstrap)
    shim, bare = rel.shim_cmd(), rel.bare_cmd()
    jobs = []  # every 8th payload also feeds a bare interpreter start: the reference, same load
    for i, (_, _, body) in enumerate(events):
        jobs.append((shim, body))
        if i % 8 == 0:
            jobs.append((bare, body))
    runs = rel.run_many(jobs, env, parallel=8)
    hooks = [r for (cmd, _), r in zip(jobs, runs, strict=True) if cmd is shim]
    refs = [r.wall for (cmd, _), r in zip(jobs, runs, strict=True) if cmd is bare]
    assert not [r for r in hooks if not ok(r) or r.stderr]
    p50, p99 = rel.percentile([r.wall for r in hooks], 50), rel.percentile([r.wall for r in hooks], 99)
    r50, r99 = rel.percentile(refs, 50), rel.percentile(refs, 99)
    print(f"\n{HOOKS} shims, 8 at a time, broker down: p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms; "
          f"python -c pass ({len(refs)} runs, same load): p50 {r50 * 1e3:.1f} ms, p99 {r99 * 1e3:.1f} ms; "
          f"ratio p50 {p50 / r50:.2f}, p99 {p99 / r99:.2f}")

    sp = Spool(spool)
    ids = sp.ready()
    assert len(ids) == HOOKS and sp.temp_files() == []
    recs = [sp.read(rid) for rid in ids]
    assert sorted(r.raw for r in recs) == sorted(body for _, _, body in events)  # byte for byte
    assert all(r.trunc is None for r in recs)
    expected: dict[str, tuple[str, str, int]] = {}
    for r in recs:
        obj = orjson.loads(r.raw)
        received = datetime.fromisoformat(r.received_at.replace("Z", "+00:00"))
        expected[r.id] = (obj["hook_event_name"], obj["tool_use_id"], round(received.timestamp() * 1e6))
    kinds: dict[str, set[str]] = {}
    for name, tid, _ in events:
        kinds.setdefault(tid, set()).add(name)

    late_broker.start()
    with drained_stack(late_broker.bootstrap, spool, timeout=150) as stack:
        q = stack.client.query
        _, rows = q("SELECT id, hook_event_name, tool_use_id, epoch_us(received_at), source FROM hook_events")
        got = {row[0]: (row[1], row[2], row[3]) for row in rows}
        assert len(rows) == HOOKS and got == expected  # the shim's uuid7 and receive stamp survive
        assert {row[4] for row in rows} == {"hook"}
        _, rows = q("SELECT tool_use_id, count(*), max(status), count(started_at), count(ended_at) "
                    "FROM tool_calls GROUP BY tool_use_id")
        assert {row[0]: tuple(row[1:]) for row in rows} == {  # one row per call, paired when both came
            tid: (1, "ok" if "PostToolUse" in k else "started", int("PreToolUse" in k), int("PostToolUse" in k))
            for tid, k in kinds.items()}
        assert q("SELECT count(*) FROM dead_letters")[1] == [[0]]


# -- 2. parallel hooks --------------------------------------------------------------------------
WRITER_LOOP = 'd=$1; shift; for f in "$d"/*.json; do "$@" < "$f" || echo "exit $? for $f"; done'


@pytest.mark.slow
def test_sixteen_concurrent_shims_spool_every_event_exactly_once(tmp_path: Path) -> None:
    writers, per_writer = 16, 150  # 16 writers at once on one spool: 2,400 records, each writer's in its order
    spool = tmp_path / "spool"
    sent: list[list[str]] = []
    for w in range(writers):  # writer w runs its 500 hooks one after another, as one agent would
        rng = random.Random(w)
        folder = tmp_path / "in" / f"w{w:02d}"
        folder.mkdir(parents=True)
        sent.append([])
        for i in range(per_writer):
            marker = f"toolu_mk{w:02d}x{i:04d}x{rng.getrandbits(32):08x}"
            _, body = rel.tool_call_payloads(rng, session=f"par-{w % 4}", tool_use_id=marker, pre_size=0,
                                             post_size=rng.randint(rel.KIB // 2, 4 * rel.KIB))
            (folder / f"{i:04d}.json").write_bytes(body)
            sent[w].append(marker)
    procs = [subprocess.Popen(["sh", "-c", WRITER_LOOP, "sh", str(tmp_path / "in" / f"w{w:02d}"), *rel.shim_cmd()],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=rel.shim_env(spool))
             for w in range(writers)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0] * writers
    assert all(out == err == b"" for out, err in outs), outs[:2]  # every hook exited 0, printed nothing

    names = os.listdir(spool)
    assert all(n.endswith(".rec") and not n.startswith(".") for n in names)  # no temp file left
    sp = Spool(spool)
    ids = sp.ready()
    assert len(ids) == len(set(ids)) == writers * per_writer
    recs = [sp.read(rid) for rid in ids]  # each complete: header length matches the body
    assert [r.id for r in recs] == ids
    seen = Counter(re.findall(rb"toolu_mk\d{2}x\d{4}x[0-9a-f]{8}", b"\n".join(r.raw for r in recs)))
    assert seen == Counter(m.encode() for per in sent for m in per)  # each payload's marker, once
    by_marker = {orjson.loads(r.raw)["tool_use_id"]: r.id for r in recs}
    for per in sent:  # one writer's hooks ran one after another: their ids sort in that order
        order = [by_marker[m] for m in per]
        assert order == sorted(order)


# -- 3. hostile input ---------------------------------------------------------------------------
UNPARSEABLE = {  # name: (stdin, reason of its dead letter)
    "invalid_json": (b'{"session_id": "s1", "hook_event_name": "PreToolUse", "tool_input": {', "not_json"),
    "invalid_utf8": (b'{"session_id": "s1\xff\xfe", "hook_event_name": "Stop", "x": "\xc3\x28"}', "not_json"),
    "not_object": (b'["PreToolUse", {"session_id": "s1"}]', "not_object"),
    "no_session_id": (b'{"hook_event_name": "Notification", "message": "needs permission"}', "envelope"),
}
HOSTILE = {"empty": b"", "five_mib": rel.FIVE_MIB, **{k: v for k, (v, _) in UNPARSEABLE.items()}}


@pytest.mark.serial
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_stdin_exits_0_silently_and_is_spooled_as_read(tmp_path: Path, case: str) -> None:
    body = HOSTILE[case]
    r = rel.run(rel.shim_cmd(), rel.shim_env(tmp_path / "spool"), body)
    assert ok(r) and r.wall < BUDGET, (r.returncode, r.stdout[:200], r.stderr[:500], r.wall)
    rec = rel.only_record(tmp_path / "spool")
    assert rec.raw == body and rec.trunc is None


@pytest.mark.serial
def test_stdin_beyond_the_limit_is_cut_and_marked(tmp_path: Path) -> None:
    body = os.urandom(1024) * (MAX_BYTES // 1024 + 512)
    r = rel.run(rel.shim_cmd(), rel.shim_env(tmp_path / "spool"), body)
    assert ok(r) and r.wall < BUDGET
    rec = rel.only_record(tmp_path / "spool")
    assert rec.raw == body[:MAX_BYTES] + body[-TAIL_BYTES:] and rec.trunc == "size" and rec.tail == TAIL_BYTES


@pytest.mark.serial
def test_closed_stdin(tmp_path: Path) -> None:
    r = rel.run(["sh", "-c", 'exec "$@" 0<&-', "sh", *rel.shim_cmd()], rel.shim_env(tmp_path / "spool"), None)
    assert ok(r) and r.wall < BUDGET, r
    rec = rel.only_record(tmp_path / "spool")
    assert rec.raw == b"" and rec.trunc is None


@pytest.mark.serial
@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickling"])
def test_stdin_never_closed_ends_at_the_watchdog_keeping_what_was_read(tmp_path: Path, trickle: bool) -> None:
    r, written = rel.run_unclosed_stdin(rel.shim_cmd(), rel.shim_env(tmp_path / "spool"), trickle)
    assert ok(r) and r.wall < BUDGET, r
    rec = rel.only_record(tmp_path / "spool")
    assert rec.trunc == "timeout"
    assert rec.raw == written[: len(rec.raw)] and (len(rec.raw) > 0) == trickle


@pytest.mark.serial
@pytest.mark.parametrize("where", ["is_a_file", "below_a_file"])
def test_unwritable_spool_exits_0_silently(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"not a folder")
    spool = blocker if where == "is_a_file" else blocker / "sub" / "spool"
    r = rel.run(rel.shim_cmd(), rel.shim_env(spool), HOSTILE["no_session_id"] + b" " * 10)
    assert ok(r) and r.wall < BUDGET, r
    assert b"spool write failed" in r.stderr and r.stderr.count(b"\n") == 1
    assert blocker.read_bytes() == b"not a folder" and os.listdir(tmp_path) == ["blocker"]


@pytest.mark.serial
def test_full_spool_exits_0_silently_leaves_nothing_half_written_and_recovers(tiny_fs: Path) -> None:
    spool = tiny_fs / "spool"
    spool.mkdir()
    fill = tiny_fs / "fill"
    with open(fill, "wb", buffering=0) as f, contextlib.suppress(OSError):  # fill it to the last byte
        while True:
            f.write(b"\0" * 4096)
    rng = random.Random(3)
    small, big = rel.tool_call_payloads(rng, session="full", tool_use_id="toolu_full", pre_size=rel.KIB,
                                        post_size=40 * rel.KIB)
    env, cmd = rel.shim_env(spool), rel.shim_cmd()

    r = rel.run(cmd, env, big)  # nothing fits
    assert ok(r) and r.wall < BUDGET and b"No space left" in r.stderr, r
    assert os.listdir(spool) == []
    os.truncate(fill, os.path.getsize(fill) - 8 * rel.KIB)  # room for a header, not for the body
    r = rel.run(cmd, env, big)
    assert ok(r) and r.wall < BUDGET and b"No space left" in r.stderr, r
    assert os.listdir(spool) == []  # the temp file was removed, no partial record
    r = rel.run(cmd, env, small)  # what fits is spooled
    assert ok(r) and not r.stderr
    fill.unlink()
    r = rel.run(cmd, env, big)
    assert ok(r) and not r.stderr
    sp = Spool(spool)
    assert [sp.read(i).raw for i in sp.ready()] == [small, big] and sp.temp_files() == []


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.serial
def test_unparseable_hook_input_ends_as_dead_letters_with_its_exact_bytes(
        tmp_path: Path, broker: str, drained_stack: Any) -> None:
    spool = tmp_path / "spool"
    env, cmd = rel.shim_env(spool), rel.shim_cmd()
    valid = orjson.dumps({"session_id": "s-ok", "hook_event_name": "Stop", "stop_hook_active": False})
    inputs = {**{k: v for k, (v, _) in UNPARSEABLE.items()}, "empty": b"", "valid": valid}
    for body in inputs.values():
        r = rel.run(cmd, env, body)
        assert ok(r) and r.wall < BUDGET
    sp = Spool(spool)
    assert sorted(sp.read(i).raw for i in sp.ready()) == sorted(inputs.values())  # kept raw

    with drained_stack(broker, spool) as stack:
        _, rows = stack.client.query("SELECT reason, to_base64(raw), topic FROM dead_letters")
        _, hooks = stack.client.query("SELECT session_id, hook_event_name FROM hook_events")
    letters = sorted((base64.b64decode(raw), reason) for reason, raw, _ in rows)
    want = sorted([(v, reason) for v, reason in UNPARSEABLE.values()] + [(b"", "empty")])
    assert letters == want
    assert {topic for *_, topic in rows} == {stack.settings.topic_prefix + ".events"}
    assert hooks == [["s-ok", "Stop"]]


@pytest.mark.slow
@pytest.mark.integration
def test_hook_input_shaped_like_an_envelope_is_not_trusted(tmp_path: Path, broker: str, drained_stack: Any) -> None:
    spool = tmp_path / "spool"
    for body in rel.ENVELOPE_SHAPED.values():
        assert ok(rel.run(rel.shim_cmd(), rel.shim_env(spool), body))
    with drained_stack(broker, spool) as stack:
        q = stack.client.query
        counts = [q(f"SELECT count(*) FROM {t}")[1][0][0] for t in ("hook_events", "tool_calls", "usage")]
        _, rows = q("SELECT reason, to_base64(raw) FROM dead_letters")
    assert counts == [0, 0, 0]  # nothing materialized as if a real producer had sent it
    assert sorted((base64.b64decode(raw), reason) for reason, raw in rows) == sorted(
        (body, "no_session_id") for body in rel.ENVELOPE_SHAPED.values())
