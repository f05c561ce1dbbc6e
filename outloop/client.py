"""Reading outloop's database: through the worker's HTTP endpoint while a worker owns the file,
read-only straight from the file otherwise. Whatever answers on the HTTP port is used only when its
``/health`` names the asked-for file as the one it owns: a worker of another database (``outloop up``
beside ``--db FILE``) must never answer for FILE."""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from outloop.client_events import WorkflowRun
    from outloop.client_watch import Decision, Subscription
    from outloop.runner.api import RunResult


NAMED_TABLES = ("cost_savings_log",)  # read like the views: the design names it as one

class QueryError(RuntimeError):
    pass


_CLASS_PREFIX = re.compile(r"(^|: )(?:[A-Z][A-Za-z0-9]*(?:Error|Exception|Rejected): )+")


def reason(exc: BaseException) -> str:
    """An expected error's message without Python class names in front of it (``QueryRejected: ...``,
    and the ones the worker's HTTP answer carries: ``SinkQueryError: ValueError: ...``), for the CLI."""
    return _CLASS_PREFIX.sub(r"\1", str(exc)) or type(exc).__name__


class WorkerClient:
    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.base = f"http://{host}:{port}"
        self.timeout = timeout
        self.truncated_at: int | None = None  # the row cap of the last query's reply, when it cut the result

    def _request(self, path: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                message = orjson.loads(exc.read()).get("error", str(exc))
            except (orjson.JSONDecodeError, AttributeError):
                message = str(exc)
            raise QueryError(message) from None

    def health(self, timeout: float = 2.0) -> dict[str, Any] | None:
        try:
            result = self._request("/health", timeout=timeout)
        except (OSError, QueryError):
            return None
        return result if isinstance(result, dict) else None

    def query(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[list[Any]]]:
        result = self._request("/query", {"sql": sql, "params": params})
        self.truncated_at = result.get("max_rows") if result.get("truncated") else None
        return result["columns"], result["rows"]


def query_file(db: Path, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[list[Any]]]:
    """Read-only query of a database file no worker holds."""
    import duckdb

    from outloop.sinks.query import open_readonly, run_readonly

    if not db.exists():
        raise QueryError(f"no database at {db} (run 'outloop replay' or 'outloop up' first)")
    try:
        con = open_readonly(db)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        raise QueryError(f"{db} is held by another process (a worker on another HTTP port? set "
                         f"OUTLOOP_HTTP_PORT to its port to query through it): {exc}") from None
    try:
        return run_readonly(con, sql, params)
    except (duckdb.CatalogException, duckdb.BinderException) as exc:
        raise QueryError(_schema_gap(con, db) or str(exc)) from None
    finally:
        con.close()


def _schema_gap(con: Any, db: Path) -> str | None:
    """Why a query failed on a file of another schema (None when the schema is this outloop's): a file
    written by an older outloop lacks the newer tables and columns until a worker opens it (and migrates it)."""
    from outloop.sinks.schema import SCHEMA_VERSION, current_version

    have = current_version(con)
    if have == SCHEMA_VERSION:
        return None
    if have == 0:
        return f"{db} is not an outloop database (no schema_version table)"
    if have > SCHEMA_VERSION:
        return f"{db} has schema v{have}, newer than this outloop's v{SCHEMA_VERSION}: upgrade outloop"
    return (f"{db} has schema v{have}, older than this outloop's v{SCHEMA_VERSION} (written by an older outloop): "
            f"the worker migrates it when it opens it: OUTLOOP_DB={db} outloop up")


def owns(health: dict[str, Any] | None, db: Path) -> bool:
    """Whether the worker whose ``/health`` answered ``health`` owns the database file ``db``."""
    owned = health.get("db") if health else None
    return isinstance(owned, str) and owned == str(db.expanduser().resolve())


def query(db: Path, host: str, port: int, sql: str, params: list[Any] | None = None
          ) -> tuple[list[str], list[list[Any]]]:
    """Through the worker on host:port if it owns ``db``, else read-only from the file. A result the
    worker cut at its row cap says so on stderr."""
    client = WorkerClient(host, port)
    if owns(client.health(), db):
        columns, rows = client.query(sql, params)
        if client.truncated_at is not None:
            print(f"outloop: the result was cut at {client.truncated_at} rows (OUTLOOP_QUERY_MAX_ROWS); "
                  "add a LIMIT or an aggregate", file=sys.stderr)
        return columns, rows
    return query_file(db, sql, params)


@dataclass(frozen=True)
class RouteDecision:
    """The router's decision for one command (``OutloopClient.route``). ``command`` is what to run:
    the runner command line when an enforced rule rewrote it, else the command unchanged."""

    action: str  # pass | rewrite | advise | deny
    command: str
    mode: str | None = None  # shadow | advise | enforce
    rule: str | None = None
    kind: str | None = None  # structured | generic
    family: str | None = None
    signature: str | None = None
    confidence: int | None = None
    reason: str = ""
    context: str | None = None  # advice to read before running it
    decision_id: str | None = None


def route_decision(command: str, reply: dict[str, Any] | None) -> RouteDecision:
    """A :class:`RouteDecision` from the router's reply to a ``decide`` request (None: no router)."""
    if not reply or not isinstance(reply.get("decision"), dict):
        return RouteDecision("pass", command, reason="no router answered: the command runs unchanged")
    d = reply["decision"]
    out = (reply.get("answer") or {}).get("hookSpecificOutput") or {}
    updated = out.get("updatedInput") or {}
    return RouteDecision(d.get("action") or "pass", str(updated.get("command") or command), d.get("mode"),
                         d.get("rule"), d.get("kind"), d.get("family"), d.get("signature"), d.get("confidence"),
                         str(d.get("reason") or ""), out.get("additionalContext"), d.get("decision_id"))


class OutloopClient:
    """outloop for ADWs (``outloop up`` running): publish workflow runs and tool results, ask the router
    (:meth:`route`), run commands through the runner (:meth:`run`), ask for budget
    (:meth:`check_budget`), read the views (:meth:`query`, :meth:`view`) and follow routing and throttle
    decisions (:meth:`subscribe`). Guide: ``docs/client.md``.

    Fail-safe on the workflow's path: ``route`` answers pass and publishing returns False when outloop
    does not answer (``strict=True`` raises instead); ``run`` runs the command whatever outloop's state;
    ``check_budget`` raises :class:`QueryError` when no worker answers unless ``on_error="allow"``.

    ``check_budget`` answers allow / warn / deny with reasons and, unless denied, reserves the estimate
    until :meth:`release_budget` (or the run's ``workflow.ended``, or ``ttl_s``): the worker's sink answers
    checks one at a time, so concurrent checks never share the same headroom."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6066, timeout: float = 10.0,
                 router_socket: str | None = None, *, db: Path | None = None, broker: str | None = None,
                 topic_prefix: str = "outloop", publish_timeout: float = 5.0, strict: bool = False) -> None:
        """``db``: the database file to read when no worker owns it (queries and subscriptions);
        ``broker``: where to publish (None: the running worker's, from its ``/health``)."""
        from outloop.client_events import EventSender

        self.host, self.port = host, port
        self.worker = WorkerClient(host, port, timeout)
        self.router_socket = router_socket  # None: the one of this OUTLOOP_HOME
        self.db = db
        self.broker = broker
        self.events = EventSender(self._bootstrap, topic_prefix, timeout=publish_timeout, strict=strict)

    @classmethod
    def from_settings(cls, settings: Any = None, **kwargs: Any) -> OutloopClient:
        """A client of the outloop the ``OUTLOOP_*`` variables name (HTTP port, database, broker, topics)."""
        from outloop.streams.settings import Settings

        s = settings or Settings.from_env()
        return cls(s.http_host, s.http_port, db=s.db, broker=s.broker or None, topic_prefix=s.topic_prefix,
                   **kwargs)

    def __enter__(self) -> OutloopClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for what was published (up to the publish time-out) and close the connection."""
        self.events.close()

    def _bootstrap(self) -> str | None:
        if self.broker:
            return self.broker
        found = (self.worker.health() or {}).get("broker")
        return found if isinstance(found, str) and found else None

    # -- publishing ------------------------------------------------------------------------------
    def start_workflow(self, workflow: str, *, run_id: str | None = None, session_id: str | None = None,
                       attributes: dict[str, Any] | None = None, started_at: datetime | None = None
                       ) -> WorkflowRun:
        """Publish ``workflow.started`` and return the run (``phase``, ``add_usage``, ``tool_result``,
        ``end``; a context manager). ``run_id``: a fresh UUIDv7 when None."""
        from outloop.client_events import WorkflowRun
        from outloop.streams.spool import uuid7

        run = WorkflowRun(self.events, run_id or uuid7(), workflow, session_id)
        run.started = self.events.send(lambda p: p.workflow_started(
            run.run_id, workflow, session_id=session_id, started_at=started_at, attributes=attributes))
        return run

    def tool_result(self, session_id: str, tool_name: str, tool_input: dict[str, Any] | str | None,
                    **kwargs: Any) -> bool:
        """Publish the result of a tool the ADW ran (``output``, ``output_bytes``, ``is_error``,
        ``started_at``, ``ended_at``, ``duration_ms``, ``tool_use_id``: see ``client_events.tool_call``).
        It becomes a ``tool_calls`` row (source ``adw``) with its signature, and counts in the patterns."""
        from outloop.client_events import tool_call

        call = tool_call(session_id, tool_name, tool_input, **kwargs)
        return self.events.send(lambda p: p.tool_call(call))

    def route(self, command: str, cwd: str | None = None, session_id: str = "adw", *,
              tool_use_id: str | None = None, timeout: float = 1.0) -> RouteDecision:
        """Ask the running router what it would do with ``command`` (the same decision a Claude Code hook
        gets, recorded the same way). Fails open: no router, or no answer within ``timeout``, is a pass."""
        from outloop.router.component import ask

        payload = {"outloop": "decide", "hook_event_name": "PreToolUse", "session_id": session_id,
                   "tool_name": "Bash", "tool_input": {"command": command}, "cwd": cwd or os.getcwd(),
                   "tool_use_id": tool_use_id}
        try:
            reply = ask(orjson.dumps(payload), self.router_socket, timeout)
            return route_decision(command, orjson.loads(reply) if reply else None)
        except (OSError, ValueError):
            return route_decision(command, None)

    def run(self, command: str, cwd: str | None = None, family: str | None = None,
            timeout: float | None = None) -> RunResult:
        """Run ``command`` through the runner (exit code, compact summary, failures kept, log path)."""
        from outloop.runner.api import run

        return run(command, cwd=cwd, family=family, timeout=timeout)

    def check_budget(self, workflow: str, estimated_tokens: int | None = None, *, run_id: str | None = None,
                     ttl_s: float | None = None, on_error: str = "raise") -> dict[str, Any]:
        """{"id", "decision": allow|warn|deny, "reasons", "estimated_tokens", "estimate_basis",
        "reserved_tokens", "headroom_tokens", "status", "expires_at"}; without an estimate, the p90 of the
        workflow's past runs is used. No worker answering raises :class:`QueryError`; with
        ``on_error="allow"`` it answers ``allow`` with ``id`` None and the reason instead (nothing reserved)."""
        if on_error not in ("raise", "allow"):
            raise ValueError('on_error must be "raise" or "allow"')
        try:
            result = self.worker._request("/budget", {"workflow": workflow, "estimated_tokens": estimated_tokens,
                                                      "run_id": run_id, "ttl_s": ttl_s})
        except OSError as exc:
            reason = f"no outloop worker answers at {self.worker.base}: {exc}"
            if on_error == "raise":
                raise QueryError(reason) from None
            return {"id": None, "decision": "allow", "reasons": [reason], "estimated_tokens": estimated_tokens,
                    "estimate_basis": None, "reserved_tokens": 0, "headroom_tokens": None, "status": "none",
                    "expires_at": None}
        return result  # type: ignore[no-any-return]

    def release_budget(self, check_id: str) -> bool:
        """End the reservation of a check (the run finished); False when it held none any more."""
        try:
            return bool(self.worker._request("/budget/release", {"id": check_id}))
        except OSError as exc:
            raise QueryError(f"no outloop worker answers at {self.worker.base}: {exc}") from None

    # -- reading ---------------------------------------------------------------------------------
    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of one read-only statement, as dicts: through the worker when it owns ``db`` (or, with no
        ``db`` given, whenever one answers), else read-only from the file. Raises :class:`QueryError`."""
        columns, rows = self._fetch(sql, params)
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def _fetch(self, sql: str, params: list[Any] | None) -> tuple[list[str], list[list[Any]]]:
        if self.db is not None:
            return query(self.db, self.host, self.port, sql, params)
        try:
            return self.worker.query(sql, params)
        except OSError as exc:
            raise QueryError(f"no outloop worker answers at {self.worker.base}: {exc}") from None

    def views(self) -> list[str]:
        """The names of the database's views (the table in the README lists their columns), and of the
        named materializations stored as tables (``cost_savings_log``, a view before schema v14)."""
        named = ", ".join(f"'{t}'" for t in NAMED_TABLES)
        rows = self.query("SELECT view_name FROM duckdb_views() WHERE NOT internal UNION SELECT table_name "
                          f"FROM duckdb_tables() WHERE table_name IN ({named}) ORDER BY 1")
        return [str(r["view_name"]) for r in rows]

    def view(self, name: str, *, where: str | None = None, params: list[Any] | None = None,
             order_by: str | None = None, limit: int | None = 100) -> list[dict[str, Any]]:
        """Rows of one named view (``v_session_summary``, ``cost_savings_log``, ...), optionally filtered
        (``where="session_id = ?", params=[...]``) and ordered; read-only like :meth:`query`."""
        if name not in self.views():
            raise QueryError(f"no view named {name!r}; views: {', '.join(self.views())}")
        sql = f'SELECT * FROM "{name}"' + (f" WHERE {where}" if where else "") + \
            (f" ORDER BY {order_by}" if order_by else "") + (f" LIMIT {int(limit)}" if limit is not None else "")
        return self.query(sql, params)

    def subscribe(self, kinds: tuple[str, ...] = ("routing", "throttle"), callback: Callable[[Decision], None]
                  | None = None, *, since: datetime | None = None, poll: float = 0.5, lookback: float = 300.0,
                  timeout: float | None = None) -> Subscription:
        """Follow routing and/or throttle decisions as they reach the database (see
        ``outloop.client_watch`` for how and with what latency). Without ``callback``, iterate the
        returned subscription (``for d in sub``: each a :class:`~outloop.client_watch.Decision`); with
        one, it is called from a daemon thread. ``since``: also deliver the stored decisions from that
        time; ``timeout``: end the iteration after that many seconds; ``close()`` ends it at any time."""
        from outloop.client_watch import Subscription

        sub = Subscription(self._fetch, tuple(kinds), since=since, poll=poll, lookback=lookback, timeout=timeout)
        return sub.run_callback(callback) if callback is not None else sub
