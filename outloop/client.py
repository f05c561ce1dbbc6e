"""Reading outloop's database: through the worker's HTTP endpoint while a worker owns the file,
read-only straight from the file otherwise. Whatever answers on the HTTP port is used only when its
``/health`` names the asked-for file as the one it owns: a worker of another database (``outloop up``
beside ``--db FILE``) must never answer for FILE."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from outloop.runner.api import RunResult


class QueryError(RuntimeError):
    pass


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
    finally:
        con.close()


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
    """outloop for ADWs: pre-flight budget checks against the running worker (``outloop up``).

    ``check_budget`` answers allow / warn / deny with reasons and, unless denied, reserves the estimate
    until :meth:`release_budget` (or the run's ``workflow.ended``, or ``ttl_s``): the worker's sink answers
    checks one at a time, so concurrent checks never share the same headroom. When no worker answers it
    raises :class:`QueryError`; the caller decides whether to proceed (outloop never blocks on its own)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6066, timeout: float = 10.0,
                 router_socket: str | None = None) -> None:
        self.worker = WorkerClient(host, port, timeout)
        self.router_socket = router_socket  # None: the one of this OUTLOOP_HOME

    @classmethod
    def from_settings(cls, settings: Any = None) -> OutloopClient:
        from outloop.streams.settings import Settings

        s = settings or Settings.from_env()
        return cls(s.http_host, s.http_port)

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
                     ttl_s: float | None = None) -> dict[str, Any]:
        """{"id", "decision": allow|warn|deny, "reasons", "estimated_tokens", "estimate_basis",
        "reserved_tokens", "headroom_tokens", "status", "expires_at"}; without an estimate, the p90 of the
        workflow's past runs is used."""
        try:
            result = self.worker._request("/budget", {"workflow": workflow, "estimated_tokens": estimated_tokens,
                                                      "run_id": run_id, "ttl_s": ttl_s})
        except OSError as exc:
            raise QueryError(f"no outloop worker answers at {self.worker.base}: {exc}") from None
        return result  # type: ignore[no-any-return]

    def release_budget(self, check_id: str) -> bool:
        """End the reservation of a check (the run finished); False when it held none any more."""
        try:
            return bool(self.worker._request("/budget/release", {"id": check_id}))
        except OSError as exc:
            raise QueryError(f"no outloop worker answers at {self.worker.base}: {exc}") from None
