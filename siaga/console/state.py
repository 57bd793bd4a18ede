"""`GET /console/api/state`: everything the page draws at load, as of one event id.

The page reads the state, then opens the stream with `?last_event_id=` set to the state's
`last_id`, so the events published in between are replayed rather than lost.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from siaga.api.context import error_response
from siaga.console.context import CONSOLE

LOAD_WAIT_S: Final = 10.0  # at start the hub reads the alert and report books first
RETRY_AFTER_S: Final = "2"


def routes() -> list[web.RouteDef]:
    return [web.get("/console/api/state", state)]


async def state(request: web.Request) -> web.Response:
    hub = request.app[CONSOLE].hub
    if not await hub.wait_loaded(LOAD_WAIT_S):
        return error_response(503, "the console is still reading the alert and report books; "
                                   "try again shortly", {"Retry-After": RETRY_AFTER_S})
    return web.Response(body=hub.snapshot_bytes(), content_type="application/json",
                        headers={"Cache-Control": "no-store"})
