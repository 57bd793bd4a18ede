"""Open311 behind a load balancer: instances sharing one report book (a real PostgreSQL) each
serve every report and every photo, whichever instance took it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from reports.photos import PhotoStore
from reports.settings import ReportsSettings
from siaga.sandbox.postgres import PostgreSQL
from tests.polling import eventually
from tests.reports import images
from tests.siaga.apirig import World
from tests.siaga.reportrig import MANGGARAI, open_desk, serving
from tests.siaga.test_open311 import jpeg_with_gps


@pytest.fixture
def shared(postgres: PostgreSQL) -> Iterator[ReportsSettings]:
    name = f"open311_{uuid.uuid4().hex}"
    url = postgres.create_database(name)
    yield ReportsSettings(database_url=SecretStr(url))
    postgres.drop_database(name)


async def test_a_photo_sent_to_one_instance_is_served_by_another(
        world: World, tmp_path: Path, shared: ReportsSettings) -> None:
    with (open_desk(world, tmp_path / "a", shared) as taker,
          open_desk(world, tmp_path / "b", shared) as other):
        key = taker.book.add_key("qlue")  # one book: the app's key works on either instance
        async with (serving(world, taker, key) as api_a,
                    serving(world, other, key) as api_b):
            status, body, _ = await api_a.post_multipart(
                api_a.report("banjir", MANGGARAI), jpeg_with_gps())
            assert status == 201, body
            report_id = body[0]["service_request_id"]

            status, listed = await api_b.get(f"/open311/v2/requests/{report_id}.json")
            assert status == 200
            path = listed[0]["media_url"].removeprefix(api_b.url)
            assert path.startswith("/open311/v2/media/")
            async with api_a.session.get(api_a.url + path) as answer:
                assert answer.status == 200
                taken = await answer.read()
            async with api_b.session.get(api_b.url + path) as answer:
                assert answer.status == 200 and answer.content_type == "image/jpeg"
                assert answer.headers["Cache-Control"].endswith("immutable")
                served = await answer.read()
            assert served == taken and b"SERIAL-12345" not in served

            status, _ = await api_b.get("/open311/v2/media/" + "0" * 64 + ".jpg")
            assert status == 404


async def test_an_instance_keeps_its_earlier_photos_in_the_shared_book_as_it_starts(
        world: World, tmp_path: Path, shared: ReportsSettings) -> None:
    # Taken while this instance had a book of its own (before an upgrade to a cluster).
    alone = PhotoStore(tmp_path / "a" / "photos", shared.photo_max_bytes,
                       shared.photo_max_pixels)
    name = alone.accept(images.jpeg()).name
    with open_desk(world, tmp_path / "a", shared) as desk:
        assert desk.book.photo(name) is None
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(desk.run(stop))
            await eventually(lambda: desk.book.photo(name) is not None,
                             what="the earlier photo kept in the shared book")
            stop.set()
    with open_desk(world, tmp_path / "b", shared) as other:
        assert other.photos.path(name).read_bytes() == alone.path(name).read_bytes()


async def test_a_keys_rate_limit_holds_across_instances(
        world: World, tmp_path: Path, shared: ReportsSettings) -> None:
    with (open_desk(world, tmp_path / "a", shared) as first,
          open_desk(world, tmp_path / "b", shared) as second):
        key = first.book.add_key("qlue", rate_limit_per_minute=3)
        async with (serving(world, first, key) as api_a,
                    serving(world, second, key) as api_b):
            answers = [await api.post_form(api.report("sampah"))
                       for api in (api_a, api_b, api_a, api_b)]
            assert [status for status, _, _ in answers] == [201, 201, 201, 429]
            _, body, headers = answers[-1]
            assert "at most 3 a minute" in body[0]["description"]
            assert headers["Retry-After"] == "20"  # a token every 20 s
            status, _, _ = await api_a.post_form(api_a.report("sampah"))
            assert status == 429
            world.clock.now_ns += 20 * 10**9  # one token back, for whichever instance
            status, _, _ = await api_b.post_form(api_b.report("sampah"))
            assert status == 201
            _, listed = await api_a.get("/open311/v2/requests.json")
            assert len(listed) == 4  # nothing refused was stored
