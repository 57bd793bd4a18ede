"""The monitoring room's console in Chromium, against `siaga run` on real Mosquitto and
InfluxDB (issue 15's browser tests; SPEC section 8's hooks: `data-device-id`,
`data-status`, `data-fingerprint`, `data-report-id`).

Each test drives its own devices (conftest.GAUGES), so the order of tests does not matter,
except the restart test, which runs last in the file because it restarts the service.
Changes are awaited with a ceiling (conftest.LIVE_S); how fast they show is measured by
`python -m bench --only console`, not here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

import orjson
import pytest
from playwright.sync_api import Page, Request, Route, expect

from tests.polling import wait_until
from tests.siaga.console.browser.conftest import (
    DEVICE_IDS,
    HOSTILE_NAME,
    LIVE_S,
    TOKEN,
    Console,
    Watched,
    device_row,
    open_console,
)

pytestmark = pytest.mark.browser

LIVE_MS: Final = LIVE_S * 1000
WIB: Final = ZoneInfo("Asia/Jakarta")
CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
              "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'")


T = TypeVar("T")


def value_of(get: Callable[[], T | None], what: str) -> T:
    """What `get` returns once it returns something (within LIVE_S)."""
    found: list[T] = []

    def check() -> bool:
        value = get()
        if value is not None:
            found.append(value)
        return value is not None

    wait_until(check, LIVE_S, what)
    return found[-1]


def firing_alert(console: Console, device_id: str, rule: str = "FloodLevel") -> dict[str, Any]:
    """The alert of `rule` on `device_id` once the service has it (pending or firing)."""

    def find() -> dict[str, Any] | None:
        alerts = console.get(f"/api/alerts?match=alertname={rule}&match=device_id={device_id}")
        open_ = [a for a in alerts["alerts"] if a["status"] in ("firing", "pending")]
        return open_[0] if open_ else None

    return value_of(find, f"an open {rule} alert of {device_id}")


def sign_in(page: Page, name: str = "Petugas Uji") -> None:
    page.click('[data-action="login"]')
    page.fill('#token-dialog input[name="token"]', TOKEN)
    page.fill('#token-dialog input[name="operator"]', name)
    page.click('[data-action="token-save"]')
    expect(page.locator("#token-dialog")).not_to_be_visible()


# --- loading -----------------------------------------------------------------------------


def test_the_console_loads_every_device_from_the_service_alone(
        page: Page, console: Console, watched: Watched) -> None:
    answer = page.goto(f"{console.base}/")
    assert answer is not None and answer.status == 200
    assert answer.headers["content-security-policy"] == CSP
    page.wait_for_function("() => window.__siagaReady === true")
    for device_id in DEVICE_IDS:
        expect(page.locator(f'tr[data-device-id="{device_id}"]')).to_have_count(1)
        status = device_row(page, device_id).get_attribute("data-status")
        assert status in ("no-data", "offline", "ok"), (device_id, status)
    expect(page.locator("body")).to_have_attribute("data-connection", "up", timeout=LIVE_MS)
    assert watched.foreign == []
    assert watched.csp_violations(page) == []
    assert watched.errors == []
    served = {urlsplit(r.url).path for r in watched.requests}
    assert {"/", "/console/api/state", "/console/stream"} <= served


# --- live --------------------------------------------------------------------------------


def test_a_gauge_above_siaga_1_turns_its_row_and_raises_an_alert_row_live(
        page: Page, console: Console, watched: Watched) -> None:
    open_console(page, console)
    row = device_row(page, "uji-naik")
    expect(row).not_to_have_attribute("data-status", "siaga-1")
    console.publish("uji-naik", {"level_cm": 250})  # siaga1_cm is 200
    expect(row).to_have_attribute("data-status", "siaga-1", timeout=LIVE_MS)
    alert = firing_alert(console, "uji-naik")
    alert_row = page.locator(f'[data-fingerprint="{alert["fingerprint"]}"]')
    expect(alert_row).to_be_visible(timeout=LIVE_MS)
    expect(alert_row).to_contain_text("Pos Uji Naik")
    assert watched.csp_violations(page) == []
    assert watched.errors == []


def test_without_the_token_the_console_is_read_only(
        page: Page, console: Console, watched: Watched) -> None:
    console.publish("uji-diam", {"level_cm": 120})  # siaga-3: an alert to act on
    alert = firing_alert(console, "uji-diam")
    open_console(page, console)
    alert_row = page.locator(f'[data-fingerprint="{alert["fingerprint"]}"]')
    expect(alert_row).to_be_visible(timeout=LIVE_MS)
    expect(page.locator('[data-action="ack"]')).to_have_count(0)
    expect(page.locator('[data-action="silence"]')).to_have_count(0)
    assert [r.url for r in watched.requests if r.method != "GET"] == []


def test_acknowledging_from_the_page_reaches_the_alert_book(
        page: Page, console: Console, watched: Watched) -> None:
    console.publish("uji-ack", {"level_cm": 160})  # siaga-2
    alert = firing_alert(console, "uji-ack")
    fingerprint = alert["fingerprint"]
    open_console(page, console)
    sign_in(page, "Petugas Ack")
    alert_row = page.locator(f'[data-fingerprint="{fingerprint}"]')
    alert_row.locator('[data-action="ack"]').click()

    def acknowledged() -> dict[str, Any] | None:
        ack: dict[str, Any] | None = console.get(f"/api/alerts/{fingerprint}")["acknowledged"]
        return ack

    ack = value_of(acknowledged, "the acknowledgement in the alert book")
    assert ack["by"] == "Petugas Ack"
    # The token lives in this tab's session storage only, travels only in the header.
    assert page.evaluate("sessionStorage.getItem('siaga.token')") == TOKEN
    assert page.evaluate(f"Object.values(localStorage).some(v => v.includes('{TOKEN}'))") \
        is False
    assert not [r.url for r in watched.requests if TOKEN in r.url]
    posts = [r for r in watched.requests if r.method == "POST"]
    assert [urlsplit(r.url).path for r in posts] == \
        [f"/api/alerts/{fingerprint}/ack"]
    assert posts[0].headers.get("authorization") == f"Bearer {TOKEN}"
    assert TOKEN not in (posts[0].post_data or "")
    assert TOKEN not in console.log_text()


def test_silencing_from_the_page_adds_a_silence(
        page: Page, console: Console, watched: Watched) -> None:
    console.publish("uji-senyap", {"level_cm": 130})
    alert = firing_alert(console, "uji-senyap")
    open_console(page, console)
    sign_in(page)
    page.locator(f'[data-fingerprint="{alert["fingerprint"]}"] [data-action="silence"]').click()
    dialog = page.locator("#silence-dialog")
    expect(dialog).to_be_visible()
    dialog.locator('select[name="duration"]').select_option("1h")
    dialog.locator('textarea[name="comment"]').fill("Petugas sudah di lokasi")
    page.click('[data-action="silence-save"]')

    def silence() -> dict[str, Any] | None:
        for found in console.get("/api/silences")["silences"]:
            # Values may come back quoted (device_id="uji-senyap"): compare them unquoted.
            matchers = [matcher.replace('"', "") for matcher in found["matchers"]]
            if "device_id=uji-senyap" in matchers:
                return dict(found) | {"matchers": matchers}
        return None

    made = value_of(silence, "the silence in the alert book")
    assert "alertname=FloodLevel" in made["matchers"]
    assert made["comment"] == "Petugas sudah di lokasi"
    assert made["created_by"] == "Petugas Uji"


@contextmanager
def feeding(console: Console, device_id: str, level_cm: float) -> Iterator[None]:
    """The device reporting every 0.3 s for as long as the block runs: it stays heard."""
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            console.publish(device_id, {"level_cm": level_cm})
            stop.wait(0.3)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_a_device_gone_silent_or_saying_offline_turns_grey(
        page: Page, console: Console) -> None:
    open_console(page, console)
    silent, said = device_row(page, "uji-sunyi"), device_row(page, "uji-putus")
    # uji-sunyi reports every second (its catalog entry): heard, then silent past its grace.
    with feeding(console, "uji-sunyi", 40):
        expect(silent).to_have_attribute("data-status", "ok", timeout=LIVE_MS)
    expect(silent).to_have_attribute("data-status", "offline", timeout=LIVE_MS)
    # uji-putus reports hourly: only its own `offline` on the status topic turns it grey.
    console.publish("uji-putus", {"level_cm": 40})
    expect(said).to_have_attribute("data-status", "ok", timeout=LIVE_MS)
    console.publisher.publish(console.topic("uji-putus", leaf="status"), b"offline")
    expect(said).to_have_attribute("data-status", "offline", timeout=LIVE_MS)


def test_a_state_that_fails_to_load_after_a_reset_is_loaded_again(
        page: Page, console: Console) -> None:
    # The stream is cut while the gauge turns siaga-2, so the page never hears of it; then
    # it reopens on an id the service does not know, whose answer is `reset`, and the state
    # the page asks for next fails once, as a 503 while the service starts would.
    plan: dict[str, Any] = {"stream": "cut", "state_failures": 0}

    def stream(route: Route, request: Request) -> None:
        if plan["stream"] == "cut":
            route.abort()
        elif plan["stream"] == "unknown id":
            plan["stream"] = "open"
            route.continue_(url=f"{console.base}/console/stream?last_event_id=0badc0de-1",
                            headers=request.headers | {"last-event-id": "0badc0de-1"})
        else:
            route.continue_()

    def state(route: Route, request: Request) -> None:
        if plan["state_failures"]:
            plan["state_failures"] -= 1
            route.fulfill(status=503, content_type="application/json",
                          body='{"error": "the console is still reading the alert book"}')
        else:
            route.continue_()

    page.route(re.compile(r"/console/stream(\?|$)"), stream)
    page.route(re.compile(r"/console/api/state$"), state)
    open_console(page, console)
    row = device_row(page, "uji-ulang")
    expect(page.locator("body")).to_have_attribute("data-connection", "down", timeout=LIVE_MS)
    console.publish("uji-ulang", {"level_cm": 175})  # siaga-2
    value_of(lambda: next((True for device in console.get("/console/api/state")["devices"]
                           if device["id"] == "uji-ulang" and device["status"] == "siaga-2"),
                          None), "uji-ulang at siaga-2 in the service's state")
    plan.update({"stream": "unknown id", "state_failures": 1})
    page.evaluate("window.dispatchEvent(new Event('online'))")  # the stream reopens now
    expect(row).to_have_attribute("data-status", "siaga-2", timeout=LIVE_MS)
    expect(page.locator("body")).to_have_attribute("data-connection", "up", timeout=LIVE_MS)
    assert (plan["stream"], plan["state_failures"]) == ("open", 0)  # the reset, the failure


# --- safety ------------------------------------------------------------------------------


def test_a_hostile_device_name_is_shown_as_text(
        page: Page, console: Console, watched: Watched) -> None:
    open_console(page, console)
    row = device_row(page, "jahat")
    expect(row).to_contain_text(HOSTILE_NAME)
    row.click()  # the device panel writes the name and the labels too
    expect(page.locator("#panel")).to_contain_text(HOSTILE_NAME)
    expect(page.locator("#panel")).to_contain_text("<b>Kota</b>")
    assert page.evaluate("window.__pwned") is None
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator("#panel b, .device-table b").count() == 0
    assert watched.foreign == []


# --- language, time, wall ---------------------------------------------------------------


def test_indonesian_by_default_english_on_request_and_times_in_wib(
        page: Page, console: Console) -> None:
    open_console(page, console)
    expect(page.locator("html")).to_have_attribute("lang", "id")
    expect(page.locator("#alerts-title")).to_contain_text("Peringatan")
    clock = page.locator("#clock")
    expect(clock).to_contain_text("WIB")
    # The browser is in Berlin (conftest): the hour shown is Jakarta's.
    shown = re.search(r"(\d\d)[:.](\d\d)[:.]\d\d\s*WIB", clock.inner_text())
    assert shown is not None, clock.inner_text()
    minutes = int(shown[1]) * 60 + int(shown[2])
    jakarta = datetime.now(WIB)
    drift = abs(minutes - (jakarta.hour * 60 + jakarta.minute))
    assert min(drift, 24 * 60 - drift) <= 1, (shown[0], jakarta)  # Berlin is 6 h behind
    page.click('[data-action="lang"][value="en"]')
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#alerts-title")).to_contain_text("Alerts")
    page.reload()
    page.wait_for_function("() => window.__siagaReady === true")
    expect(page.locator("#alerts-title")).to_contain_text("Alerts")
    page.click('[data-action="lang"][value="id"]')
    expect(page.locator("#alerts-title")).to_contain_text("Peringatan")


def test_wall_mode_shows_no_controls(page: Page, console: Console) -> None:
    open_console(page, console, "/?wall=1")
    expect(page.locator("body")).to_have_class("wall")
    for control in page.locator("button, input, select, textarea").all():
        assert not control.is_visible(), control.evaluate("e => e.outerHTML")
    expect(page.locator(".leaflet-container")).to_be_visible()
    expect(page.locator("#alerts-title")).to_be_visible()


# --- the device panel, reports, history --------------------------------------------------


def test_the_device_panel_shows_the_gauge_and_its_chart(
        page: Page, console: Console, watched: Watched) -> None:
    now = time.time()
    for minutes_ago, level in ((50, 60), (35, 90), (20, 110), (5, 130)):
        console.publish("uji-grafik", {"ts": now - minutes_ago * 60, "level_cm": level})
    open_console(page, console)
    row = device_row(page, "uji-grafik")
    expect(row).to_have_attribute("data-status", "siaga-3", timeout=LIVE_MS)
    row.click()
    panel = page.locator("#panel")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Pos Uji Grafik")
    expect(panel).to_contain_text("Kota grafik")
    expect(panel).to_contain_text("200")  # siaga1_cm among the thresholds
    expect(panel.locator("canvas").first).to_be_visible(timeout=LIVE_MS)
    assert watched.csp_violations(page) == []
    assert watched.errors == []


def test_a_camera_seeing_water_turns_and_its_panel_shows_its_counts(
        page: Page, console: Console, watched: Watched) -> None:
    open_console(page, console)
    row = device_row(page, "cam-uji")
    console.publish("cam-uji", {"water_score": 0.93, "vehicles_per_min": 4, "people": 2},
                    kind="camera")
    expect(row).to_have_attribute("data-status", "water", timeout=LIVE_MS)
    row.click()
    panel = page.locator("#panel")
    expect(panel).to_contain_text("Jl. Kamera Uji")  # its spot
    expect(panel).to_contain_text("uji-grafik")  # the gauge it watches over
    expect(panel).to_contain_text("0.93", timeout=LIVE_MS)  # its latest counts
    expect(panel).to_contain_text("Kendaraan per menit")
    assert watched.csp_violations(page) == []
    assert watched.errors == []


def _add_key(console: Console) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "siaga", "reports", "keys", "add", "browser-test",
         "-c", str(console.config)],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].strip()


def test_residents_reports_are_a_layer_gathered_when_zoomed_out(
        page: Page, console: Console) -> None:
    key = _add_key(console)
    ids = []
    for number in range(3):
        form = {"api_key": key, "service_code": "sampah", "lat": f"{-6.1500 - number * 0.0004}",
                "long": "106.7500", "description": f"Sampah menumpuk, uji peramban {number}"}
        request = urllib.request.Request(
            f"{console.base}/open311/v2/requests.json",
            data=urlencode(form).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            ids.append(str(orjson.loads(answer.read())[0]["service_request_id"]))
    open_console(page, console)
    for report_id in ids:  # each report is on the page, alone or inside a group
        expect(page.locator(f'[data-report-id="{report_id}"]')).to_have_count(1, timeout=LIVE_MS)
    # Zoomed out to the whole city, the three (40 m apart) share one marker showing 3.
    page.evaluate("window.__siagaMap.setZoom(10, {animate: false})")
    cluster = page.locator(".report-cluster", has_text="3")
    expect(cluster).to_have_count(1, timeout=LIVE_MS)
    # Zoomed in to the street, each is its own marker.
    page.evaluate("window.__siagaMap.setView([-6.1504, 106.75], 18, {animate: false})")
    for report_id in ids:
        expect(page.locator(f'.report[data-report-id="{report_id}"]')).to_be_visible(
            timeout=LIVE_MS)


def test_a_past_moment_shows_the_map_and_alerts_as_they_were_then_back_to_live(
        page: Page, console: Console) -> None:
    then = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    # At `then` the gauge went past Siaga 1; 40 minutes later it was back to normal.
    console.publish("uji-riwayat", {"ts": then.timestamp(), "level_cm": 240})
    console.publish("uji-riwayat", {"ts": (then + timedelta(minutes=40)).timestamp(),
                                    "level_cm": 40})
    open_console(page, console)
    row = device_row(page, "uji-riwayat")
    expect(row).to_have_attribute("data-status", "ok", timeout=LIVE_MS)
    alert: dict[str, Any] = value_of(lambda: next(iter(console.get(
        "/api/alerts?match=device_id=uji-riwayat&status=resolved")["alerts"]), None),
        "the resolved Siaga 1 alert of uji-riwayat")
    moment = (then + timedelta(minutes=10)).astimezone(WIB)
    page.fill("#history-at", moment.strftime("%Y-%m-%dT%H:%M"))
    page.click('[data-action="history"]')
    expect(page.locator("#stripe")).to_be_visible(timeout=LIVE_MS)
    expect(page.locator("#stripe")).to_contain_text("WIB")
    expect(row).to_have_attribute("data-status", "siaga-1", timeout=LIVE_MS)
    expect(page.locator(f'[data-fingerprint="{alert["fingerprint"]}"]')).to_be_visible(
        timeout=LIVE_MS)
    page.click('[data-action="live"]')
    expect(page.locator("#stripe")).to_be_hidden(timeout=LIVE_MS)
    expect(row).to_have_attribute("data-status", "ok", timeout=LIVE_MS)


# --- last: restarts the service ----------------------------------------------------------


def test_zz_a_restart_shows_the_banner_and_the_page_catches_up(
        page: Page, console: Console) -> None:
    open_console(page, console)
    row = device_row(page, "uji-riwayat")
    expect(page.locator("body")).to_have_attribute("data-connection", "up", timeout=LIVE_MS)
    console.service.stop()
    expect(page.locator("#banner")).to_be_visible(timeout=LIVE_MS)
    expect(page.locator("body")).to_have_attribute("data-connection", "down")
    # Published while the service is down: the broker keeps it for the service's session.
    console.publish("uji-riwayat", {"level_cm": 175})  # siaga-2
    console.service.start()
    expect(row).to_have_attribute("data-status", "siaga-2", timeout=LIVE_MS * 3)
    expect(page.locator("#banner")).to_be_hidden(timeout=LIVE_MS)
    expect(page.locator("body")).to_have_attribute("data-connection", "up")
