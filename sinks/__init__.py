"""DuckDB materializer: the one writer of the database (``DuckSink``), its Kafka consumer
(``SinkConsumer``) and the read-only query path.

Modules: ``schema`` (DDL, views, migrations), ``decode`` (records -> folded rows), ``upsert`` (the
SQL merge rules), ``writer`` (transactions, offsets, errors), ``consumer`` (Kafka -> writer, log
restart detection), ``query`` (read-only statements).
"""

from sinks.query import QueryRejected, open_readonly, run_readonly
from sinks.writer import DuckSink, ErrorKind, SinkError, StoredOffset, WriteResult, classify_error

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
