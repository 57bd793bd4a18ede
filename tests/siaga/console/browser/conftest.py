"""The console in a real browser: Debian's Chromium driven by Playwright, against `siaga run`
as a real process on the session's Mosquitto and InfluxDB.

Playwright never downloads a browser here: it is pointed at the system's `chromium`
(installed by scripts/ensure-system-packages, like Mosquitto). Every page records each
request it makes and aborts any to another origin, and every Content-Security-Policy
violation and console error, so each test can also say the page stayed inside the service.
"""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, sync_playwright

from ingest.settings import InfluxSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.sandbox.ports import free_port
from tests.integration.support import (
    Publisher,
    ServiceProcess,
    make_settings,
    unique_name,
    write_config,
)

TOKEN: Final = "console-officer-token-4f1c"
# Root in CI needs --no-sandbox; without the background-networking flags Chromium keeps
# trying Google's hosts, which this machine refuses (and the request recorder would flag).
CHROMIUM_ARGS: Final = ("--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        "--disable-quic", "--disable-default-apps", "--mute-audio")
HOSTILE_NAME: Final = '<img src=x onerror="window.__pwned=1">'
READY_S: Final = 30  # a ceiling for the first render on a loaded machine
LIVE_S: Final = 10  # a ceiling for a change to show; the 2 s target is measured in bench/

# Each test uses its own devices, so tests do not depend on each other's order. Each has
# its own `kota` (and no river), so no three fall silent together as one AreaOffline.
GAUGES: Final = ("naik", "ack", "diam", "sunyi", "putus", "riwayat", "grafik", "senyap",
                  "ulang")


def _gauge(name: str, interval_s: int = 3600) -> dict[str, Any]:
    return {"id": f"uji-{name}", "kind": "water-level", "name": f"Pos Uji {name.title()}",
            "lat": -6.20 - 0.01 * GAUGES.index(name), "lon": 106.80 + 0.005 * len(name),
            "labels": {"kota": f"Kota {name}"},
            "thresholds": {"siaga3_cm": 100, "siaga2_cm": 150, "siaga1_cm": 200},
            "expected_interval_s": interval_s}


CATALOG: Final = {"devices": [
    *(_gauge(name, 1 if name == "sunyi" else 3600) for name in GAUGES),
    {"id": "udara-uji", "kind": "air-quality", "name": "Stasiun Udara Uji", "lat": -6.18,
     "lon": 106.83, "labels": {"kota": "Kota udara"}},
    {"id": "jalan-uji", "kind": "traffic", "name": "Jl. Uji Raya", "lat": -6.19,
     "lon": 106.82, "labels": {"kota": "Kota jalan"}},
    {"id": "cam-uji", "kind": "camera", "name": "CCTV Uji", "lat": -6.16, "lon": 106.81,
     "labels": {"kota": "Kota kamera"}, "watches": "uji-grafik", "spot": "Jl. Kamera Uji",
     "expected_interval_s": 3600},
    {"id": "jahat", "kind": "water-level", "name": HOSTILE_NAME, "lat": -6.17, "lon": 106.84,
     "labels": {"kota": "<b>Kota</b>"},
     "thresholds": {"siaga3_cm": 100, "siaga2_cm": 150, "siaga1_cm": 200}},
]}
DEVICE_IDS: Final = tuple(device["id"] for device in CATALOG["devices"])


@dataclass
class Console:
    """The running service as a test sees it."""

    base: str
    token: str
    prefix: str
    publisher: Publisher
    service: ServiceProcess
    config: Path

    def topic(self, device_id: str, kind: str = "water-level", leaf: str = "telemetry") -> str:
        return f"{self.prefix}/{kind}/{device_id}/{leaf}"

    def publish(self, device_id: str, reading: dict[str, Any], kind: str = "water-level"
                ) -> None:
        self.publisher.publish(self.topic(device_id, kind), reading)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base}{path}", timeout=10) as answer:
            return orjson.loads(answer.read())

    def log_text(self) -> str:
        return self.service.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def console(mosquitto: Mosquitto, influxdb1: InfluxDB1,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp("console")
    catalog = folder / "devices.yaml"
    catalog.write_bytes(orjson.dumps(CATALOG))  # JSON is YAML
    influx = InfluxSettings(api="v1", url=influxdb1.url, database=unique_name("console_"))
    settings = make_settings(mosquitto.url, influx, folder / "data", catalog=catalog)
    # A fixed port, so an open page reconnects to the same service after its restart.
    settings = settings.model_copy(
        update={"http": settings.http.model_copy(update={"port": free_port()})})
    config = write_config(settings, folder / "siaga.yaml", token=TOKEN)
    service = ServiceProcess(config, folder / "service.log")
    service.start()
    publisher = Publisher(mosquitto)
    try:
        yield Console(service.base, TOKEN, settings.mqtt.topic_prefix, publisher, service,
                      config)
    finally:
        publisher.close()
        service.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("no Chromium on this machine: run scripts/ensure-system-packages "
                    "(apt-get install chromium); the tests never download a browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()


@dataclass
class Watched:
    """What a page did besides rendering: requests, foreign requests, CSP violations,
    console errors, and page errors (uncaught exceptions)."""

    requests: list[Request] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def csp_violations(self, page: Page) -> list[str]:
        found: list[str] = page.evaluate("window.__cspViolations || []")
        return found


# Installed before any script of the page runs: records what the CSP blocked.
_RECORD_CSP: Final = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__cspViolations.push(event.violatedDirective + ' ' + event.blockedURI);
});
"""


@pytest.fixture
def context(browser: Browser, console: Console) -> Iterator[BrowserContext]:
    # A browser far from Jakarta, so times shown in WIB prove the page converts them.
    context = browser.new_context(timezone_id="Europe/Berlin", locale="de-DE",
                                  viewport={"width": 1400, "height": 900})
    yield context
    context.close()


@pytest.fixture
def watched(context: BrowserContext, console: Console) -> Watched:
    watched = Watched()
    origin = urlsplit(console.base).netloc

    def route(route: Route, request: Request) -> None:
        if urlsplit(request.url).netloc != origin:
            watched.foreign.append(request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", route)
    context.on("request", lambda request: watched.requests.append(request))
    context.add_init_script(_RECORD_CSP)
    return watched


@pytest.fixture
def page(context: BrowserContext, watched: Watched) -> Page:
    page = context.new_page()
    page.on("console", lambda message: watched.errors.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
    return page


def open_console(page: Page, console: Console, path: str = "/") -> None:
    page.goto(f"{console.base}{path}")
    page.wait_for_function("() => window.__siagaReady === true", timeout=READY_S * 1000)


def device_row(page: Page, device_id: str) -> Any:
    return page.locator(f'[data-device-id="{device_id}"]').first
