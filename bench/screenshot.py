"""The README's picture of the console: `siaga demo` replaying 1 January 2020, photographed
in Chromium when Manggarai's gauge is at its worst.

    .venv/bin/python -m bench.screenshot [--out docs/console.png] [--level siaga-1]

Runs the demo in a temporary folder on a free port (its own Mosquitto, InfluxDB, service
and simulators), waits until the FloodLevel alert of Manggarai reaches `--level` (the
replay takes about two and a half minutes to get there), gives the page a few seconds to
draw, saves the PNG, and stops the demo with Ctrl-C as a person would.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
from playwright.sync_api import sync_playwright

from siaga.sandbox.ports import free_port

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
LEVELS = ("siaga-3", "siaga-2", "siaga-1")
WAIT_S = 600.0  # a ceiling: the replay reaches Siaga 1 at Manggarai in about 3 minutes
SETTLE_MS = 4000  # after the level is reached: the stream's next ticks and the chart


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/console.png"))
    parser.add_argument("--level", choices=LEVELS, default="siaga-1")
    parser.add_argument("--wall", action="store_true", help="the wall mode (?wall=1)")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium")
    if chromium is None:
        print("no chromium: apt-get install chromium", file=sys.stderr)
        return 1
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="siaga-shot-") as folder:
        log = Path(folder) / "demo.log"
        with log.open("wb") as out:
            demo = subprocess.Popen(
                [sys.executable, "-m", "siaga", "demo", "--dir", folder, "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            base = f"http://127.0.0.1:{port}"
            token = _token(log, demo)
            reached = _wait_for_level(base, args.level, demo)
            print(f"Manggarai at {reached}: photographing {base}/")
            _photograph(chromium, base, token, args.out, wall=args.wall)
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(60)
            except subprocess.TimeoutExpired:
                demo.kill()
    print(f"wrote {args.out}")
    return 0


def _token(log: Path, demo: subprocess.Popen[bytes]) -> str:
    pattern = re.compile(r"^\s+Token\s+(\S+)", re.MULTILINE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if demo.poll() is not None:
            raise SystemExit(f"the demo stopped:\n{log.read_text(errors='replace')}")
        time.sleep(0.5)
    raise SystemExit("the demo printed no token within 2 minutes")


def _wait_for_level(base: str, level: str, demo: subprocess.Popen[bytes]) -> str:
    wanted = LEVELS.index(level)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            raise SystemExit("the demo stopped before the flood")
        url = f"{base}/api/alerts?match=alertname=FloodLevel&match=device_id=manggarai"
        with urllib.request.urlopen(url, timeout=10) as answer:
            alerts = orjson.loads(answer.read())["alerts"]
        for alert in alerts:
            shown = alert["labels"].get("level")
            if alert["status"] == "firing" and shown in LEVELS and LEVELS.index(shown) >= wanted:
                return str(shown)
        time.sleep(1.0)
    raise SystemExit(f"Manggarai did not reach {level} within {WAIT_S:g} s")


def _photograph(chromium: str, base: str, token: str, out: Path, *, wall: bool) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000},
                                timezone_id="Asia/Jakarta", locale="id-ID")
        page.goto(f"{base}/{'?wall=1' if wall else ''}")
        page.wait_for_function("() => window.__siagaReady === true", timeout=60_000)
        if not wall:  # an operator at work: signed in, Manggarai's panel open
            page.click('[data-action="login"]')
            page.fill('#token-dialog input[name="token"]', token)
            page.fill('#token-dialog input[name="operator"]', "Petugas Piket")
            page.click('[data-action="token-save"]')
            page.locator('[data-device-id="manggarai"]').first.click()
        page.wait_for_timeout(SETTLE_MS)  # a picture, not a test: let the chart draw
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
