"""A real webhook receiver for tests: an aiohttp server on 127.0.0.1 that records requests."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict


@dataclass(frozen=True)
class Answer:
    """How the receiver answers one request."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, and the status it was answered with."""

    headers: CIMultiDict[str]
    body: bytes
    at: float  # time.monotonic() on arrival
    status: int

    @property
    def delivery(self) -> str:
        return self.headers["X-Siaga-Delivery"]

    @property
    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = orjson.loads(self.body)
        return document


class RecordingReceiver:
    """An aiohttp server on 127.0.0.1 that records requests and answers as scripted."""

    def __init__(self, port: int | None = None) -> None:
        # The port is held from here on, bound but not listening (a sender meets a refused
        # connection, as with a receiver that is down): picking a free port and binding it
        # only at start() would let another test's server take it in between.
        self._held: socket.socket | None = None
        if port is None:
            self._held = socket.socket()
            self._held.bind(("127.0.0.1", 0))
            port = int(self._held.getsockname()[1])
        self.port = port
        self.requests: list[Received] = []
        self.script: deque[Answer] = deque()  # answers for the next requests, in order
        self.default = Answer()  # the answer once the script is used up
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        if self._held is not None:
            held, self._held = self._held, None  # the site closes it on cleanup
            await web.SockSite(self._runner, held).start()
        else:  # an explicit port, or a restart after stop(): bind it again
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._held is not None:  # never started
            self._held.close()
            self._held = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        answer = self.script.popleft() if self.script else self.default
        self.requests.append(
            Received(CIMultiDict(request.headers), body, time.monotonic(), answer.status))
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)  # a receiver that answers slowly, as scripted
        return web.Response(status=answer.status, headers=dict(answer.headers), text="answer")
