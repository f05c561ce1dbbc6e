"""DuckDB materializer: the one writer of the database (``DuckSink``), its Kafka consumer
(``SinkConsumer``) and the read-only query path.

Modules: ``schema`` (DDL, views, migrations), ``decode`` (records -> folded rows), ``upsert`` (the
SQL merge rules), ``writer`` (transactions, offsets, errors), ``consumer`` (Kafka -> writer, log
restart detection), ``query`` (read-only statements), ``service`` (the sink's child process),
``errors`` (exceptions shared with the worker).

The names below are imported on first use: the worker's agents process imports ``sinks.service``
and ``sinks.errors`` and must not load DuckDB and Arrow with this package (~55 MB of RSS).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sinks.errors import QueryRejected
    from sinks.query import open_readonly, run_readonly
    from sinks.writer import DuckSink, ErrorKind, SinkError, StoredOffset, WriteResult, classify_error

_WHERE = {
    "DuckSink": "sinks.writer",
    "ErrorKind": "sinks.writer",
    "QueryRejected": "sinks.errors",
    "SinkError": "sinks.writer",
    "StoredOffset": "sinks.writer",
    "WriteResult": "sinks.writer",
    "classify_error": "sinks.writer",
    "open_readonly": "sinks.query",
    "run_readonly": "sinks.query",
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
