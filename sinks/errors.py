"""Exceptions the worker's agents process shares with the sink, in a module that imports nothing: the
agents process must not load DuckDB or Arrow (tens of MB of RSS) only to name an exception."""

from __future__ import annotations


class QueryRejected(ValueError):
    """The statement is not a single read-only query."""


class QueryTimeout(RuntimeError):
    """The query ran past its time limit and was cancelled."""
