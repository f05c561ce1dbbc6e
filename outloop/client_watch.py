"""Following the router's and the quota's decisions as they reach the database: the iterator and
callback forms of :meth:`outloop.OutloopClient.subscribe`.

Why the sink and not the Kafka topics: routing decisions travel hook spool -> forwarder -> broker ->
sessions agent -> DuckDB, and throttle decisions are made by the sink itself (no topic carries
them); the sink is the one place that holds both, deduplicated, and keeps them when the embedded
broker restarts empty. So a subscription polls the read-only query endpoint (or the file when no
worker runs) every ``poll`` seconds: each decision is delivered once per subscription, about a
second after it was made on a live ``outloop up`` (the pipeline's latency plus the poll).

Order and completeness: decisions are read in the order of their own time (``decided_at``,
throttle ``at``) and id. A decision whose time is more than ``lookback`` seconds older than the
newest one already delivered when it reaches the database is not delivered (the spool holds
decisions back while the broker is down; they keep their times, so they arrive together). A
subscription without ``since`` delivers only what reaches the database after it started."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

Fetch = Callable[[str, list[Any]], tuple[list[str], list[list[Any]]]]

# kind -> (table, time column, id column)
SOURCES: dict[str, tuple[str, str, str]] = {
    "routing": ("routing_decisions", "decided_at", "decision_id"),
    "throttle": ("throttle_decisions", '"at"', "id"),
}
PAGE = 1000


@dataclass(frozen=True)
class Decision:
    """One routing or throttle decision: ``kind`` (``routing`` | ``throttle``), its id and time, and
    the whole row (the columns of ``routing_decisions`` or ``throttle_decisions``)."""

    kind: str
    id: str
    at: datetime
    row: dict[str, Any]


def as_time(value: Any) -> datetime:
    """A timestamp from the query endpoint (ISO text) or from DuckDB (a datetime), in UTC."""
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class Cursor:
    """Where one kind of decision was read up to, and the ids already delivered within ``lookback``."""

    def __init__(self, kind: str, since: datetime | None, lookback: float) -> None:
        if kind not in SOURCES:
            raise ValueError(f"kind must be one of {sorted(SOURCES)}")
        self.kind = kind
        self.since = since
        self.lookback = timedelta(seconds=lookback)
        self.newest: datetime | None = None
        self.seen: dict[str, datetime] = {}

    def low(self, now: datetime) -> datetime:
        """The earliest time the next poll reads from."""
        if self.newest is None:
            return self.since if self.since is not None else now - self.lookback
        low = self.newest - self.lookback
        return max(low, self.since) if self.since is not None else low

    def poll(self, fetch: Fetch, now: datetime, deliver: bool = True) -> list[Decision]:
        """The decisions not delivered yet; ``deliver=False`` only marks what exists as seen."""
        table, time_col, id_col = SOURCES[self.kind]
        low = self.low(now)
        out: list[Decision] = []
        after: tuple[str, str] | None = None
        while True:
            where = f"{time_col} >= CAST(? AS TIMESTAMPTZ)"
            params: list[Any] = [low.isoformat()]
            if after is not None:
                where += f" AND ({time_col} > CAST(? AS TIMESTAMPTZ) OR ({time_col} = CAST(? AS TIMESTAMPTZ) " \
                         f"AND {id_col} > ?))"
                params += [after[0], after[0], after[1]]
            sql = f"SELECT * FROM {table} WHERE {where} ORDER BY {time_col}, {id_col} LIMIT {PAGE}"
            columns, rows = fetch(sql, params)
            for values in rows:
                row = dict(zip(columns, values, strict=True))
                key, at = str(row[id_col.strip('"')]), as_time(row[time_col.strip('"')])
                if key not in self.seen:
                    self.seen[key] = at
                    if deliver:
                        out.append(Decision(self.kind, key, at, row))
                if self.newest is None or at > self.newest:
                    self.newest = at
            if len(rows) < PAGE:
                break
            last = dict(zip(columns, rows[-1], strict=True))
            after = (as_time(last[time_col.strip('"')]).isoformat(), str(last[id_col.strip('"')]))
        if self.newest is not None:
            floor = self.newest - self.lookback
            self.seen = {k: t for k, t in self.seen.items() if t >= floor}
        return out


class Subscription:
    """Iterate it (``for d in sub``) or give :meth:`outloop.OutloopClient.subscribe` a callback, which
    then runs in a daemon thread of its own. ``close()`` ends both; ``timeout`` (seconds) ends the
    iteration on its own. A poll that fails (the worker restarting) is retried at the next one; the
    last error is kept in ``last_error``."""

    def __init__(self, fetch: Fetch, kinds: tuple[str, ...], *, since: datetime | None = None,
                 poll: float = 0.5, lookback: float = 300.0, timeout: float | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._fetch = fetch
        self._cursors = [Cursor(k, since, lookback) for k in kinds]
        self._since = since
        self.poll_every = poll
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timedelta(seconds=timeout)
        self._stop = threading.Event()
        self._buffer: list[Decision] = []
        self._primed = since is not None
        self.last_error: str | None = None
        self.thread: threading.Thread | None = None

    def close(self) -> None:
        self._stop.set()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def poll_once(self) -> list[Decision]:
        """One look at the database: the new decisions, oldest first (also used by the iterator)."""
        now = self._clock()
        found: list[Decision] = []
        try:
            for cursor in self._cursors:
                found += cursor.poll(self._fetch, now, deliver=self._primed)
        except Exception as exc:  # the worker restarting, the file locked: try again at the next poll
            self.last_error = f"{type(exc).__name__}: {exc}"
            return []
        self._primed = True
        self.last_error = None
        return sorted(found, key=lambda d: (d.at, d.kind, d.id))

    def __iter__(self) -> Iterator[Decision]:
        return self

    def __next__(self) -> Decision:
        while not self._buffer:
            if self._stop.is_set() or (self._deadline is not None and self._clock() >= self._deadline):
                raise StopIteration
            self._buffer = self.poll_once()
            if not self._buffer:
                self._stop.wait(self.poll_every)
        return self._buffer.pop(0)

    def run_callback(self, callback: Callable[[Decision], None]) -> Subscription:
        """Call ``callback`` with every decision from a daemon thread until :meth:`close`. An exception
        in the callback is kept in ``last_error`` and the subscription goes on."""

        def loop() -> None:
            for decision in self:
                try:
                    callback(decision)
                except Exception as exc:
                    self.last_error = f"callback: {type(exc).__name__}: {exc}"

        self.thread = threading.Thread(target=loop, name="outloop-subscription", daemon=True)
        self.thread.start()
        return self
