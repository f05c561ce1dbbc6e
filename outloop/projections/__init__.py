"""The product's derived tables, as projections the one writer runs (``sinks.projection``).

Storage (``sinks``) keeps a database and runs whatever projections it is handed; this package, a layer
above both storage and the capabilities, supplies them: ``patterns`` (occurrences, pattern state,
sequences), ``context`` (context efficiency) and ``quota`` (snapshots, forecasts, throttle decisions,
budget checks), wrapped by ``kinds``. :func:`open_sink` is the sink with all of them, as the worker's
sink process opens it (the worker names :func:`standard` to ``sinks.service``, which resolves it in the
sink's own process).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from outloop.projections.kinds import standard
from outloop.sinks.writer import DuckSink


def open_sink(path: str | Path, clock: Callable[[], datetime] | None = None,
              memory_limit: str | None = None) -> DuckSink:
    """The sink of the database at ``path`` with the product's projections."""
    return DuckSink(path, clock=clock, memory_limit=memory_limit, projections=standard())


__all__ = ["open_sink", "standard"]
