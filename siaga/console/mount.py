"""Puts the console on the API's application: its routes, its headers, its shutdown."""

from __future__ import annotations

from aiohttp import web

from siaga.console import basemap, history, page, series, state, stream
from siaga.console.context import CONSOLE, ConsoleContext


def mount(console: ConsoleContext, app: web.Application) -> None:
    """Serve the console from `app` (the API's): `GET /`, `/console/...`.

    The security headers are set as each response is prepared, so an error answer of the
    console and its stream carry them too.
    """
    app[CONSOLE] = console
    app.on_response_prepare.append(page.prepare_headers)
    app.add_routes(routes())

    async def end_streams(_app: web.Application) -> None:
        # Open streams never end by themselves: close them before the runner waits for
        # handlers, or every stop would wait out the shutdown timeout.
        console.hub.close()

    app.on_shutdown.append(end_streams)


def routes() -> list[web.RouteDef]:
    """Every route of the console (`siaga/api/openapi.yaml` describes each; a test checks)."""
    return [*page.routes(), *stream.routes(), *state.routes(), *history.routes(),
            *series.routes(), *basemap.routes()]
