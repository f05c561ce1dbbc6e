"""Reading outloop's database: through the worker's HTTP endpoint while a worker owns the file,
read-only straight from the file otherwise. Whatever answers on the HTTP port is used only when its
``/health`` names the asked-for file as the one it owns: a worker of another database (``outloop up``
beside ``--db FILE``) must never answer for FILE."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson


class QueryError(RuntimeError):
    pass


class WorkerClient:
    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.base = f"http://{host}:{port}"
        self.timeout = timeout

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
    """Through the worker on host:port if it owns ``db``, else read-only from the file."""
    client = WorkerClient(host, port)
    if owns(client.health(), db):
        return client.query(sql, params)
    return query_file(db, sql, params)
