"""The projection interface: derived tables the one writer keeps up to date, without knowing what they derive.

A projection (patterns, context efficiency, quota, ...) turns stored facts into tables of its own. The
writer (:class:`sinks.writer.DuckSink`) is handed a list of them by the layer that composes the product
(``outloop.projections``), so storage never imports the capability code a projection calls. Each one:

* has a ``version``: the writer stores it in ``projection_versions``; when it differs at open (or
  :meth:`Projection.stale` says so), :meth:`Projection.rebuild` brings every derived row to the current
  version, in transactions of the projection's choosing (chunks survive a crash);
* may ``enrich`` staged rows of a fact table with columns it derives (signatures of tool calls), in
  the ingest transaction, so they are stored with the row;
* makes cheap dirty marks in the ingest transaction (:meth:`Projection.mark`): a crash between the
  batch and the refresh leaves the refresh owed, never lost;
* with a flush marker in the batch, brings everything up to date in that same transaction
  (:meth:`Projection.flush`), so whoever sees the marker reads final rows;
* refreshes what its marks owe between batches, when it says it is :meth:`Projection.due`, within a
  time budget (:meth:`Projection.refresh`), in a transaction of its own;
* may answer ``requests`` that must be serialized with every write (workflow budget checks, discovery);
* hears when its transaction committed (:meth:`Projection.committed`): what it produced for the world
  outside the database (decisions to publish) goes out only then.

A projection whose refresh is not ``essential`` fails open: its error is logged, the sink goes on.
An essential one makes the write fail, and the caller retries the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from outloop.sinks.decode import Folded

Enricher = Callable[[pa.Table], pa.Table]  # staged rows of a table -> the same rows with derived columns
Request = Callable[..., Any]  # (connection, now, *args) -> answer, run in a write transaction


class Writer(Protocol):
    """What a rebuild sees of the writer: its connection and its transactions."""

    @property
    def con(self) -> duckdb.DuckDBPyConnection: ...

    def transaction(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...


class Projection:
    """Base class: a projection that derives nothing. Subclasses override what they need."""

    name: str = ""
    essential: bool = True
    enrich: Mapping[str, Enricher] = {}
    requests: Mapping[str, Request] = {}

    @property
    def version(self) -> str:
        return "1"

    def stale(self, con: duckdb.DuckDBPyConnection, stored: str | None) -> bool:
        """Whether a rebuild is owed: by default when the stored version is not the current one."""
        return stored != self.version

    def rebuild(self, writer: Writer) -> None:
        """Bring every derived row to the current version (or mark it all dirty for the refresh)."""

    def mark(self, con: duckdb.DuckDBPyConnection, batch: Folded) -> None:
        """Record what ``batch`` makes dirty, in its transaction; cheap."""

    def flush(self, con: duckdb.DuckDBPyConnection, now: float) -> bool:
        """Everything up to date in the transaction of a batch carrying a flush marker; whether rows changed."""
        return False

    def committed(self) -> None:
        """The transaction of the last batch (with its marks and flush) or refresh committed: what the
        projection holds back until then (decisions to publish) may go out."""

    def due(self, now: float) -> bool:
        """Whether a refresh should run after the batch just written (``now``: a monotonic time)."""
        return False

    def refresh(self, con: duckdb.DuckDBPyConnection, now: float, deadline: float) -> bool:
        """Refresh what the marks owe, stopping at ``deadline`` (monotonic) where the work allows it;
        whether rows changed (the routing snapshot is then published again)."""
        return False


def enrichers(projections: list[Projection]) -> dict[str, Enricher]:
    """The staged-row enrichers of ``projections`` by table; two for one table is a composition error."""
    found: dict[str, Enricher] = {}
    for p in projections:
        for table, fn in p.enrich.items():
            if table in found:
                raise ValueError(f"two projections enrich {table}: compose them into one")
            found[table] = fn
    return found


def requests(projections: list[Projection]) -> dict[str, Request]:
    """The requests ``projections`` answer, by name; a name answered twice is a composition error."""
    found: dict[str, Request] = {}
    for p in projections:
        for name, fn in p.requests.items():
            if name in found:
                raise ValueError(f"two projections answer the request {name!r}")
            found[name] = fn
    return found


def stored_versions(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(con.execute("SELECT name, version FROM projection_versions").fetchall())


def store_version(con: duckdb.DuckDBPyConnection, name: str, version: str) -> None:
    con.execute("INSERT OR REPLACE INTO projection_versions VALUES (?, ?)", [name, version])


def stale_projections(con: duckdb.DuckDBPyConnection, projections: list[Projection]) -> Iterator[Projection]:
    stored = stored_versions(con)
    for p in projections:
        if p.stale(con, stored.get(p.name)):
            yield p
