"""The live dashboard ``outloop up`` serves: one page and a small read-only JSON API.

``GET /`` is the page (``outloop/web``: HTML, CSS and the JS that draws its charts as SVG; no CDN, it works
offline), ``GET /api/<panel>`` one panel's figures (:mod:`outloop.dashdata`, read through the running
worker's ``/query``, the path of every CLI command), ``GET /api/health`` the state of each component of
the stack. The page asks again every few seconds.

Security: it binds loopback by default (``OUTLOOP_DASHBOARD_HOST``), answers GET and HEAD only (every
other method 405: nothing here writes), and refuses (403) a request whose ``Host`` is not a name of this
machine (DNS rebinding), whose ``Origin`` is another site's, or that a browser marks as cross-site
(``Sec-Fetch-Site``). Answers carry a Content-Security-Policy that allows only this origin, no framing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson

from outloop import dashdata
from outloop.streams.httpguard import allowed_hosts, host_name

log = logging.getLogger("outloop.dashboard")

ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
          "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}
API = frozenset({"quota", "patterns", "context", "routing", "recommendations", "dead_letters", "health"})
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store"}
CACHE_S = 2.0  # a panel asked again within this many seconds is answered from the last answer


def refusal(method: str, path: str, headers: Mapping[str, str] | Message, allowed: frozenset[str],
            port: int) -> tuple[int, str] | None:
    """(status, reason) when a request must not be answered, else None. Pure: the test of every rule."""
    host = headers.get("Host")
    if host is None or host_name(host) not in allowed:
        return 403, f"Host {host!r} is not a name of this machine"
    origin = headers.get("Origin")
    if origin is not None:
        parts = urlsplit(origin)
        try:
            origin_port = parts.port or 80
        except ValueError:
            origin_port = -1
        if parts.scheme != "http" or host_name(parts.netloc) not in allowed or origin_port != port:
            return 403, f"requests from {origin} are refused (only this dashboard's own page may ask)"
    if headers.get("Sec-Fetch-Site", "same-origin").lower() not in ("same-origin", "none"):
        return 403, "cross-site requests are refused"
    if method not in ("GET", "HEAD"):
        return 405, "the dashboard is read-only: GET and HEAD only"
    name = path.removeprefix("/api/")
    if path not in ASSETS and not (path.startswith("/api/") and name in API):
        return 404, f"no such page: {path}"
    return None


def component_health(stack: Any) -> dict[str, dict[str, Any]]:
    """Each component of an ``outloop up`` stack: up or not, and a line of detail (duck-typed on
    :class:`outloop.runtime.Stack`, whose supervisor restarts what stopped)."""
    s = stack.settings
    worker = stack.worker
    worker_up = worker is not None and worker.poll() is None
    health = stack.client.health(timeout=2.0) if worker_up else None
    sink = (health or {}).get("sink")
    out: dict[str, dict[str, Any]] = {
        "broker": {"ok": bool(stack.broker_alive()), "detail": f"{s.broker}{' (embedded)' if stack.broker else ''}"},
        "worker": {"ok": health is not None, "detail": f"pid {worker.pid if worker else None}, "
                   f"{(health or {}).get('assigned')} partitions, restarts {stack.worker_restarts}"},
        "sink": {"ok": sink is not None, "detail": f"pid {(health or {}).get('sink_pid')}, {s.db}"},
    }
    components = {c.name: c for c in getattr(stack, "components", [])}  # the lifecycle interface
    for name in ("forwarder", "tailer"):
        component = components.get(name)
        alive = component is not None and bool(component.alive())
        out[name] = {"ok": alive, "detail": "running" if alive else "not running"}
    router = stack.router
    out["router"] = {"ok": router is not None and bool(router.alive()),
                     "detail": str(router.socket_path) if router is not None else "not started"}
    return out


class Dashboard:
    """The dashboard's HTTP server in a daemon thread. ``query`` reads the database (the worker's
    ``/query``), ``health`` says how the components are, ``now`` is the clock (passed in for tests)."""

    def __init__(self, host: str, port: int, query: dashdata.Query, health: Callable[[], dict[str, Any]],
                 config: Callable[[], Any], now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.query, self.health, self.config, self.now = query, health, config, now
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.allowed = allowed_hosts(host)
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.host = host

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> Dashboard:
        self._thread = threading.Thread(target=self.server.serve_forever, name="outloop-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, name: str, clock: float) -> bytes:
        """One API answer, kept ``CACHE_S`` seconds (several open pages cost the sink one read)."""
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and clock - cached[0] < CACHE_S:
                return cached[1]
        if name == "health":
            try:
                body: dict[str, Any] = {"data": self.health()}
            except Exception as exc:  # noqa: BLE001 - shown in the panel
                body = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            body = dashdata.panel(name, self.query, self.now(), self.config())
        body["at"] = self.now().isoformat()
        data = orjson.dumps(body, default=str)
        with self._lock:
            self._cache[name] = (clock, data)
        return data


def _handler(dash: Dashboard) -> type[BaseHTTPRequestHandler]:
    import time

    class Handler(BaseHTTPRequestHandler):
        server_version = "outloop-dashboard"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _serve(self) -> None:
            path = urlsplit(self.path).path
            refused = refusal(self.command, path, self.headers, dash.allowed, dash.port)
            if refused is not None:
                status, reason = refused
                self._send(status, orjson.dumps({"error": reason}), "application/json")
                return
            if path in ASSETS:
                name, content_type = ASSETS[path]
                self._send(200, resources.files("outloop.web").joinpath(name).read_bytes(), content_type)
                return
            self._send(200, dash.answer(path.removeprefix("/api/"), time.monotonic()), "application/json")

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve  # noqa: N815

    return Handler


def serve(stack: Any) -> Dashboard | None:
    """The dashboard of a running ``outloop up`` stack on ``OUTLOOP_DASHBOARD_HOST:PORT`` (None when the
    port is -1), reading through the stack's worker."""
    from outloop.agents.quota_risk import QuotaConfig

    s = stack.settings
    if s.dashboard_port < 0:
        return None
    return Dashboard(s.dashboard_host, s.dashboard_port, lambda sql, params: stack.client.query(sql, params),
                     lambda: component_health(stack), QuotaConfig.load).start()
