"""The worker process: the Faust agents, the DuckDB sink (the only writer of the database file, in a
child process of its own: ``sinks.service``) and the HTTP endpoint through which everything else
reads while the worker runs.

HTTP (loopback by default; every request's Host is checked and unknown paths answer 404, see
``streams.httpguard``):
  GET  /health            -> {"ok": true, "assigned": <input partitions held>, "db": <the database file it
                              owns, absolute and resolved>, "pid": <the worker's pid>, "broker": <its bootstrap
                              servers, where ADW clients publish>, ...counters}
  POST /query             -> body {"sql": "...", "params": [...]}; read-only statements only
  POST /budget            -> body {"workflow": "...", "estimated_tokens": n|null, "run_id": ..., "ttl_s": ...}
  POST /budget/release    -> body {"id": "budget:N"}
  GET  /quota             -> the latest quota snapshots, forecasts and throttle decision (for dashboards)
  POST /discover          -> body {}: run discovery now; the current recommendations (docs/discovery.md)
  POST /recommendations/feedback -> body {"id": "rec-...", "action": "accept|reject|filed", "rule", "url", "note"}
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import faust
import orjson
from mode import Service

from outloop.agents.pricing import PriceTable, load_prices
from outloop.agents.sessions import app_stats, register
from outloop.sinks.errors import QueryRejected, QueryTimeout
from outloop.sinks.service import SinkProcess, SinkUnavailable
from outloop.streams import httpguard
from outloop.streams.app import create_app
from outloop.streams.heaps import Trimmer, limit_arenas
from outloop.streams.logfiles import quiet_repeats
from outloop.streams.settings import Settings

log = logging.getLogger("outloop.worker")
PROJECTIONS = "outloop.projections:standard"  # the derived tables the sink process runs, by name (see sinks.service)


def _assigned(app: faust.App) -> int | None:
    """Input partitions the agents' consumer holds now (0 while its group rebalances)."""
    try:
        return len(app.consumer.assignment())
    except Exception:  # noqa: BLE001 - not started yet, or stopping
        return None


def build(settings: Settings, bootstrap: str) -> faust.App:
    app, topics = create_app(settings, bootstrap)
    prices = load_prices(settings.prices) if settings.prices else PriceTable.default()
    register(app, topics, settings, price=prices.cost_usd)
    holder: dict[str, Any] = {}
    # what /health says this worker owns: a client asked for another file must not be answered from this one
    owned_db = str(settings.db.expanduser().resolve())
    allowed = httpguard.allowed_hosts(settings.http_host, settings.http_allowed_hosts)
    app.web.web_app.middlewares.append(httpguard.middleware(allowed))  # type: ignore[attr-defined]  # aiohttp driver

    sink = SinkProcess(settings.db, bootstrap, topic_prefix=settings.topic_prefix,
                       max_batch=settings.sink_batch, memory_limit=settings.db_memory or None,
                       log_level=settings.log_level, home=settings.home, projections=PROJECTIONS)

    class SinkService(Service):
        """Starts the sink process before the Faust consumer joins its group (its start overlaps
        the join), and takes the worker down if the sink process dies: a dead sink must never
        leave a worker that looks healthy."""

        async def on_start(self) -> None:
            settings.db.parent.mkdir(parents=True, exist_ok=True)
            self._stopping = False
            sink.start()
            holder["sink"] = sink
            loop = asyncio.get_running_loop()
            self._exited = asyncio.Event()
            loop.add_reader(sink.sentinel, self._exited.set)
            self.add_future(self._watch())

        async def _watch(self) -> None:
            await self._exited.wait()
            asyncio.get_running_loop().remove_reader(sink.sentinel)
            if not self._stopping:
                code = sink.exitcode
                log.error("DuckDB sink process exited with %s; stopping the worker", code)
                await self.crash(SinkUnavailable(f"sink process exited with {code}"))

        async def on_stop(self) -> None:
            self._stopping = True
            holder.pop("sink", None)
            code = await asyncio.get_running_loop().run_in_executor(None, sink.stop)
            log.info("DuckDB sink process stopped (exit code %s)", code)

    app.service(SinkService)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        proc = holder.get("sink")
        progress = None
        if proc is not None:
            loop = asyncio.get_running_loop()
            ready = proc.ready or await loop.run_in_executor(None, proc.ping)
            progress = await loop.run_in_executor(None, proc.progress) if ready else None
        body = {"ok": progress is not None, "agents": dict(app_stats(app)), "sink": progress,
                "sink_pid": proc.pid if proc is not None else None, "assigned": _assigned(app),
                "db": owned_db, "pid": os.getpid(), "broker": bootstrap}
        return web.bytes(orjson.dumps(body), content_type="application/json")

    @app.page("/query")
    class Query(faust.web.View):
        async def post(self, request: Any) -> Any:
            refused = _refuse_cross_site(request)
            if refused:
                return self.bytes(orjson.dumps({"error": refused}), status=403, content_type="application/json")
            sink = holder.get("sink")
            if sink is None or not sink.ready:
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
                # the sink cancels the query past its time limit and cuts the rows; the reply is
                # encoded in the executor too, so a large one never holds the event loop (timers)
                body = await loop.run_in_executor(None, _bounded_reply, sink, sql, params, settings)
            except QueryRejected as exc:
                return self.bytes(orjson.dumps({"error": str(exc)}), status=403, content_type="application/json")
            except QueryTimeout as exc:
                return self.bytes(orjson.dumps({"error": str(exc)}), status=504, content_type="application/json")
            except SinkUnavailable as exc:
                return self.bytes(orjson.dumps({"error": str(exc)}), status=503, content_type="application/json")
            except Exception as exc:  # a bad query is the caller's problem, not the worker's
                return self.bytes(orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}), status=400,
                                  content_type="application/json")
            return self.bytes(body, content_type="application/json")

    register_quota_pages(app, holder)
    register_discovery(app, holder, settings)
    return app


def register_discovery(app: faust.App, holder: dict[str, Any], settings: Settings) -> None:
    """Discovery on demand (``outloop discover`` while the worker owns the file) and on a timer
    (OUTLOOP_DISCOVER_INTERVAL, default weekly): the sink runs the analysis and stores it; the timer also
    writes the drafts to $OUTLOOP_HOME/drafts."""
    config = settings.discovery_config_path

    @app.page("/discover")
    class Discover(faust.web.View):
        async def post(self, request: Any) -> Any:
            try:
                asked = orjson.loads(await request.read() or b"{}").get("config")
            except (orjson.JSONDecodeError, AttributeError):
                return _json(self, {"error": 'body must be {} or {"config": "FILE"}'}, 400)
            path = asked or (str(config) if config else None)
            return await _sink_call(self, request, holder, "discover", (path,))

    @app.page("/recommendations/feedback")
    class Feedback(faust.web.View):
        async def post(self, request: Any) -> Any:
            try:
                body = orjson.loads(await request.read())
                args = (str(body["id"]), str(body["action"]), body.get("rule"), body.get("url"), body.get("note"))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return _json(self, {"error": 'body must be {"id": "rec-...", "action": "accept|reject|filed"}'}, 400)
            return await _sink_call(self, request, holder, "rec_feedback", args)

    if settings.discover_interval <= 0:
        return

    stamp = settings.home / "drafts" / ".last-discovery"  # when the last timed run finished (epoch seconds)

    @app.timer(interval=min(settings.discover_interval, DISCOVER_TICK_S))
    async def discover_timer() -> None:
        sink = holder.get("sink")
        if sink is None or not sink.ready or not discovery_due(stamp, time.time(), settings.discover_interval):
            return
        from outloop.drafts import write_drafts

        def run() -> int:
            recs = sink.request("discover", str(config) if config else None, timeout=600.0)
            created = len(write_drafts(recs, settings.home / "drafts").created)
            stamp.write_text(f"{time.time():.0f}\n")
            return created

        try:
            created = await asyncio.get_running_loop().run_in_executor(None, run)
            log.info("discovery: %d new drafts in %s", created, settings.home / "drafts")
        except Exception as exc:  # derived data: a failed run is logged, the next tick tries again
            log.error("discovery failed: %r", exc)


DISCOVER_TICK_S = 3600.0  # how often the timer looks whether a run is due


def discovery_due(stamp: Path, now: float, interval: float) -> bool:
    """Whether the timed discovery is due: ``interval`` seconds after the last run recorded in ``stamp``
    (none recorded, or unreadable: due), so a worker restarted more often than the interval still runs it."""
    try:
        last = float(stamp.read_text().strip())
    except (OSError, ValueError):
        return True
    return now - last >= interval or last > now


def _json(view: Any, body: Any, status: int = 200) -> Any:
    return view.bytes(orjson.dumps(body, default=str), status=status, content_type="application/json")


async def _sink_call(view: Any, request: Any, holder: dict[str, Any], op: str,
                     args: tuple[Any, ...]) -> Any:
    refused = _refuse_cross_site(request)
    if refused:
        return _json(view, {"error": refused}, 403)
    sink = holder.get("sink")
    if sink is None or not sink.ready:
        return _json(view, {"error": "sink not ready"}, 503)
    loop = asyncio.get_running_loop()
    try:
        return _json(view, await loop.run_in_executor(None, lambda: sink.request(op, *args)))
    except SinkUnavailable as exc:
        return _json(view, {"error": str(exc)}, 503)
    except Exception as exc:
        return _json(view, {"error": f"{type(exc).__name__}: {exc}"}, 400)


QUOTA_VIEW_SQL = """
SELECT 'snapshot' AS kind, to_json(s) AS row FROM quota_snapshots s WHERE "at" = (SELECT max("at") FROM quota_snapshots)
UNION ALL SELECT 'forecast', to_json(f) FROM quota_forecasts f WHERE "at" = (SELECT max("at") FROM quota_forecasts)
UNION ALL SELECT 'decision', to_json(d) FROM (SELECT * FROM throttle_decisions ORDER BY "at" DESC, id LIMIT 1) d
"""


def register_quota_pages(app: faust.App, holder: dict[str, Any]) -> None:
    """Budget checks (answered by the sink, one at a time) and the quota view for dashboards."""

    @app.page("/budget")
    class Budget(faust.web.View):
        async def post(self, request: Any) -> Any:
            try:
                body = orjson.loads(await request.read())
                workflow = body["workflow"]
                estimated = body.get("estimated_tokens")
                if not isinstance(workflow, str) or not workflow or not (
                        estimated is None or (isinstance(estimated, int) and estimated >= 0)):
                    raise TypeError
                args = (workflow, estimated, body.get("run_id"), body.get("ttl_s"))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                return _json(self, {"error": 'body must be {"workflow": "...", "estimated_tokens": n or null}'}, 400)
            return await _sink_call(self, request, holder, "budget", args)

    @app.page("/budget/release")
    class Release(faust.web.View):
        async def post(self, request: Any) -> Any:
            try:
                check_id = str(orjson.loads(await request.read())["id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return _json(self, {"error": 'body must be {"id": "budget:N"}'}, 400)
            return await _sink_call(self, request, holder, "budget_release", (check_id,))

    @app.page("/quota")
    class Quota(faust.web.View):
        async def get(self, request: Any) -> Any:
            sink = holder.get("sink")
            if sink is None or not sink.ready:
                return _json(self, {"error": "sink not ready"}, 503)
            loop = asyncio.get_running_loop()
            try:
                _cols, rows = await loop.run_in_executor(None, sink.query, QUOTA_VIEW_SQL, None)
            except Exception as exc:
                return _json(self, {"error": f"{type(exc).__name__}: {exc}"}, 503)
            view: dict[str, Any] = {"snapshots": [], "forecasts": [], "decision": None}
            for kind, row in rows:
                value = orjson.loads(row) if isinstance(row, str) else row
                if kind == "decision":
                    view["decision"] = value
                else:
                    view[kind + "s"].append(value)
            return _json(self, view)


def _bounded_reply(sink: SinkProcess, sql: str, params: Any, settings: Settings) -> bytes:
    """The JSON reply to a query: {columns, rows, truncated, max_rows}, ``truncated`` true when the
    result had more rows than ``OUTLOOP_QUERY_MAX_ROWS`` (runs in an executor thread)."""
    result = sink.query_bounded(sql, params, settings.query_max_rows, settings.query_timeout)
    return orjson.dumps(result, default=str)


def _refuse_cross_site(request: Any) -> str | None:
    """A web page can POST to 127.0.0.1 but cannot send a JSON content type without a CORS preflight
    (which this endpoint never grants): simple cross-site requests are refused. (DNS rebinding is
    refused for every path by the Host allow-list of ``streams.httpguard``.)"""
    if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
        return "queries must be sent with Content-Type: application/json"
    return None


def worker_class() -> type:
    """Faust's worker, without the idle second at the end of its shutdown: once every service stopped
    and every future was gathered, mode runs the event loop 1 s more (a sleeping sentinel task)
    before it closes it. A few ticks let the transports' close callbacks run; the rest delayed every
    stop and restart of the worker by a second."""
    from faust.worker import Worker

    class PromptWorker(Worker):
        async def _sentinel_task(self) -> None:
            await asyncio.sleep(0.1)

    return PromptWorker


def run(settings: Settings) -> None:
    """Run the worker until SIGTERM/SIGINT. Needs ``settings.broker`` (``outloop up`` passes it)."""
    Worker = worker_class()  # noqa: N806
    if not settings.broker:
        sys.exit("error: outloop worker needs OUTLOOP_BROKER (use 'outloop up' to start an embedded broker)")
    quiet_repeats()
    limit_arenas(2)  # before Faust and the executors start their threads (see streams.heaps)
    Trimmer().start()
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)
    app = build(settings, settings.broker)
    Worker(app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()


if __name__ == "__main__":
    run(Settings.from_env())
