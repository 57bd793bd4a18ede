"""The consoles' load client: N monitoring-room pages as the service sees them, one process.

Run as its own process (`python -m bench.consoleclients ...`), so the consoles never share
the service's event loop. Each console does what the page does: GET /console/api/state,
then GET /console/stream?last_event_id=<the state's last_id>, reading Server-Sent Events and
decoding each event's JSON, counting events and bytes. Optionally one headless Chromium page
(Playwright, Debian's `chromium`; never a downloaded browser) stays open beside them.

Update latency: after the warm-up a gauge of the catalog is published (MQTT, QoS 1) above
its siaga1_cm and back, once every `flip_every_s`; the clock runs from the publish to the
first `devices` event carrying the expected status in console 0 (publisher and reader share
this process's monotonic clock). With the page open, a MutationObserver on the gauge's row
stamps `Date.now()` at each `data-status` change, against the wall-clock time of each publish.

After the counted span the consoles close, and the page is loaded `page_loads` times in a
fresh browser context each (cold): the time from `goto('/')` to `window.__siagaReady`, and
the JS heap then. It prints one JSON object on stdout.

    python -m bench.consoleclients --url http://127.0.0.1:P --clients 50 --warm-up 10 \
        --duration 60 --mqtt-port M --topic PREFIX/water-level/karet/telemetry \
        --device karet --flips 100 [--browser] [--page-loads 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.latency import percentile

ALERT_STATUS = "siaga-1"  # the gauge's status above its siaga1_cm
ABOVE_CM = 10.0  # the high reading: this far above siaga1_cm
BELOW_FACTOR = 0.5  # the low reading, for a gauge without a normal range: half of siaga3_cm
FLIP_TIMEOUT_S = 5.0  # a flip not seen by then counts as lost (the tick is 200 ms)
STATE_TIMEOUT_S = 120.0  # 50 consoles fetching a 10,000-device state at once on 2 cores
READY_TIMEOUT_MS = 120_000  # the page's first full render of 10,000 devices, at worst
CONNECT_TIMEOUT_S = 10.0
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--disable-default-apps", "--mute-audio")
# Installed on the page before its scripts run: stamps each data-status change of one row.
OBSERVER_JS = """
(device) => {
  window.__benchStamps = [];
  const attach = () => {
    const row = document.querySelector(`[data-device-id="${CSS.escape(device)}"]`);
    if (!row) return false;
    new MutationObserver(() => window.__benchStamps.push([Date.now(), row.dataset.status]))
      .observe(row, { attributes: true, attributeFilter: ['data-status'] });
    return true;
  };
  return attach();
}
"""


@dataclass(frozen=True, slots=True)
class Event:
    """One Server-Sent Event as EventSource would dispatch it."""

    name: str
    data: str
    id: str | None


@dataclass(slots=True)
class SseParser:
    """Bytes of a text/event-stream in, events out; chunks may split lines anywhere."""

    _buffer: bytes = b""
    _name: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        events = []
        for raw in lines:
            line = raw.rstrip(b"\r").decode()
            if not line:
                if self._data:  # a blank line dispatches; no data, no event (as EventSource)
                    events.append(Event(self._name or "message", "\n".join(self._data),
                                        self._id))
                self._name, self._data = "", []
                continue
            if line.startswith(":"):  # a comment: the heartbeat
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                self._name = value
            elif key == "data":
                self._data.append(value)
            elif key == "id":
                self._id = value
        return events


@dataclass(slots=True)
class Tally:
    """What one console received: events by name, bytes, and when it got its state."""

    events: Counter[str] = field(default_factory=Counter)
    event_bytes: Counter[str] = field(default_factory=Counter)  # each event's data, by name
    changes: int = 0  # entries of the `devices` events: statuses that changed
    bytes: int = 0
    state_s: float | None = None
    state_bytes: int = 0
    devices: int = 0
    error: str | None = None


class Watch:
    """Console 0 tells the flips when the gauge's status arrives."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.waiting: tuple[str, bool, asyncio.Future[float]] | None = None

    def expect(self, status: str, equal: bool) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting = (status, equal, future)
        return future

    def seen(self, entries: list[dict[str, Any]], at: float) -> None:
        if self.waiting is None:
            return
        status, equal, future = self.waiting
        for entry in entries:
            if entry.get("id") == self.device and (entry.get("status") == status) == equal:
                if not future.done():
                    future.set_result(at)
                self.waiting = None
                return


async def console(session: aiohttp.ClientSession, base: str, tally: Tally,
                  watch: Watch | None) -> None:
    """One page's traffic: the state, then the stream from its last_id, until cancelled."""
    try:
        started = time.monotonic()
        async with session.get(f"{base}/console/api/state",
                               timeout=aiohttp.ClientTimeout(total=STATE_TIMEOUT_S)) as answer:
            answer.raise_for_status()
            body = await answer.read()
        state = orjson.loads(body)
        tally.state_s, tally.state_bytes = time.monotonic() - started, len(body)
        tally.devices = len(state["devices"])
        parser = SseParser()
        async with session.get(f"{base}/console/stream",
                               params={"last_event_id": state["last_id"]},
                               timeout=aiohttp.ClientTimeout(total=None,
                                                             sock_connect=CONNECT_TIMEOUT_S)
                               ) as stream:
            stream.raise_for_status()
            async for chunk in stream.content.iter_any():
                at = time.monotonic()
                tally.bytes += len(chunk)
                for event in parser.feed(chunk):
                    tally.events[event.name] += 1
                    tally.event_bytes[event.name] += len(event.data)
                    data = orjson.loads(event.data)  # the page decodes every event
                    if event.name == "devices":
                        tally.changes += len(data)
                        if watch is not None:
                            watch.seen(data, at)
        tally.error = "the stream ended"
    except asyncio.CancelledError:
        raise
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        tally.error = repr(exc)


class Publisher:
    """The gauge's device: QoS 1 readings with a fresh ts (paho's network thread)."""

    def __init__(self, port: int, topic: str) -> None:
        self.topic = topic
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"console-flips-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv311)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, level_cm: float) -> tuple[float, float]:
        """Publish now; (monotonic s, wall-clock ms) of the publish."""
        wall = time.time()
        at = time.monotonic()
        self.client.publish(self.topic, orjson.dumps({"ts": round(wall, 6),
                                                      "level_cm": level_cm}), qos=1)
        return at, wall * 1000

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(slots=True)
class Flips:
    sse_ms: list[float] = field(default_factory=list)
    lost: int = 0
    published: list[tuple[float, str]] = field(default_factory=list)  # wall ms, expected


async def flip(publisher: Publisher, watch: Watch, thresholds: dict[str, float], count: int,
               every_s: float) -> Flips:
    """The gauge above siaga1_cm and back, `count` times in all, one every `every_s`."""
    high = thresholds["siaga1_cm"] + ABOVE_CM
    # The middle of its normal range: below every level by more than any clear margin.
    low = (thresholds["normal_low_cm"] + thresholds["normal_high_cm"]) / 2 \
        if "normal_low_cm" in thresholds and "normal_high_cm" in thresholds \
        else thresholds["siaga3_cm"] * BELOW_FACTOR
    flips = Flips()
    loop = asyncio.get_running_loop()
    for number in range(count):
        slot = loop.time() + every_s
        up = number % 2 == 0
        # Up: the status must become siaga-1; down: anything but siaga-1 (ok, normally).
        arrived = watch.expect(ALERT_STATUS, equal=up)
        published, wall_ms = publisher.publish(high if up else low)
        flips.published.append((wall_ms, ALERT_STATUS if up else "not " + ALERT_STATUS))
        try:
            at = await asyncio.wait_for(arrived, FLIP_TIMEOUT_S)
            flips.sse_ms.append((at - published) * 1000)
        except TimeoutError:
            flips.lost += 1
        await asyncio.sleep(max(0.0, slot - loop.time()))  # the cadence, not a synchronisation
    return flips


def page_latencies(stamps: list[list[Any]], published: list[tuple[float, str]]) -> list[float]:
    """Each publish in turn matched to the first later data-status change that shows what it
    expects, after the change matched to the one before (a change may come after the next
    publish: a slow one is late, not lost)."""
    latencies, next_stamp = [], 0
    for wall_ms, expected in published:
        for index in range(next_stamp, len(stamps)):
            at_ms, status = stamps[index]
            if at_ms >= wall_ms and _shows(status, expected):
                latencies.append(at_ms - wall_ms)
                next_stamp = index + 1
                break
    return latencies


def _shows(status: str, expected: str) -> bool:
    if expected.startswith("not "):
        return status != expected.removeprefix("not ")
    return status == expected


def summary(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"samples": len(ordered), "p50_ms": percentile(ordered, 50),
            "p99_ms": percentile(ordered, 99), "max_ms": ordered[-1] if ordered else None}


class Browser:
    """Debian's Chromium through Playwright, or the reason it cannot run here."""

    def __init__(self) -> None:
        self.skipped: str | None = None
        self._playwright: Any = None
        self.browser: Any = None

    async def __aenter__(self) -> Browser:
        chromium = shutil.which("chromium")
        if chromium is None:
            self.skipped = "no `chromium` on PATH (scripts/ensure-system-packages installs it)"
            return self
        try:
            from playwright.async_api import async_playwright
        except ImportError:
            self.skipped = "playwright is not installed (pip install -e '.[dev]')"
            return self
        self._playwright = await async_playwright().start()
        self.browser = await self._playwright.chromium.launch(
            executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.browser is not None:
            await self.browser.close()
        if self._playwright is not None:
            await self._playwright.stop()

    async def load(self, base: str) -> tuple[Any, float, float | None]:
        """A fresh context's page at `base`: (page, ms until __siagaReady, JS heap MB)."""
        context = await self.browser.new_context()
        page = await context.new_page()
        started = time.monotonic()
        await page.goto(f"{base}/")
        # A function, not an expression: Playwright evaluates an expression with eval(),
        # which the console's CSP (script-src 'self') refuses.
        await page.wait_for_function("() => window.__siagaReady === true",
                                     timeout=READY_TIMEOUT_MS)
        ready_ms = (time.monotonic() - started) * 1000
        heap = await page.evaluate(
            "() => performance.memory ? performance.memory.usedJSHeapSize : null")
        return page, ready_ms, heap / 2**20 if heap is not None else None


async def page_loads(browser: Browser, base: str, count: int) -> dict[str, Any]:
    if browser.skipped is not None:
        return {"skipped": browser.skipped}
    ready, heaps = [], []
    for _ in range(count):
        page, ready_ms, heap_mb = await browser.load(base)
        ready.append(ready_ms)
        if heap_mb is not None:
            heaps.append(heap_mb)
        await page.context.close()
    return {"loads": count, "ready_ms": ready, "median_ms": statistics.median(ready),
            "heap_mb": statistics.median(heaps) if heaps else None}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = args.url.rstrip("/")
    tallies = [Tally() for _ in range(args.clients)]
    watch = Watch(args.device)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    result: dict[str, Any] = {"clients": args.clients}
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session, \
            Browser() as browser:
        started = time.monotonic()
        tasks = [asyncio.create_task(console(session, base, tally, watch if i == 0 else None))
                 for i, tally in enumerate(tallies)]
        open_page: Any = None
        page_flips = False
        if args.browser and browser.skipped is None:
            open_page, first_ms, _ = await browser.load(base)
            result["open_page_ready_ms"] = first_ms
            page_flips = await open_page.evaluate(OBSERVER_JS, args.device)
        await asyncio.sleep(max(0.0, started + args.warm_up - time.monotonic()))
        before = _counts(tallies)
        counted_from = time.monotonic()
        flips = Flips()
        if args.flips:
            state = await _state(session, base)
            gauge = next(d for d in state["devices"] if d["id"] == args.device)
            publisher = Publisher(args.mqtt_port, args.topic)
            try:
                flips = await flip(publisher, watch, gauge["thresholds"], args.flips,
                                   args.flip_every)
            finally:
                publisher.close()
        await asyncio.sleep(max(0.0, counted_from + args.duration - time.monotonic()))
        after = _counts(tallies)
        span = time.monotonic() - counted_from
        if open_page is not None and page_flips:
            stamps = await open_page.evaluate("() => window.__benchStamps")
            result["page_update"] = summary(page_latencies(stamps, flips.published))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if open_page is not None:
            await open_page.context.close()
        result |= _figures(tallies, before, after, span)
        result["update"] = summary(flips.sse_ms) | {"flips": args.flips, "lost": flips.lost}
        result["browser"] = ({"skipped": browser.skipped} if browser.skipped else
                             {"open_page": args.browser})
        if args.page_loads:
            result["page_load"] = await page_loads(browser, base, args.page_loads)
    return result


async def _state(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/console/api/state") as answer:
        answer.raise_for_status()
        state: dict[str, Any] = orjson.loads(await answer.read())
        return state


@dataclass(frozen=True, slots=True)
class Counts:
    """All consoles' tallies added up at one moment."""

    bytes: int
    events: Counter[str]
    event_bytes: Counter[str]
    changes: int


def _counts(tallies: list[Tally]) -> Counts:
    events: Counter[str] = Counter()
    event_bytes: Counter[str] = Counter()
    for tally in tallies:
        events.update(tally.events)
        event_bytes.update(tally.event_bytes)
    return Counts(sum(t.bytes for t in tallies), events, event_bytes,
                  sum(t.changes for t in tallies))


def _figures(tallies: list[Tally], before: Counts, after: Counts,
             span: float) -> dict[str, Any]:
    streaming = [t for t in tallies if t.state_s is not None and t.error is None]
    state_s = [t.state_s for t in tallies if t.state_s is not None]
    errors = Counter(t.error for t in tallies if t.error is not None)
    per_s = 1 / span if span > 0 else 0.0
    by_name = after.events - before.events
    consoles = len(tallies) or 1
    return {
        "span_s": round(span, 2),
        "streaming": len(streaming),  # consoles still reading at the end of the span
        "errors": dict(errors),
        "state_p50_s": statistics.median(state_s) if state_s else None,
        "state_max_s": max(state_s) if state_s else None,
        "state_bytes": max((t.state_bytes for t in tallies), default=0),
        "state_devices": max((t.devices for t in tallies), default=0),
        "bytes_per_s": (after.bytes - before.bytes) * per_s,
        "events_per_s": by_name.total() * per_s,
        "events_by_name": dict(by_name),
        # Per console: what one page receives and decodes each second, by event.
        "kb_per_s_per_console_by_name": {
            name: round(count * per_s / consoles / 1000, 1)
            for name, count in (after.event_bytes - before.event_bytes).items()},
        "status_changes_per_s_per_console": (after.changes - before.changes) * per_s / consoles,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.consoleclients", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8080")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--warm-up", type=float, default=10.0,
                        help="seconds before counting starts (the consoles load the state)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds counted")
    parser.add_argument("--mqtt-port", type=int, help="the broker, for the gauge's flips")
    parser.add_argument("--topic", help="the gauge's telemetry topic")
    parser.add_argument("--device", default="karet", help="the gauge's id")
    parser.add_argument("--flips", type=int, default=0)
    parser.add_argument("--flip-every", type=float, default=0.5)
    parser.add_argument("--browser", action="store_true",
                        help="keep one headless Chromium page open beside the consoles")
    parser.add_argument("--page-loads", type=int, default=0,
                        help="after the span: cold loads of the page, until __siagaReady")
    parser.add_argument("--out", type=Path, help="write the JSON here too (else stdout only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.flips and (args.mqtt_port is None or args.topic is None):
        raise SystemExit("--flips needs --mqtt-port and --topic")
    result = json.dumps(asyncio.run(run(args)))
    print(result)
    if args.out is not None:
        args.out.write_text(result + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
