"""The console's page: `GET /`, its static files, and the headers that keep it self-contained.

The page loads nothing from outside the service (SPEC section 8) unless a tile URL is set,
and the Content-Security-Policy says so to the browser: scripts, styles, images and
connections from this origin only, plus the tile server's origin for images. No inline
script or style is needed, so none is allowed (plan section 6).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from aiohttp import hdrs, web

from siaga.console.context import CONSOLE

STATIC: Final = Path(__file__).parent / "static"
STATIC_PREFIX: Final = "/console/static"
# Vendored libraries carry their version in the path and our own files change only with a
# release, so an hour of caching spares 50 consoles reloading them, and a deploy is picked up
# within the hour (a reload of the page revalidates by ETag anyway).
STATIC_MAX_AGE_S: Final = 3600
# Set here, not guessed from the platform's mimetypes table: Windows' registry and old
# /etc/mime.types say application/x-javascript, which a module script with nosniff refuses.
CONTENT_TYPES: Final[Mapping[str, str]] = MappingProxyType({
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".gif": "image/gif",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".md": "text/plain; charset=utf-8",
})
_NO_STORE_PREFIXES: Final = ("/console/api/", "/console/stream")
# scheme://host[:port]/ of a tile URL; `{s}` (a subdomain letter) may stand in the host.
_TILE_ORIGIN: Final = re.compile(r"^(https?)://([^/\s]+)/")
_HOST: Final = re.compile(r"^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def routes() -> list[web.RouteDef]:
    """`GET /` and the static files; `?wall=1` (wall mode) is read by the page's script."""
    # Read once: the page is a file of the package, and serving it from memory spares a
    # file open per console (re)load after a restart.
    index = (STATIC / "index.html").read_bytes()
    root = STATIC.resolve()

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=index, content_type="text/html", charset="utf-8",
                            headers={hdrs.CACHE_CONTROL: "no-cache"})

    async def static(request: web.Request) -> web.FileResponse:
        # Our own small handler rather than add_static: the file must resolve inside
        # static/ (no `..`, no symlink out), and only the types the console uses are served.
        relative = request.match_info["path"]
        path = (root / relative).resolve()
        if (not path.is_relative_to(root) or not path.is_file()
                or path.suffix.lower() not in CONTENT_TYPES):
            raise web.HTTPNotFound(text=f"no console file {relative!r}")
        return web.FileResponse(path, headers={
            hdrs.CONTENT_TYPE: CONTENT_TYPES[path.suffix.lower()],
            hdrs.CACHE_CONTROL: f"public, max-age={STATIC_MAX_AGE_S}",
        })

    return [
        web.get("/", page),
        web.get(STATIC_PREFIX + "/{path:.+}", static),
    ]


def tile_origin(tile_url: str | None) -> str | None:
    """The origin CSP must admit for a tile URL: `https://{s}.tile.example/...` gives
    `https://*.tile.example`; None without tiles or when the host is not one CSP can name."""
    if tile_url is None:
        return None
    found = _TILE_ORIGIN.match(tile_url)
    if found is None:
        return None
    scheme, host = found.groups()
    if "{s}" in host:
        # CSP wildcards only a whole leftmost label: `a.tiles.example` and `b.tiles...`
        # are both `*.tiles.example`; `tiles-{s}.example` widens to `*.example`.
        host = "*." + host.partition(".")[2]
    if _HOST.fullmatch(host) is None:
        # Anything else (a quote, a semicolon) would change the policy itself: no tiles
        # rather than a policy an operator's typo rewrote.
        return None
    return f"{scheme}://{host}"


def content_security_policy(tile_url: str | None) -> str:
    origin = tile_origin(tile_url)
    images = "img-src 'self'" if origin is None else f"img-src 'self' {origin}"
    return ("default-src 'none'; script-src 'self'; style-src 'self'; "
            f"{images}; connect-src 'self'; font-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def _is_console(path: str) -> bool:
    return path == "/" or path.startswith("/console/")


def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    path = request.path
    target = response.headers
    target[hdrs.CONTENT_SECURITY_POLICY] = content_security_policy(
        request.app[CONSOLE].settings.tile_url)
    target[hdrs.X_CONTENT_TYPE_OPTIONS] = "nosniff"
    target["Referrer-Policy"] = "no-referrer"
    if path.startswith(_NO_STORE_PREFIXES):
        target[hdrs.CACHE_CONTROL] = "no-store"


async def prepare_headers(request: web.Request, response: web.StreamResponse) -> None:
    """CSP, nosniff and no-referrer on `/` and `/console/*`, no-store on the console's API
    and stream; the operator API's own paths are left alone. A signal rather than a
    middleware: it reaches every response as it is prepared, errors and the SSE stream
    (which sends its headers itself) included."""
    if _is_console(request.path):
        _add_headers(request, response)
