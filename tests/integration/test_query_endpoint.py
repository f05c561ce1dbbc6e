"""The worker's HTTP endpoint refuses what a web page could send it (simple cross-site POSTs, DNS
rebinding: a Host not on the allow-list, on every path, whatever address it binds), answers 404 for
what it does not serve, and bounds every query (a time limit in the sink, a row cap in the reply)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest

from outloop.runtime import Stack
from tests.integration.test_pipeline import settings_for

pytestmark = pytest.mark.integration

MAX_ROWS = 1000
TIME_LIMIT = 1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, broker: str) -> Iterator[Stack]:
    """One worker bound to every interface (as in the Docker image), with a short time limit and a
    small row cap; one extra allowed Host name."""
    tmp = tmp_path_factory.mktemp("endpoint")
    settings = replace(settings_for(tmp, broker), http_host="0.0.0.0", http_allowed_hosts=("outloop-worker",),
                       query_timeout=TIME_LIMIT, query_max_rows=MAX_ROWS)
    with Stack(settings) as s:
        yield s


def call(port: int, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 15.0) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST" if body else "GET",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), orjson.loads(exc.read())


def query(port: int, sql: str, host: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
    return call(port, "/query", orjson.dumps({"sql": sql}), headers)


def test_cross_site_requests_are_refused(stack: Stack) -> None:
    port = stack.settings.http_port
    assert query(port, "SELECT 1")[0] == 200
    status, _ = call(port, "/query", b'{"sql": "SELECT 1"}', {"Content-Type": "text/plain"})
    assert status == 403  # what a <form> or fetch no-cors sends
    assert stack.client.query("SELECT 42 AS x") == (["x"], [[42]])


def test_the_host_allow_list_guards_every_endpoint_on_a_wildcard_bind(stack: Stack) -> None:
    port = stack.settings.http_port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example"):
        assert call(port, "/health", headers={"Host": host})[0] == 403, host
        assert query(port, "SELECT 1", host=host)[0] == 403, host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "outloop-worker", f"0.0.0.0:{port}"):
        status, body = call(port, "/health", headers={"Host": host})
        assert status == 200 and body["ok"], host
    assert query(port, "SELECT 7 AS x", host=f"OUTLOOP-WORKER:{port}")[1]["rows"] == [[7]]


def test_unknown_paths_answer_404_never_500(stack: Stack) -> None:
    port = stack.settings.http_port
    for path in ("/router/key/", "/router/", "/table/x/", "/", "/nope", "/health/x"):
        status, body = call(port, path)
        assert status == 404 and "no such endpoint" in body["error"], path
    assert call(port, "/router/key/", headers={"Host": "evil.example"})[0] == 403


def test_a_query_past_the_time_limit_is_cancelled_in_the_sink(stack: Stack) -> None:
    port = stack.settings.http_port
    started = time.monotonic()
    status, body = query(port, "SELECT count(*) FROM range(100000000000) a")
    elapsed = time.monotonic() - started
    assert status == 504 and "cancelled after 1 s" in body["error"]
    assert elapsed < TIME_LIMIT + 5
    assert query(port, "SELECT 1 AS one")[1]["rows"] == [[1]]  # the sink goes on answering


def test_a_large_result_is_capped_and_says_so(stack: Stack) -> None:
    port = stack.settings.http_port
    status, body = query(port, f"SELECT range AS n FROM range({MAX_ROWS * 50})")
    assert status == 200 and body["truncated"] is True and body["max_rows"] == MAX_ROWS
    assert body["rows"] == [[n] for n in range(MAX_ROWS)]
    status, body = query(port, f"SELECT range AS n FROM range({MAX_ROWS})")
    assert body["truncated"] is False and len(body["rows"]) == MAX_ROWS
    client = stack.client
    assert len(client.query(f"SELECT * FROM range({MAX_ROWS + 1})")[1]) == MAX_ROWS
    assert client.truncated_at == MAX_ROWS
