"""The worker process: the Faust agents, the DuckDB sink (the only writer of the database file) and
the HTTP endpoint through which everything else reads while the worker runs.

HTTP (loopback by default):
  GET  /health            -> {"ok": true, ...counters}
  POST /query             -> body {"sql": "...", "params": [...]}; read-only statements only
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Any

import faust
import orjson
from mode import Service

from agents.pricing import PriceTable, load_prices
from agents.sessions import app_stats, register
from schemas.topics import TopicCatalogue
from sinks.consumer import SinkConsumer
from sinks.query import QueryRejected
from sinks.writer import DuckSink
from streams.app import create_app
from streams.settings import Settings

log = logging.getLogger("outloop.worker")


def build(settings: Settings, bootstrap: str) -> faust.App:
    app, topics = create_app(settings, bootstrap)
    prices = load_prices(settings.prices) if settings.prices else PriceTable.default()
    register(app, topics, settings, price=prices.cost_usd)
    catalogue = TopicCatalogue(prefix=settings.topic_prefix)
    holder: dict[str, Any] = {}
    loopback = settings.http_host in LOOPBACK_NAMES or settings.http_host.startswith("127.")

    class SinkService(Service):
        """Owns the DuckDB file for the worker's lifetime."""

        async def on_start(self) -> None:
            settings.db.parent.mkdir(parents=True, exist_ok=True)
            sink = DuckSink(settings.db).open()
            holder["sink"] = sink
            self._stop = asyncio.Event()
            consumer = SinkConsumer(bootstrap, sink, catalogue, max_batch=settings.sink_batch)
            holder["consumer"] = consumer
            self._task = asyncio.ensure_future(consumer.run(self._stop))
            self._task.add_done_callback(self._on_done)

        def _on_done(self, task: asyncio.Future[None]) -> None:
            # the sink must never stop silently: a dead sink takes the worker down with it
            if not task.cancelled() and task.exception() is not None and not self._stop.is_set():
                log.error("DuckDB sink stopped: %r", task.exception())
                asyncio.ensure_future(self.crash(task.exception()))  # type: ignore[arg-type]

        async def on_stop(self) -> None:
            self._stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout=15)
            sink = holder.pop("sink", None)
            if sink is not None:
                sink.close()

    app.service(SinkService)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        consumer = holder.get("consumer")
        body = {"ok": "sink" in holder, "agents": dict(app_stats(app)),
                "sink": consumer.progress() if consumer is not None else None}
        return web.bytes(orjson.dumps(body), content_type="application/json")

    @app.page("/query")
    class Query(faust.web.View):
        async def post(self, request: Any) -> Any:
            refused = _refuse_cross_site(request, loopback)
            if refused:
                return self.bytes(orjson.dumps({"error": refused}), status=403, content_type="application/json")
            sink = holder.get("sink")
            if sink is None:
                return self.bytes(orjson.dumps({"error": "sink not ready"}), status=503,
                                  content_type="application/json")
            try:
                body = orjson.loads(await request.read())
                sql = body["sql"]
                params = body.get("params")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return self.bytes(orjson.dumps({"error": "body must be {\"sql\": ..., \"params\": [...]}"}),
                                  status=400, content_type="application/json")
            loop = asyncio.get_running_loop()
            try:
                columns, rows = await loop.run_in_executor(None, sink.query, sql, params)
            except QueryRejected as exc:
                return self.bytes(orjson.dumps({"error": str(exc)}), status=403, content_type="application/json")
            except Exception as exc:  # a bad query is the caller's problem, not the worker's
                return self.bytes(orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}), status=400,
                                  content_type="application/json")
            return self.bytes(orjson.dumps({"columns": columns, "rows": rows}, default=str),
                              content_type="application/json")

    return app


LOOPBACK_NAMES = {"127.0.0.1", "localhost", "[::1]", "::1"}


def _refuse_cross_site(request: Any, loopback: bool) -> str | None:
    """A web page can POST to 127.0.0.1 but cannot send a JSON content type without a CORS preflight
    (which this endpoint never grants), nor forge the Host header: DNS-rebinding and simple cross-site
    requests are refused."""
    if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
        return "queries must be sent with Content-Type: application/json"
    host = request.headers.get("Host", "")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    if loopback and name not in LOOPBACK_NAMES:
        return f"Host {host!r} is not this machine's loopback address"
    return None


def run(settings: Settings) -> None:
    """Run the worker until SIGTERM/SIGINT. Needs ``settings.broker`` (``outloop up`` passes it)."""
    from faust.worker import Worker

    if not settings.broker:
        sys.exit("outloop worker needs OUTLOOP_BROKER (use 'outloop up' to start an embedded broker)")
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)
    app = build(settings, settings.broker)
    Worker(app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()


if __name__ == "__main__":
    run(Settings.from_env())
