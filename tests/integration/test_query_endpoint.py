"""The worker's query endpoint refuses what a web page could send it (simple cross-site POSTs, DNS
rebinding), and answers the project's own client."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from outloop.runtime import Stack
from tests.integration.test_pipeline import settings_for

pytestmark = pytest.mark.integration


def post(port: int, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/query", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_cross_site_requests_are_refused(tmp_path: Path, broker: str) -> None:
    with Stack(settings_for(tmp_path, broker)) as stack:
        port = stack.settings.http_port
        body = b'{"sql": "SELECT 1"}'
        assert post(port, body, {"Content-Type": "application/json"}) == 200
        assert post(port, body, {"Content-Type": "text/plain"}) == 403  # what a <form> or fetch no-cors sends
        assert post(port, body, {"Content-Type": "application/json", "Host": "evil.example:6066"}) == 403
        assert stack.client.query("SELECT 42 AS x") == (["x"], [[42]])
