"""`GET /console/stream`: the hub's events as Server-Sent Events, one cursor per console.

Written on a plain StreamResponse: every stream writes the same pre-serialized bytes. Past
1 MiB unsent, a stream waits for its console to read (a burst larger than a socket's buffers
is sent as fast as the console takes it); a console that has not read enough within
DRAIN_S is dropped, so a stalled one costs a handler 1 MiB and ten seconds, no more. A page
reconnecting sends the last id it saw (`Last-Event-ID`, or `?last_event_id=` when it
reopens the stream itself); the hub replays what followed, or sends `reset`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from aiohttp import web

from siaga.api.context import error_response
from siaga.console.context import CONSOLE
from siaga.console.hub import ConsoleHub

log = logging.getLogger(__name__)

HEARTBEAT_S: Final = 15.0  # the page reopens a stream quiet for longer (stream.js: a minute)
# Unsent bytes past which a stream waits for its console to read: a socket's buffers and then
# some, so a reading console rarely waits, and a stalled one holds about this much.
MAX_BUFFERED: Final = 1024 * 1024
DRAIN_S: Final = 10.0  # a stream waiting this long for its console to read drops it
# A console that goes away is noticed this soon even when no events flow, so its place under
# max_streams is free again before it reconnects.
GONE_CHECK_S: Final = 1.0
RETRY: Final = b"retry: 1000\n\n"  # EventSource's reconnection delay, in ms
# An event rather than an SSE comment: a comment never reaches the page's script, whose
# watchdog reopens a stream that has been quiet too long. No id: the page's last id stays.
HEARTBEAT: Final = b"event: hb\ndata: {}\n\n"
RETRY_AFTER_S: Final = "5"  # a console refused for the cap asks again this much later


def routes() -> list[web.RouteDef]:
    # No HEAD: aiohttp would run the handler and send the stream's body all the same.
    return [web.get("/console/stream", stream, allow_head=False)]


async def stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[CONSOLE].hub
    if not hub.join():
        message = ("the service is stopping" if hub.closed else
                   "too many consoles are open (console.max_streams); try again shortly")
        return error_response(503, message, {"Retry-After": RETRY_AFTER_S})
    try:
        return await _serve(request, hub)
    finally:
        hub.leave()


async def _serve(request: web.Request, hub: ConsoleHub) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # a reverse proxy in front must not hold events back
    })
    response.force_close()  # the connection is the stream's: never reused for a request
    await response.prepare(request)
    transport = request.transport
    if transport is None:
        return response
    # aiohttp waits for the socket to drain above the transport's high-water mark: each
    # write then waits until the console has read the buffer down, or DRAIN_S have passed.
    transport.set_write_buffer_limits(high=MAX_BUFFERED)
    last_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    cursor, reset = hub.resume(last_id)
    try:
        await response.write(RETRY + (hub.reset_event() if reset else b""))
        next_heartbeat = time.monotonic() + HEARTBEAT_S
        while not hub.closed and not transport.is_closing():
            wake = hub.wake  # taken before reading: an event published meanwhile sets it
            found = hub.events_after(cursor)
            if found is None:  # fell off the ring: the page reloads the state
                cursor = hub.seq
                events = [hub.reset_event()]
            else:
                cursor, events = found
            for event in events:
                await _send(response, event)
            if time.monotonic() >= next_heartbeat:
                await _send(response, HEARTBEAT)
                next_heartbeat = time.monotonic() + HEARTBEAT_S
            until = min(next_heartbeat, time.monotonic() + GONE_CHECK_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, until - time.monotonic())):
                    await wake.wait()
    except ConnectionResetError:  # the console went away: nothing to finish
        pass
    except Stalled:
        log.warning("console stream of %s dropped: %d bytes unsent, it read too little of "
                    "them in %g s", request.remote, transport.get_write_buffer_size(), DRAIN_S)
        transport.abort()  # not close(): that would wait to send what is queued
    return response


class Stalled(Exception):
    """The console did not read its stream down within DRAIN_S."""


async def _send(response: web.StreamResponse, data: bytes) -> None:
    """Write; above MAX_BUFFERED unsent, wait DRAIN_S at most for the console to read."""
    try:
        async with asyncio.timeout(DRAIN_S):
            await response.write(data)
    except TimeoutError as exc:
        raise Stalled from exc
