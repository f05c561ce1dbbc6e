"""The dashboard as a user meets it: traces-dev replayed (shadow routing), `outloop up` on that database,
the page in a real headless Chromium, its API refusing other origins, and `outloop report`.

One replay and one `outloop up` serve every test of the module (the replay is the slow part, ~20 s: the
routing panel needs the shadow decisions of real tool calls). The browser test saves its screenshot in
``test-artifacts/`` at the top of the checkout (CI keeps it)."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from outloop.replay import replay
from outloop.schemas.topics import TopicCatalogue
from outloop.streams.publisher import Publisher
from tests.conftest import REPO
from tests.integration.test_pipeline import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.traces, pytest.mark.slow]
OUTLOOP = str(Path(sys.executable).with_name("outloop"))
ARTIFACTS = REPO / "test-artifacts"
PANELS = ("quota", "health", "patterns", "context", "routing", "recommendations", "dead_letters")
COMPONENTS = {"broker", "worker", "sink", "forwarder", "tailer", "router"}


@dataclass
class Live:
    url: str  # the dashboard, as `outloop up` printed it
    env: dict[str, str]
    db: Path
    said: list[bytes]
    broker: str
    prefix: str

    def poison(self) -> None:
        """A record no agent can read: the worker makes a dead letter of it."""
        cat = TopicCatalogue(prefix=self.prefix)
        with Publisher(self.broker, catalogue=cat) as pub:
            pub.raw(cat.events.name, b"dashboard-test", b"{not json " + uuid.uuid4().hex.encode(), partition=0)
            pub.flush()


def _wait_line(said: list[bytes], prefix: bytes, up: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in said:
            if line.startswith(prefix):
                return line.decode().split()[1]
        assert up.poll() is None, b"".join(said).decode(errors="replace")
        time.sleep(0.1)
    raise AssertionError(f"`outloop up` printed no {prefix!r} line: {b''.join(said).decode(errors='replace')}")


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, broker: str, traces: Path) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("dashboard")
    s = settings_for(tmp, broker)
    replay([traces], s, route_mode="shadow")
    tag = s.topic_prefix + "up"
    env = {**os.environ, "OUTLOOP_HOME": str(tmp / "up"), "OUTLOOP_DB": str(s.db), "OUTLOOP_BROKER": broker,
           "OUTLOOP_TOPIC_PREFIX": tag, "OUTLOOP_APP_ID": tag, "OUTLOOP_HTTP_PORT": "0",
           "OUTLOOP_DASHBOARD_PORT": "0", "OUTLOOP_PROJECTS": "off", "OUTLOOP_SESSION_TIMEOUT": "6",
           "OUTLOOP_QUOTA_FIVE_HOUR_TOKENS": "20000000", "OUTLOOP_QUOTA_SEVEN_DAY_TOKENS": "80000000",
           "OUTLOOP_QUOTA_MONTH_TOKENS": "150000000"}
    env.pop("OUTLOOP_SPOOL", None)
    # the analysis a user runs on demand (the worker's timer runs it weekly): the recommendations panel
    subprocess.run([OUTLOOP, "discover", "--db", str(s.db)], env=env, check=True, capture_output=True, timeout=120)
    up = subprocess.Popen([OUTLOOP, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    said: list[bytes] = []
    threading.Thread(target=lambda: said.extend(iter(up.stderr.readline, b"")) if up.stderr else None,
                     daemon=True).start()
    try:
        url = _wait_line(said, b"dashboard ", up, 90)
        live = Live(url, env, s.db, said, broker, tag)
        live.poison()  # the dead-letter panel shows what the worker made of it
        deadline = time.monotonic() + 60
        while orjson.loads(_get(url + "api/dead_letters")[1]).get("data", {}).get("total", 0) < 1:
            assert time.monotonic() < deadline, "the poison record never reached dead_letters"
            time.sleep(0.3)
        yield live
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()


def _browser() -> tuple[str, str]:
    binary = next((b for b in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if b), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("no headless browser installed (Debian: apt-get install chromium chromium-driver)")
    return binary, driver


def test_every_panel_renders_data_in_a_real_browser(live: Live) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,2400", "--no-proxy-server"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get(live.url + "?every=500")
        deadline = time.monotonic() + 60
        states: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            states = {p: driver.find_element("id", p).get_attribute("data-state") for p in PANELS}
            if "loading" not in states.values():
                break
            time.sleep(0.2)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        has_discovery = _has_discovery(live)
        expected = {p: "data" for p in PANELS}
        if not has_discovery:  # the honest empty state: no analysis stored in this database
            expected["recommendations"] = "empty"
        assert states == expected, (states, driver.get_log("browser"))
        rows = {p: int(driver.find_element("id", p).get_attribute("data-rows") or 0) for p in PANELS}
        assert all(rows[p] > 0 for p in PANELS if expected[p] == "data"), rows
        if not has_discovery:
            assert "none yet" in driver.find_element("id", "recommendations").text
        # what is drawn: a line per quota window with its limit line and its p10-p90 band, bars per pattern
        quota = driver.find_element("id", "quota")
        assert len(quota.find_elements("css selector", "svg path.series")) >= 3
        assert len(quota.find_elements("css selector", "svg line.limit")) == 3
        assert len(quota.find_elements("css selector", "svg rect.band")) == 3
        assert len(driver.find_elements("css selector", "#patterns svg rect.bar")) == rows["patterns"]
        health = driver.find_element("id", "health").text
        assert all(f"{c} up" in health for c in COMPONENTS), health
        total = orjson.loads(_get(live.url + "api/dead_letters")[1])["data"]["total"]
        assert f"{total} dead letters" in driver.find_element("id", "dead_letters").text
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        # the page updates itself: a new dead letter appears without a reload
        live.poison()
        deadline = time.monotonic() + 60
        while f"{total + 1} dead letters" not in (text := _text(driver, "dead_letters")):
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
    finally:
        driver.quit()


def _text(driver: Any, panel: str) -> str:
    return str(driver.find_element("id", panel).get_attribute("textContent"))


def _has_discovery(live: Live) -> bool:
    answer = orjson.loads(_get(live.url + "api/recommendations")[1])
    return answer["data"]["table"] is not None


def test_api_reads_the_database_through_the_worker(live: Live) -> None:
    _, body = _get(live.url + "api/patterns")
    top = orjson.loads(body)["data"][0]
    _, body = _get(live.url + "api/health")
    health = orjson.loads(body)["data"]
    assert set(health) == COMPONENTS and all(c["ok"] for c in health.values()), health
    # the same figure `outloop patterns` prints, through the running worker (it holds the file)
    env = {**live.env, "OUTLOOP_HTTP_PORT": _worker_port(live)}
    q = subprocess.run([OUTLOOP, "patterns", "--json", "--top", "1"], env=env, capture_output=True, timeout=60)
    assert q.returncode == 0, q.stderr
    cli = orjson.loads(q.stdout)[0]
    assert (top["signature"], top["occurrence_count"], top["confidence_score"]) == (
        cli["signature"], cli["occurrence_count"], cli["confidence_score"])


def _worker_port(live: Live) -> str:
    line = next(x for x in live.said if x.startswith(b"worker "))
    return line.decode().split()[1].rsplit(":", 1)[1]


def test_dashboard_is_loopback_read_only_and_refuses_other_origins(live: Live) -> None:
    assert live.url.startswith("http://127.0.0.1:")
    port = live.url.rstrip("/").rsplit(":", 1)[1]
    api = live.url + "api/health"
    assert _get(api)[0] == 200
    assert _get(api, {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"})[0] == 200
    assert _get(api, {"Origin": "http://evil.example"})[0] == 403
    assert _get(api, {"Origin": "http://127.0.0.1:1"})[0] == 403  # another page of this machine
    assert _get(api, {"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert _get(api, {"Host": f"evil.example:{port}"})[0] == 403  # DNS rebinding
    assert _get(live.url, {"Host": "evil.example"})[0] == 403
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert _get(api, method=method)[0] == 405
    assert _get(live.url + "api/nope")[0] == 404
    status, body = _get(live.url)
    assert status == 200 and b"/dashboard.js" in body and b"http" not in body.split(b"<body>")[1]  # no CDN


def test_report_writes_the_page_and_its_charts(live: Live, tmp_path: Path) -> None:
    out = tmp_path / "report"
    env = {**live.env, "OUTLOOP_HTTP_PORT": _worker_port(live)}  # the worker holds the file: read through it
    r = subprocess.run([OUTLOOP, "report", "--db", str(live.db), "--out", str(out)], env=env, capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    from outloop.htmlreport import CHART_PX

    page = (out / "index.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(["quota_five_hour.png", "quota_seven_day.png", "quota_month.png", "patterns.png",
                           "context.png", "routing.png", "dead_letters.png"])
    for name in pngs:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name
        assert struct.unpack(">II", data[16:24]) == CHART_PX, name
        assert f'src="{name}"' in page
        assert _drawn(out / name), name
    assert "none yet" in page or "<h2 id=recommendations>" in page


def _drawn(png: Path) -> bool:
    """Whether the image has more than a blank background: many distinct colours."""
    from matplotlib import image

    pixels = image.imread(str(png)).reshape(-1, 4)
    return len({tuple(p) for p in pixels[:: 7].tolist()}) > 20
