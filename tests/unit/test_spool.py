"""The spool: record format, ordering, acknowledgement, sweeping, UUIDv7."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outloop.streams.settings import Settings
from outloop.streams.spool import (
    Spool,
    SpoolCorrupt,
    default_spool_dir,
    utc_iso,
    uuid7,
    uuid7_time_ns,
)


def test_uuid7_layout_and_time() -> None:
    ns = time.time_ns()
    u = uuid.UUID(uuid7(ns))
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert abs(uuid7_time_ns(str(u)) - ns) < 1_000  # sub-millisecond fraction kept (~244 ns steps)
    assert (u.int >> 80) == ns // 1_000_000  # 48-bit Unix milliseconds


def test_uuid7_sorts_by_time_and_is_strictly_increasing_in_a_process() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    base = 1_700_000_000_000_000_000
    stamped = {uuid7(base + k * 10_000): k for k in (3, 1, 2)}  # an explicit time is kept as given
    assert [stamped[u] for u in sorted(stamped)] == [1, 2, 3]


def test_utc_iso_parses_back_to_the_same_instant() -> None:
    ns = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
    text = utc_iso(ns)
    assert text == "2026-01-01T00:00:00.123456Z"
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert parsed == datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"session_id": "s", "hook_event_name": "Stop"}',
        b"",
        b"not json at all\n\n",
        b"\xff\xfe\x00invalid utf-8 \xc3\x28",
        bytes(range(256)) * 1000,
    ],
)
def test_write_read_roundtrip_keeps_bytes_exactly(tmp_path: Path, raw: bytes) -> None:
    spool = Spool(tmp_path / "spool")
    ns = time.time_ns()
    rid = spool.write(raw, ns=ns)
    rec = spool.read(rid)
    assert rec.id == rid
    assert rec.raw == raw
    assert rec.received_at == utc_iso(ns)
    assert rec.trunc is None
    rid2, received_at, raw2 = rec
    assert (rid2, received_at, raw2) == (rid, utc_iso(ns), raw)


def test_header_is_one_json_line_and_name_is_the_id(tmp_path: Path) -> None:
    import json

    spool = Spool(tmp_path)
    rid = spool.write(b"abc", trunc="size")
    data = (tmp_path / f"{rid}.rec").read_bytes()
    header, body = data.split(b"\n", 1)
    meta = json.loads(header)
    assert meta["v"] == 1 and meta["id"] == rid and meta["len"] == 3 and meta["trunc"] == "size"
    assert body == b"abc"
    assert spool.read(rid).trunc == "size"


def test_ready_is_oldest_first_and_ack_deletes(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    base = time.time_ns()
    ids = {spool.write(f"{k}".encode(), ns=base + k * 1_000_000): k for k in (5, 1, 3, 2, 4)}
    ready = spool.ready()
    assert [ids[r] for r in ready] == [1, 2, 3, 4, 5]
    assert spool.ready(limit=2) == ready[:2]
    spool.ack(ready[0])
    spool.ack(ready[0])  # twice is fine
    assert spool.ready() == ready[1:]
    with pytest.raises(FileNotFoundError):
        spool.read(ready[0])


def test_ready_ignores_temp_files_and_missing_folder(tmp_path: Path) -> None:
    assert Spool(tmp_path / "nope").ready() == []
    assert Spool(tmp_path / "nope").stats() == (0, 0)
    spool = Spool(tmp_path)
    (tmp_path / ".0190.tmp").write_bytes(b"half")
    assert spool.ready() == []
    assert spool.temp_files() == [".0190.tmp"]


def test_sweep_removes_only_stale_temp_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    rid = spool.write(b"kept")
    old = tmp_path / ".old.tmp"
    new = tmp_path / ".new.tmp"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    past = time.time() - 3600
    os.utime(old, (past, past))
    os.utime(tmp_path / f"{rid}.rec", (past, past))  # records are never swept, however old
    assert spool.sweep(older_than=60) == 1
    assert not old.exists() and new.exists()
    assert spool.ready() == [rid]


def test_stats_count_and_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    a = spool.write(b"x" * 100)
    spool.write(b"y" * 50)
    count, size = spool.stats()
    assert count == 2 == spool.count()
    assert size == sum((tmp_path / f"{r}.rec").stat().st_size for r in spool.ready()) == spool.total_bytes()
    spool.ack(a)
    assert spool.count() == 1


def test_damaged_records_raise_spool_corrupt_with_their_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    rid = spool.write(b"0123456789")
    path = tmp_path / f"{rid}.rec"
    full = path.read_bytes()
    path.write_bytes(full[:-3])  # body shorter than announced (lost at power failure)
    with pytest.raises(SpoolCorrupt) as info:
        spool.read(rid)
    assert info.value.data == full[:-3] and "header says 10" in info.value.reason
    path.write_bytes(b"")
    with pytest.raises(SpoolCorrupt):
        spool.read(rid)
    path.write_bytes(b"{not json}\nbody")
    with pytest.raises(SpoolCorrupt):
        spool.read(rid)


def test_write_creates_the_folder_and_fails_under_a_regular_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "a" / "b" / "spool", fsync=True)
    rid = spool.write(b"x")
    assert spool.ready() == [rid]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        Spool(blocker / "spool").write(b"x")
    assert list(tmp_path.glob("file*")) == [blocker]


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OUTLOOP_HOME": "/srv/outloop"},
        {"OUTLOOP_HOME": "~/elsewhere"},
        {"OUTLOOP_SPOOL": "/var/spool/outloop", "OUTLOOP_HOME": "/srv/outloop"},
        {"OUTLOOP_SPOOL": "~/sp"},
        {"OUTLOOP_SPOOL": "", "OUTLOOP_HOME": ""},
    ],
)
def test_default_spool_dir_follows_settings(env: dict[str, str]) -> None:
    assert default_spool_dir(env) == str(Settings.from_env(env).spool)


def test_records_written_by_one_process_keep_their_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ids = [spool.write(str(k).encode()) for k in range(300)]  # many within one millisecond
    assert spool.ready() == ids
    assert [int(spool.read(r).raw) for r in spool.ready()] == list(range(300))
    for rid in ids[:5]:
        assert spool.read(rid).received_at == utc_iso(uuid7_time_ns(rid))


def test_ack_keep_moves_into_the_sent_journal_and_requeue_brings_it_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    ids = [spool.write(f"r{i}".encode()) for i in range(4)]
    before = time.time()
    spool.ack(ids[1], keep=True)
    spool.ack(ids[3], keep=True)
    spool.ack(ids[0])  # without keep: deleted
    assert spool.ready() == [ids[2]]  # the journal folder is not a record
    assert spool.sent_ids() == [ids[1], ids[3]]
    assert spool.sent_stats()[0] == 2 and spool.count() == 1
    assert os.stat(spool.sent_path(ids[1])).st_mtime >= before - 1  # stamped at acknowledgement
    spool.ack(ids[1], keep=True)  # acknowledged twice (a resend): fine
    assert spool.requeue_sent() == 2
    assert spool.ready() == [ids[1], ids[2], ids[3]] and spool.sent_ids() == []
    assert spool.read(ids[3]).raw == b"r3"


def test_prune_sent_by_age_then_size_oldest_first_and_drop_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ids = [spool.write(b"x" * 100) for _ in range(6)]
    for rid in ids:
        spool.ack(rid, keep=True)
    now = time.time()
    os.utime(spool.sent_path(ids[0]), (now - 1000, now - 1000))
    size = os.stat(spool.sent_path(ids[1])).st_size
    assert spool.prune_sent(max_age=500, max_bytes=10**9, now=now) == 1
    assert spool.sent_ids() == ids[1:]
    assert spool.prune_sent(max_age=500, max_bytes=3 * size, now=now) == 2  # the two oldest go
    assert spool.sent_ids() == ids[3:]
    assert spool.drop_sent([ids[3], ids[0]]) == 1
    assert spool.sent_ids() == ids[4:]
    assert spool.prune_sent(max_age=500, max_bytes=0, now=now) == 2 and spool.sent_stats() == (0, 0)
