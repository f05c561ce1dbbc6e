"""DuckDB materializer: the one writer of the database (``DuckSink``), its Kafka consumer
(``SinkConsumer``) and the read-only query path.

Modules: ``schema`` (DDL, views, migrations), ``decode`` (records -> folded rows), ``upsert`` (the
SQL merge rules), ``writer`` (transactions, offsets, errors), ``consumer`` (Kafka -> writer, log
restart detection), ``query`` (read-only statements), ``service`` (the sink's child process),
``errors`` (exceptions shared with the worker), ``projection`` (the interface of the derived tables the
writer runs; the product's projections are ``outloop.projections``).

The names below are imported on first use: the worker's agents process imports ``sinks.service``
and ``sinks.errors`` and must not load DuckDB and Arrow with this package (~55 MB of RSS).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outloop.sinks.errors import QueryRejected
    from outloop.sinks.query import open_readonly, run_readonly
    from outloop.sinks.writer import DuckSink, ErrorKind, SinkError, StoredOffset, WriteResult, classify_error

_WHERE = {
    "DuckSink": "outloop.sinks.writer",
    "ErrorKind": "outloop.sinks.writer",
    "QueryRejected": "outloop.sinks.errors",
    "SinkError": "outloop.sinks.writer",
    "StoredOffset": "outloop.sinks.writer",
    "WriteResult": "outloop.sinks.writer",
    "classify_error": "outloop.sinks.writer",
    "open_readonly": "outloop.sinks.query",
    "run_readonly": "outloop.sinks.query",
}

__all__ = [
    "DuckSink",
    "ErrorKind",
    "QueryRejected",
    "SinkError",
    "StoredOffset",
    "WriteResult",
    "classify_error",
    "open_readonly",
    "run_readonly",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sinks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
