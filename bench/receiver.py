"""A real webhook receiver: aiohttp on 127.0.0.1, in a thread of the harness, noting arrivals."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from siaga.sandbox.ports import free_port

START_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Hit:
    at: float  # time.monotonic() when the request arrived
    body: dict[str, Any]

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.body.get("alerts", [])
        return alerts


class Receiver:
    """POST /hook answers 200 at once and queues (arrival time, JSON body)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: queue.Queue[Hit] = queue.Queue()
        self.total = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="webhook-receiver", daemon=True)
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        at = time.monotonic()  # before reading the body: the request has arrived
        body = orjson.loads(await request.read())
        self.total += 1
        self.hits.put(Hit(at, body))
        return web.Response(status=200)

    def _serve(self) -> None:
        self._loop.run_until_complete(self._run())
        self._loop.close()

    async def _run(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> Receiver:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise RuntimeError("the webhook receiver did not start")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)

    def drain(self) -> None:
        """Forget what arrived so far."""
        while True:
            try:
                self.hits.get_nowait()
            except queue.Empty:
                return
