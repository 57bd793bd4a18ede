"""The console's headers over real HTTP: the exact CSP (with and without tiles), nosniff,
no-referrer, no-store on its API and stream; the operator API untouched."""

from __future__ import annotations

import pytest

from siaga.console.page import content_security_policy, tile_origin
from siaga.settings import ConsoleSettings
from tests.siaga.console.test_page import fetch, serving

WITHOUT_TILES = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                 "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
                 "frame-ancestors 'none'")


async def test_without_tiles_the_page_admits_only_its_own_origin() -> None:
    async with serving() as base:
        for path in ("/", "/console/static/js/main.js", "/console/api/state"):
            _, headers, _ = await fetch(base + path)
            assert headers["Content-Security-Policy"] == WITHOUT_TILES, path
            assert headers["X-Content-Type-Options"] == "nosniff", path
            assert headers["Referrer-Policy"] == "no-referrer", path


async def test_with_tiles_images_may_come_from_the_tile_servers() -> None:
    settings = ConsoleSettings(tile_url="https://{s}.tile.example.org/{z}/{x}/{y}.png")
    async with serving(settings) as base:
        _, headers, _ = await fetch(base + "/")
    assert headers["Content-Security-Policy"] == WITHOUT_TILES.replace(
        "img-src 'self';", "img-src 'self' https://*.tile.example.org;")


@pytest.mark.parametrize(("url", "origin"), [
    ("https://tiles.example/{z}/{x}/{y}.png", "https://tiles.example"),
    ("http://10.0.0.5:8080/osm/{z}/{x}/{y}.png", "http://10.0.0.5:8080"),
    ("https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png", "https://*.tile.openstreetmap.org"),
    ("https://tiles-{s}.example.com/{z}/{x}/{y}.png", "https://*.example.com"),
    ("https://bad;script-src.example/{z}/{x}/{y}", None),
    (None, None),
])
def test_the_tile_origin_is_scheme_and_host(url: str | None, origin: str | None) -> None:
    assert tile_origin(url) == origin


def test_a_host_that_would_rewrite_the_policy_admits_no_tiles() -> None:
    assert content_security_policy("https://x.example';/{z}/{x}/{y}") == WITHOUT_TILES


async def test_the_console_api_and_stream_are_never_cached() -> None:
    async with serving() as base:
        for path in ("/console/api/state", "/console/stream"):
            _, headers, _ = await fetch(base + path)
            assert headers["Cache-Control"] == "no-store", path


async def test_a_missing_static_file_carries_the_headers_too() -> None:
    async with serving() as base:
        status, headers, _ = await fetch(base + "/console/static/nothing.js")
    assert status == 404
    assert headers["Content-Security-Policy"] == WITHOUT_TILES
    assert "max-age" not in headers.get("Cache-Control", "")


async def test_the_operator_api_is_left_alone() -> None:
    async with serving() as base:
        _, headers, _ = await fetch(base + "/api/alerts")
    assert "Content-Security-Policy" not in headers
    assert "Cache-Control" not in headers
