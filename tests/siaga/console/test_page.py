"""The console's page over real loopback HTTP: `GET /`, its static files and their types."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from siaga.console import page
from siaga.console.context import CONSOLE
from siaga.settings import ConsoleSettings

VENDOR = page.STATIC / "vendor"


@dataclass(frozen=True, slots=True)
class PageOnly:
    """Stands in for ConsoleContext: the page and its middleware read only `settings`, and a
    real hub needs the whole pipeline (alerting, registry, desk), which these tests are not
    about. The full context is exercised by the browser tests."""

    settings: ConsoleSettings


async def _plain(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path})


@contextlib.asynccontextmanager
async def serving(settings: ConsoleSettings | None = None) -> AsyncIterator[str]:
    """The page's routes and middleware, plus stand-ins for the console API, the stream and
    the operator API, on 127.0.0.1; yields the base URL."""
    app = web.Application()
    app.on_response_prepare.append(page.prepare_headers)
    app[CONSOLE] = PageOnly(settings or ConsoleSettings())  # type: ignore[misc]
    app.add_routes([*page.routes(), web.get("/console/api/state", _plain),
                    web.get("/console/stream", _plain), web.get("/api/alerts", _plain)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.read()


async def test_the_root_serves_the_index_page() -> None:
    async with serving() as base:
        status, headers, body = await fetch(base + "/?wall=1")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert body == (page.STATIC / "index.html").read_bytes()


async def test_static_files_have_their_types_and_an_hour_of_caching() -> None:
    expected = {
        "/console/static/js/main.js": "text/javascript",
        "/console/static/css/console.css": "text/css",
        "/console/static/i18n/id.json": "application/json",
        "/console/static/empty.gif": "image/gif",
        "/console/static/vendor/leaflet-1.9.4/leaflet.js": "text/javascript",
        "/console/static/vendor/uplot-1.6.32/uPlot.esm.js": "text/javascript",
        "/console/static/vendor/leaflet-1.9.4/images/layers.png": "image/png",
    }
    async with serving() as base:
        for path, content_type in expected.items():
            status, headers, body = await fetch(base + path)
            assert status == 200, path
            assert headers["Content-Type"].split(";")[0] == content_type, path
            assert headers["Cache-Control"] == "public, max-age=3600", path
            assert body == (page.STATIC / path.removeprefix("/console/static/")).read_bytes()


async def test_a_missing_file_is_404_and_no_folder_is_listed() -> None:
    async with serving() as base:
        missing, _, _ = await fetch(base + "/console/static/js/nothing.js")
        folder, _, _ = await fetch(base + "/console/static/js/")
        escape, _, _ = await fetch(base + "/console/static/%2E%2E/page.py")
        python, _, _ = await fetch(base + "/console/static/../page.py")
    assert (missing, folder, escape, python) == (404, 404, 404, 404)


def test_the_index_references_the_vendored_versions_of_the_manifest() -> None:
    libraries = json.loads((VENDOR / "MANIFEST.json").read_text(encoding="utf-8"))["libraries"]
    index = (page.STATIC / "index.html").read_text(encoding="utf-8")
    main = (page.STATIC / "js" / "main.js").read_text(encoding="utf-8")
    versions = {library["name"]: library["dir"] for library in libraries}
    referenced = set(re.findall(r"vendor/([a-z]+-\d+\.\d+\.\d+)/", index))
    referenced |= {Path(p).parts[0] for p in re.findall(r"vendor/([^'\"]+)", _all_js())}
    assert referenced == set(versions.values())
    assert f"vendor/{versions['leaflet']}/leaflet.js" in index
    assert f"vendor/{versions['leaflet']}/leaflet.css" in index
    assert f"vendor/{versions['uplot']}/uPlot.min.css" in index
    assert 'type="module" src="/console/static/js/main.js"' in index
    assert main  # the module the page loads exists


def _all_js() -> str:
    return "\n".join(p.read_text(encoding="utf-8")
                     for p in sorted((page.STATIC / "js").glob("*.js")))


def test_the_empty_image_is_a_one_pixel_gif() -> None:
    data = (page.STATIC / "empty.gif").read_bytes()
    assert data[:6] in {b"GIF87a", b"GIF89a"}
    assert int.from_bytes(data[6:8], "little") == 1
    assert int.from_bytes(data[8:10], "little") == 1
