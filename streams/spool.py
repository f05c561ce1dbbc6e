"""The hook spool: one file per hook payload in a local folder, shared by the shim and the forwarder.

Stdlib only and cheap to import: the hook shim imports it on every tool call of the agent, so this
module must not import pathlib, json, re, enum or typing at load time.

Record file ``<uuid7>.rec``::

    {"v":1,"id":"<uuid7>","received_at":"2026-01-31T12:00:00.123456Z","len":1234}\\n
    <exactly len raw bytes of the hook's stdin>

The header may also hold ``"trunc": "size" | "timeout"`` when the shim kept only part of its stdin,
and ``"tail": N`` when the last N bytes of the body are the last bytes of stdin, after a gap of bytes
the shim dropped (it keeps the first 16 MiB and the last 64 KiB of a larger payload), and
``"src": "router"`` for a record the router component wrote (its body is an event envelope, not a
hook payload; the shim never writes that field).
A record is written to a hidden temp file ``.<uuid7>.tmp`` in the same folder and renamed into place,
so a reader never sees a half-written record. UUIDv7 text sorts by time, so the sorted file names
are the arrival order (to a fraction of a millisecond across processes).

The *sent journal* ``sent/`` keeps the records the forwarder shipped: an acknowledged record is
moved there (its modification time set to the acknowledgement), so that what a memory-only broker
acknowledged and then lost in a restart can be sent again (:meth:`Spool.requeue_sent` moves the
journal back into the spool). Entries leave the journal when proven stored downstream
(:meth:`Spool.drop_sent`) or by age and size (:meth:`Spool.prune_sent`).
"""

# contextlib.suppress is not used: importing contextlib costs the shim more than it saves.
# ruff: noqa: SIM105

import os
import time

SUFFIX = ".rec"
SENT_DIR = "sent"
TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"
FORMAT_VERSION = 1

_last_stamp = 0  # (ms << 12 | sub-ms fraction) of the last uuid7 made by this process


def default_spool_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> str:
    """``OUTLOOP_SPOOL``, else ``$OUTLOOP_HOME/spool``, else ``~/.outloop/spool`` (as in settings)."""
    env = os.environ if environ is None else environ
    spool = env.get("OUTLOOP_SPOOL")
    if not spool:
        home = os.path.expanduser(env.get("OUTLOOP_HOME") or os.path.join("~", ".outloop"))
        spool = os.path.join(home, "spool")
    return os.path.expanduser(spool)


def uuid7(ns: int | None = None) -> str:
    """A UUIDv7 (RFC 9562) as text: 48-bit Unix milliseconds, 12 bits of sub-millisecond fraction
    (method 3, so ids of different processes sort by time too), 62 random bits. Ids stamped with
    the clock (``ns`` None) are strictly increasing within one process; an explicit ``ns`` is kept."""
    global _last_stamp
    auto = ns is None
    if ns is None:
        ns = time.time_ns()
    ms, rest = divmod(ns, 1_000_000)
    stamp = (ms << 12) | (rest * 4096 // 1_000_000)
    if auto:
        if stamp <= _last_stamp:
            stamp = _last_stamp + 1
        _last_stamp = stamp
    rnd = int.from_bytes(os.urandom(8), "big")
    hi = ((stamp >> 12) << 16) | 0x7000 | (stamp & 0xFFF)
    lo = (rnd & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
    h = f"{hi:016x}{lo:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_time_ns(uid: str) -> int:
    """The Unix time of a uuid7 made by :func:`uuid7`, in ns (to ~244 ns)."""
    h = uid.replace("-", "")
    ms = int(h[:12], 16)
    sub = int(h[13:16], 16)
    return ms * 1_000_000 + sub * 1_000_000 // 4096


def utc_iso(ns: int) -> str:
    """ISO-8601 UTC with microseconds and a ``Z``: ``2026-01-31T12:00:00.123456Z``."""
    s, rest = divmod(ns, 1_000_000_000)
    t = time.gmtime(s)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{rest // 1000:06d}Z"
    )


class SpoolCorrupt(Exception):
    """A record file whose header is unreadable or whose body is shorter than announced (a crash or
    power loss before the data reached the disk). ``data`` is the whole file as found."""

    def __init__(self, id: str, data: bytes, reason: str) -> None:
        super().__init__(f"spool record {id}: {reason}")
        self.id = id
        self.data = data
        self.reason = reason


class SpoolRecord:
    __slots__ = ("id", "received_at", "raw", "trunc", "tail", "source")

    def __init__(self, id: str, received_at: str, raw: bytes, trunc: str | None = None, tail: int = 0,
                 source: str | None = None) -> None:
        self.id = id
        self.received_at = received_at
        self.raw = raw
        self.trunc = trunc
        self.tail = tail  # the last ``tail`` bytes of ``raw`` are the end of stdin, after a gap
        self.source = source

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.id, self.received_at, self.raw))

    def __repr__(self) -> str:
        return f"SpoolRecord(id={self.id!r}, received_at={self.received_at!r}, raw={len(self.raw)} bytes)"


class Spool:
    """A folder of records. ``write`` is safe from any number of concurrent processes; reading and
    acknowledging belong to one forwarder at a time."""

    def __init__(self, folder: str | os.PathLike[str], fsync: bool = False) -> None:
        self.folder = os.fspath(folder)
        self.fsync = fsync

    def __repr__(self) -> str:
        return f"Spool({self.folder!r})"

    def path(self, id: str) -> str:
        return os.path.join(self.folder, id + SUFFIX)

    # -- writing (the shim) -------------------------------------------------------------------
    def write(self, raw: bytes, *, ns: int | None = None, trunc: str | None = None, tail: int = 0,
              source: str | None = None) -> str:
        """Store ``raw`` as a new record stamped ``ns`` (default: now); returns its id. ``tail``: how
        many of the last bytes of ``raw`` come after a gap (see the module docstring). ``source``
        ("router") marks a record whose body is an event envelope rather than a hook payload."""
        rid = uuid7(ns)
        if ns is None:
            ns = uuid7_time_ns(rid)
        extra = f',"trunc":"{trunc}"' if trunc else ""
        if tail:
            extra += f',"tail":{int(tail)}'
        if source:
            extra += f',"src":"{source}"'
        header = (
            f'{{"v":{FORMAT_VERSION},"id":"{rid}","received_at":"{utc_iso(ns)}","len":{len(raw)}{extra}}}\n'
        ).encode("ascii")
        tmp = os.path.join(self.folder, TMP_PREFIX + rid + TMP_SUFFIX)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:
            os.makedirs(self.folder, 0o700, exist_ok=True)
            fd = os.open(tmp, flags, 0o600)
        try:
            try:
                _write_all(fd, header)
                _write_all(fd, raw)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path(rid))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return rid

    # -- reading (the forwarder) --------------------------------------------------------------
    def ready(self, limit: int | None = None) -> list[str]:
        """Ids of complete records, oldest first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        ids = sorted(n[: -len(SUFFIX)] for n in names if n.endswith(SUFFIX) and not n.startswith(TMP_PREFIX))
        return ids if limit is None else ids[:limit]

    def read(self, id: str) -> SpoolRecord:
        """The record ``id``; raises :class:`SpoolCorrupt` when its file is damaged and
        ``FileNotFoundError`` when it is gone."""
        import json

        with open(self.path(id), "rb") as f:
            data = f.read()
        nl = data.find(b"\n")
        if nl < 0:
            raise SpoolCorrupt(id, data, "no header line")
        try:
            header = json.loads(data[:nl])
            rid = header["id"]
            received_at = header["received_at"]
            length = int(header["len"])
            version = header["v"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SpoolCorrupt(id, data, f"bad header: {exc}") from None
        if version != FORMAT_VERSION or not isinstance(rid, str) or not isinstance(received_at, str):
            raise SpoolCorrupt(id, data, f"unknown header {header!r}")
        raw = data[nl + 1 :]
        if len(raw) != length:
            raise SpoolCorrupt(id, data, f"body has {len(raw)} bytes, header says {length}")
        trunc = header.get("trunc")
        tail = header.get("tail")
        tail = tail if isinstance(tail, int) and not isinstance(tail, bool) and 0 < tail <= len(raw) else 0
        src = header.get("src")
        return SpoolRecord(rid, received_at, raw, trunc if isinstance(trunc, str) else None, tail,
                           src if isinstance(src, str) else None)

    def ack(self, id: str, keep: bool = False) -> None:
        """The record's publication was acknowledged: delete it, or with ``keep`` move it into the
        sent journal. Missing is fine."""
        if not keep:
            try:
                os.unlink(self.path(id))
            except FileNotFoundError:
                pass
            return
        dest = self.sent_path(id)
        try:
            os.rename(self.path(id), dest)
        except FileNotFoundError:
            if os.path.isdir(self.sent_folder):
                return  # gone already
            os.makedirs(self.sent_folder, 0o700, exist_ok=True)
            try:
                os.rename(self.path(id), dest)
            except FileNotFoundError:
                return
        try:
            os.utime(dest)  # the journal's clock: when the broker acknowledged it
        except FileNotFoundError:
            pass

    # -- the sent journal (the forwarder) -----------------------------------------------------
    @property
    def sent_folder(self) -> str:
        return os.path.join(self.folder, SENT_DIR)

    def sent_path(self, id: str) -> str:
        return os.path.join(self.sent_folder, id + SUFFIX)

    def _sent_entries(self) -> list[tuple[str, float, int]]:
        """(id, acknowledged at, bytes) of every journal entry, oldest id first."""
        try:
            entries = list(os.scandir(self.sent_folder))
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            if e.name.endswith(SUFFIX) and not e.name.startswith(TMP_PREFIX):
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                out.append((e.name[: -len(SUFFIX)], st.st_mtime, st.st_size))
        out.sort()
        return out

    def sent_ids(self) -> list[str]:
        """Ids in the sent journal, oldest first."""
        return [rid for rid, _, _ in self._sent_entries()]

    def sent_stats(self) -> tuple[int, int]:
        """(entries, total bytes) of the sent journal."""
        entries = self._sent_entries()
        return len(entries), sum(size for _, _, size in entries)

    def requeue_sent(self) -> int:
        """Move every journal entry back into the spool (to be sent again); returns how many."""
        moved = 0
        for rid in self.sent_ids():
            try:
                os.rename(self.sent_path(rid), self.path(rid))
                moved += 1
            except FileNotFoundError:
                pass
        return moved

    def drop_sent(self, ids: "list[str] | set[str]") -> int:
        """Delete these journal entries (proven stored downstream); returns how many were there."""
        dropped = 0
        for rid in ids:
            try:
                os.unlink(self.sent_path(rid))
                dropped += 1
            except FileNotFoundError:
                pass
        return dropped

    def prune_sent(self, max_age: float, max_bytes: int, now: float | None = None) -> int:
        """Delete journal entries acknowledged more than ``max_age`` seconds ago, then the oldest
        until the journal holds at most ``max_bytes``; returns how many were deleted."""
        now = time.time() if now is None else now
        entries = self._sent_entries()
        total = sum(size for _, _, size in entries)
        doomed = []
        for rid, acked, size in entries:
            if acked < now - max_age or total > max_bytes:
                doomed.append(rid)
                total -= size
        return self.drop_sent(doomed)

    def sweep(self, older_than: float = 300.0, now: float | None = None) -> int:
        """Delete temp files left by shims killed mid-write, older than ``older_than`` seconds."""
        now = time.time() if now is None else now
        removed = 0
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        for e in entries:
            if not (e.name.startswith(TMP_PREFIX) and e.name.endswith(TMP_SUFFIX)):
                continue
            try:
                if e.stat().st_mtime < now - older_than:
                    os.unlink(e.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def stats(self) -> tuple[int, int]:
        """(record count, total bytes of the records)."""
        count = size = 0
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0, 0
        for e in entries:
            if e.name.endswith(SUFFIX) and not e.name.startswith(TMP_PREFIX):
                try:
                    size += e.stat().st_size
                    count += 1
                except FileNotFoundError:
                    pass
        return count, size

    def count(self) -> int:
        return self.stats()[0]

    def total_bytes(self) -> int:
        return self.stats()[1]

    def temp_files(self) -> list[str]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.startswith(TMP_PREFIX) and n.endswith(TMP_SUFFIX))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
