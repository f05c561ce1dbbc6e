"""The worker's HTTP endpoint answers only what outloop serves, and only to requests named for this
machine.

* **Host allow-list, always.** A web page that uses DNS rebinding makes the browser send its own
  domain as the ``Host`` header to the worker's address; refusing every name not on the list stops
  it whatever address the worker binds (loopback by default, ``0.0.0.0`` in the Docker image). The
  list is the loopback names, the address the endpoint binds (``0.0.0.0`` in the image: a client in
  the container connects to it by that name, and a browser sending it is on this machine's loopback
  anyway) and the names of ``OUTLOOP_HTTP_ALLOWED_HOSTS`` (comma-separated, e.g. a compose service
  name). Every path is behind it, ``/health`` included.
* **Known paths only.** Faust's own pages (``/router/``, ``/table/``, ...) are not part of outloop's
  interface; they answer 404, as any unknown path does, and a handler's unexpected error becomes a
  JSON 500 with the error's type, never a page from a half-served route.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger("outloop.worker")

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
PATHS = frozenset({"/health", "/query", "/budget", "/budget/release", "/quota", "/discover",
                   "/recommendations/feedback"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_name(header: str) -> str:
    """The name of a ``Host`` header without its port, lower-cased, IPv6 brackets and a trailing dot
    removed: ``[::1]:6066`` -> ``::1``, ``LocalHost.:80`` -> ``localhost``."""
    value = header.strip().lower()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a request's ``Host`` may carry: loopback, the bound address and ``extra``."""
    names = set(LOOPBACK_NAMES)
    names.update(host_name(n) for n in (bind, *extra) if n.strip())
    return frozenset(names)


def refusal(host_header: str | None, path: str, allowed: frozenset[str]) -> tuple[int, str] | None:
    """(status, message) when the request must not reach a handler, else None."""
    if host_header is None or host_name(host_header) not in allowed:
        return 403, f"Host {host_header!r} is not an allowed name of this worker (OUTLOOP_HTTP_ALLOWED_HOSTS)"
    if path not in PATHS:
        return 404, f"no such endpoint: {path} (outloop serves {', '.join(sorted(PATHS))})"
    return None


def _json(status: int, message: str) -> web.Response:
    return web.Response(body=orjson.dumps({"error": message}), status=status, content_type="application/json")


def middleware(allowed: frozenset[str]) -> Any:
    """An aiohttp middleware applying :func:`refusal` to every request, before any route."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = refusal(request.headers.get("Host"), request.path, allowed)
        if refused is not None:
            return _json(*refused)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return _json(exc.status, exc.reason)
        except Exception as exc:  # noqa: BLE001 - one bad request must not look like a broken worker
            log.exception("HTTP %s %s failed", request.method, request.path)
            return _json(500, f"{type(exc).__name__}: {exc}")

    return guard
