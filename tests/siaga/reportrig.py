"""The reports side of the API's test rig: a real report book (SQLite or PostgreSQL), a photo
store on disk and the citizens' desk, behind the API served on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from reports.book import ReportBook
from reports.settings import ReportsSettings
from siaga.api.server import serve_api
from siaga.citizens import CitizenDesk
from tests.siaga.apirig import TOKEN, World

# Places inside DKI Jakarta, and one outside it (Bogor, upstream).
MONAS = (-6.1754, 106.8272)
MANGGARAI = (-6.2093, 106.8503)
BOGOR = (-6.5971, 106.8060)


@dataclass(frozen=True)
class ReportApi:
    """A client for the reports side: Open311 forms as apps send them, officers' JSON."""

    session: aiohttp.ClientSession
    url: str
    key: str

    @property
    def open311(self) -> str:
        return f"{self.url}/open311/v2"

    async def post_form(self, fields: dict[str, str] | list[tuple[str, str]], *,
                        fmt: str = "json") -> tuple[int, Any, Any]:
        async with self.session.post(f"{self.open311}/requests.{fmt}", data=fields) as answer:
            return answer.status, await _body(answer), answer.headers

    async def post_multipart(self, fields: dict[str, str], photo: bytes | None,
                             filename: str = "foto.jpg",
                             content_type: str = "image/jpeg") -> tuple[int, Any, Any]:
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        if photo is not None:
            form.add_field("media", photo, filename=filename, content_type=content_type)
        async with self.session.post(f"{self.open311}/requests.json", data=form) as answer:
            return answer.status, await _body(answer), answer.headers

    async def get(self, path: str, token: str | None = None,
                  **params: str) -> tuple[int, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with self.session.get(self.url + path, params=params or None,
                                    headers=headers) as answer:
            return answer.status, await _body(answer)

    async def officer(self, method: str, path: str, body: object = None,
                      token: str | None = TOKEN, **params: str) -> tuple[int, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, self.url + path, json=body, headers=headers,
                                        params=params or None) as answer:
            return answer.status, await _body(answer)

    def report(self, category: str = "banjir", at: tuple[float, float] = MONAS,
               **extra: str) -> dict[str, str]:
        return {"api_key": self.key, "service_code": category, "lat": str(at[0]),
                "long": str(at[1]), "description": "Air setinggi lutut di jalan"} | extra


async def _body(answer: aiohttp.ClientResponse) -> Any:
    if answer.content_type == "application/json":
        return await answer.json()
    return await answer.read()


@contextlib.contextmanager
def open_desk(world: World, tmp_path: Path, settings: ReportsSettings | None = None,
              ) -> Iterator[CitizenDesk]:
    """A desk on a book in `tmp_path` (SQLite, unless `settings` name a PostgreSQL), at the
    world's clock, without rules."""
    settings = settings or ReportsSettings()
    with ReportBook.open(settings, tmp_path, clock_ns=world.clock) as book:
        yield CitizenDesk(book, CitizenDesk.photo_store(settings, tmp_path, book), settings,
                          clock_ns=world.clock)


@contextlib.asynccontextmanager
async def serving(world: World, desk: CitizenDesk,
                  key: str | None = None) -> AsyncIterator[ReportApi]:
    """The API with `desk`, and a client holding `key`, or a fresh key named "qlue"."""
    key = key or desk.book.add_key("qlue")
    context = replace(world.context(), desk=desk)
    async with (serve_api(context, "127.0.0.1", 0) as port,
                aiohttp.ClientSession() as session):
        yield ReportApi(session, f"http://127.0.0.1:{port}", key)
