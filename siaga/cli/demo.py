"""`siaga demo`: broker, database, service and simulators on one machine, with a live line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from devices.registry import bundled_catalog_path, load_catalog
from ingest.settings import CameraSettings, InfluxSettings, MqttSettings
from reports.settings import ReportsSettings
from rules.alert import AlertStatus
from siaga.app import Service, stop_on_signals
from siaga.broker.auth import SERVICE_USER, SIMULATOR_USER
from siaga.cli.simulateargs import REPORTS_KEY_ENV, REPORTS_TOKEN_ENV
from siaga.sandbox.influxdb import InfluxDB1, VictoriaMetrics
from siaga.sandbox.mosquitto import Mosquitto
from siaga.settings import BUNDLED_RULES, HttpSettings, Settings
from simulators.cameras import WATCHED_PLATES
from simulators.load import synthetic_devices, write_catalog

CONSOLE_PORT = 8080  # the console's port unless taken (then any free one)
LIVE_INTERVAL_S = 1.0  # how often the live line is redrawn
PLAIN_EVERY = 10  # without a terminal, print a line every this many intervals
LOAD_DEVICES = 1000  # synthetic devices carrying the --rate load, beside the Jakarta catalog
# ... drawn in Jakarta Bay, north of Ancol, so on the console's map they do not cover the city
# (1,000 devices on the load mode's 220 m grid make a square of about 7 km).
LOAD_CENTRE = (-6.02, 106.84)
# The replayed flood: 1 Jan 2020 from 00:00 WIB, 30 simulated hours placed to end now,
# played at 720x (an hour in 5 s: about 2.5 minutes), then live.
FLOOD = ("flood-2020-01-01", "30h", 720)
# Residents: a hundredth of Jakarta's 2020 reports, a year played in about five minutes
# (100,000x), stamped as they arrive; and three neighbours of Manggarai who report the flood
# once its gauge is at Siaga 2, so the correlation shows on the console.
REPORTS = ("2020", "0.01", "100000")
NEIGHBOURS = ((-6.2062, 106.8479, "Air masuk rumah setinggi lutut, Jl. Tambak"),
              (-6.2085, 106.8502, "Underpass tergenang, motor mogok"),
              (-6.2050, 106.8510, "Banjir di gang, warga mulai mengungsi"))


class Demo:
    """Everything in one folder (`.siaga/` by default), stopped cleanly by Ctrl-C."""

    def __init__(self, root: Path, *, rate: float, duration_s: float | None,
                 influx_api: str = "v1", port: int = CONSOLE_PORT,
                 out: TextIO = sys.stdout) -> None:
        self.root = root.resolve()
        self.port = port
        self.rate = rate
        self.duration_s = duration_s
        self.influx_api = influx_api
        self.out = out

    async def run(self) -> int:
        # The console shows each alert; the per-alert and per-delivery log lines would
        # drown the live line.
        for chatty in ("rules.alerting", "rules.delivery", "ingest.influx", "siaga.citizens"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
        self.root.mkdir(parents=True, exist_ok=True)
        port = _free_port(self.port)
        # First, so a person knows where to look while the servers start.
        self._say(f"Siaga demo: the console is at http://127.0.0.1:{port}/ (open it in a "
                  "browser)")
        self._say(f"  Data       {self.root}")
        with contextlib.ExitStack() as servers:
            broker = servers.enter_context(Mosquitto(self.root / "mosquitto",
                                                     topic_prefix="siaga"))
            self._say(f"  Mosquitto  mqtt://127.0.0.1:{broker.port} (from mosquitto.conf; "
                      f"users {SERVICE_USER} and {SIMULATOR_USER}; password and ACL files "
                      f"in {broker.data_dir})")
            database: InfluxDB1 | VictoriaMetrics
            if self.influx_api == "v1":
                database = servers.enter_context(InfluxDB1(self.root / "influxdb"))
                self._say(f"  InfluxDB   {database.url} (v1 API, database 'siaga')")
            else:
                database = servers.enter_context(VictoriaMetrics(self.root / "victoria-metrics"))
                self._say(f"  VictoriaMetrics {database.url} (v2 write API)")
            async with AlertConsole(self._alert) as console:
                settings = Settings(
                    mqtt=MqttSettings(url=broker.url, client_id="siaga-demo"),
                    influx=InfluxSettings(api="v1" if self.influx_api == "v1" else "v2",
                                          url=database.url),
                    # A token for the officers' updates the residents' simulator sends.
                    http=HttpSettings(port=port, token=SecretStr(secrets.token_urlsafe(16))),
                    reports=ReportsSettings(rate_limit_per_minute=6000),
                    cameras=CameraSettings(watchlist_file=self._watchlist()),
                    data_dir=self.root / "data",
                    webhook_url=console.url,
                    catalog=self._catalog(), rules=self._rules(),
                )
                service = Service(settings)
                totals = await self._run_all(service, broker.simulator_url)
        self._say(
            f"\nStopped. {totals.get('messages', 0)} messages received, "
            f"{totals.get('stored', 0)} readings stored, "
            f"{totals.get('dead_lettered', 0)} dead letters, "
            f"{totals.get('spool_segments', 0)} batches left in the spool."
        )
        return 0

    def _catalog(self) -> Path:
        """The Jakarta catalog plus the synthetic devices that carry the load."""
        path = self.root / "demo-catalog.yaml"
        jakarta = list(load_catalog(bundled_catalog_path()))
        write_catalog(jakarta + synthetic_devices(LOAD_DEVICES, centre=LOAD_CENTRE), path)
        return path

    def _watchlist(self) -> Path:
        """The plates the demo keeps: the simulators' made-up 'tax arrears' ones. Every
        other plate the cameras read is only counted (SPEC section 7)."""
        path = self.root / "demo-watchlist.csv"
        rows = [f"{plate},Bapenda (demo),tunggakan pajak (contoh)" for plate in WATCHED_PLATES]
        path.write_text("\n".join(["plate,agency,reason", *rows]) + "\n", encoding="utf-8")
        self._say(f"  Cameras    the catalog's cameras; plates kept only from the watch list "
                  f"{path} ({len(rows)} made-up plates)")
        return path

    def _rules(self) -> Path:
        """The bundled rules, paging changes up to 30 days old: the demo replays a past
        flood, whose crossings would otherwise be history (recorded, not paged)."""
        text = BUNDLED_RULES.read_text(encoding="utf-8")
        path = self.root / "demo-rules.yaml"
        path.write_text(text.replace("page_max_age: 15m", "page_max_age: 30d"), "utf-8")
        return path

    async def _run_all(self, service: Service, broker_url: str) -> dict[str, int]:
        name, played, speed = FLOOD
        self._say(f"  Simulators the {name} scenario replayed at {speed}x ({played} ending "
                  f"now, then live), and {self.rate:g} readings/s from {LOAD_DEVICES} "
                  f"synthetic devices; each in its own process.")

        async with stop_on_signals() as stop, asyncio.TaskGroup() as group:
            group.create_task(service.run(stop))
            await service.ready.wait()
            token = service.settings.http.token
            assert token is not None
            self._say(f"  API        http://127.0.0.1:{service.http_port}/api/alerts "
                      "(alerts are printed here as they are notified)")
            # On the terminal only (never in a log or a URL): the operator types it into the
            # console to acknowledge and silence.
            self._say(f"  Token      {token.get_secret_value()}  (the console asks for it "
                      "to acknowledge or silence). Ctrl-C stops.\n")
            group.create_task(self._simulators(broker_url, stop))
            group.create_task(self._residents(service, stop))
            group.create_task(self._live_line(service, stop))
            if self.duration_s is not None:
                group.create_task(_stop_after(stop, self.duration_s))
        return service.snapshot()

    async def _simulators(self, broker_url: str, stop: asyncio.Event) -> None:
        """`siaga simulate` as separate processes: devices are not part of the service."""
        name, played, speed = FLOOD
        flood = ["--scenario", name, "--start", f"now-{played}", "--speed", str(speed)]
        load = ["--devices", str(LOAD_DEVICES), "--rate", str(self.rate)]
        async with asyncio.TaskGroup() as group:
            for args in (flood, load):
                group.create_task(self._simulator(args, broker_url, stop))

    async def _residents(self, service: Service, stop: asyncio.Event) -> None:
        """Residents report through Open311: the year's trickle in its own process, and
        Manggarai's neighbours once the gauge is at Siaga 2."""
        assert service.desk is not None and service.http_port is not None
        book = service.desk.book
        key = await asyncio.to_thread(book.add_key, f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
        token = service.settings.http.token
        assert token is not None
        url = f"http://127.0.0.1:{service.http_port}"
        year, scale, speedup = REPORTS
        self._say(f"  Residents  {scale} of Jakarta's {year} reports at {speedup}x through "
                  f"{url}/open311/v2/ (siaga simulate reports), and Manggarai's neighbours "
                  "when its gauge reaches Siaga 2.")
        # The key and the token go in the environment, never on a command line (ps shows it).
        trickle = ["reports", "--year", year, "--scale", scale, "--speedup", speedup, "--live",
                   "--url", url]
        secrets_env = {REPORTS_KEY_ENV: key, REPORTS_TOKEN_ENV: token.get_secret_value()}
        async with asyncio.TaskGroup() as group:
            group.create_task(self._simulator(trickle, "", stop, seeded=False, env=secrets_env))
            group.create_task(self._neighbours(service, url, key, stop))

    async def _neighbours(self, service: Service, url: str, key: str,
                          stop: asyncio.Event) -> None:
        while not stop.is_set() and not _manggarai_at_siaga_2(service):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LIVE_INTERVAL_S)
        async with aiohttp.ClientSession() as session:
            for lat, lon, text in NEIGHBOURS:
                if stop.is_set():
                    return
                fields = {"api_key": key, "service_code": "banjir", "lat": str(lat),
                          "long": str(lon), "description": text}
                async with session.post(f"{url}/open311/v2/requests.json",
                                        data=fields) as answer:
                    body = await answer.json()
                shown = body[0].get("service_request_id") or body[0].get("description")
                self._alert(f"  REPORT   banjir #{shown} near Pintu Air Manggarai: {text}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 3.0)

    async def _simulator(self, args: list[str], broker_url: str, stop: asyncio.Event, *,
                         seeded: bool = True, env: dict[str, str] | None = None) -> None:
        seed = ["--seed", str(int(time.time()))] if seeded else []
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "siaga", "simulate", *args, *seed,
            env={**os.environ, "SIAGA_MQTT_URL": broker_url, **(env or {})},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        await stop.wait()
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # the fleet publishes `offline` and its summary
        output, _ = await process.communicate()
        lines = output.decode(errors="replace").strip().splitlines()
        if lines:
            self._say(f"\nSimulators ({' '.join(args[:2])}): {lines[0]}")

    async def _live_line(self, service: Service, stop: asyncio.Event) -> None:
        """Every second on a terminal; every PLAIN_EVERY seconds (averaged) in a log."""
        tty = self.out.isatty()
        every = 1 if tty else PLAIN_EVERY
        shown, started, ticks = service.snapshot(), time.monotonic(), 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LIVE_INTERVAL_S)
            ticks += 1
            if ticks % every:
                continue
            now = service.snapshot()
            line = _live_text(shown, now, every * LIVE_INTERVAL_S, time.monotonic() - started)
            shown = now
            if tty:
                self.out.write("\r" + line.ljust(110))
                self.out.flush()
            else:
                self._say(line)

    def _alert(self, line: str) -> None:
        # On a terminal the live line is redrawn in place: start the alert on a fresh line.
        self._say(("\r" if self.out.isatty() else "") + line.ljust(110))

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free port: the console's URL is
    printed before the service binds it (another program could take it meanwhile; then
    the service says so and stops)."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            bound: int = probe.getsockname()[1]
            return bound
    raise OSError("no free port on 127.0.0.1")


def _manggarai_at_siaga_2(service: Service) -> bool:
    alerting = service.alerting
    if alerting is None:
        return False
    return any(alert.rule == "FloodLevel" and alert.labels.get("device_id") == "manggarai"
               and alert.status is AlertStatus.FIRING
               and alert.labels.get("level") in ("siaga-2", "siaga-1")
               for alert in alerting.engine.alerts.values())


def _live_text(before: dict[str, int], now: dict[str, int], dt: float, elapsed: float) -> str:
    def rate(key: str) -> float:
        return (now.get(key, 0) - before.get(key, 0)) / dt

    return (
        f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] "
        f"received {rate('readings'):6.0f}/s  stored {rate('stored'):6.0f}/s  "
        f"dead-lettered {rate('dead_lettered'):4.0f}/s  spooled {rate('spooled'):5.0f}/s  | "
        f"total stored {now.get('stored', 0):,}  spool {now.get('spool_segments', 0)} batches"
        f"  | reports {now.get('reports', 0):,}"
    )


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    stop.set()


class AlertConsole:
    """A webhook receiver that prints each notification: the demo's operator screen."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self._show = show
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> AlertConsole:
        app = web.Application()
        app.router.add_post("/", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        for alert in body.get("alerts", []):
            self._show(_alert_text(alert))
        return web.Response(status=200)


def _alert_text(alert: dict[str, Any]) -> str:
    labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
    status = str(alert.get("status", "?")).upper()
    what = " ".join(str(labels[key]) for key in ("alertname", "device_id") if key in labels)
    state = " ".join(str(labels[key]) for key in ("level", "severity") if key in labels)
    if status == "RESOLVED":
        state = f"(was {state})"  # the labels are those it fired with; the summary says the end
    return f"  ALERT {status:<8} {what} {state}: {annotations.get('summary', '')}"
