"""outloop: watches coding agents, moves their deterministic work out of the LLM loop, keeps them in quota.

``from outloop import OutloopClient`` is the ADW client (loaded on first use: the hook shim and the
runner import this package on every tool call and must not pay for it: not even ``typing``, whose
import costs more than a bare interpreter start)."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing took the runner's start-up to 2.7x
if TYPE_CHECKING:  # for type checkers (the package is typed: py.typed); at run time, loaded on first use
    from typing import Any

    from outloop.client import OutloopClient, QueryError, RouteDecision

__all__ = ["OutloopClient", "QueryError", "RouteDecision"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("OutloopClient", "RouteDecision", "QueryError"):
        from outloop import client

        return getattr(client, name)
    raise AttributeError(f"module 'outloop' has no attribute {name!r}")
