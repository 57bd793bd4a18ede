"""The hostile corpus (tests/reports/hostile.py) posted over HTTP: each case gets the answer
it expects, a refusal is GeoReport's error list naming the reason, and nothing refused is
stored (no report, no photo file)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reports.settings import ReportsSettings
from tests.reports.hostile import FORM_CASES, PHOTO_CASES, FormCase, PhotoCase
from tests.siaga.apirig import World
from tests.siaga.reportrig import ReportApi, open_desk, serving

# The corpus posts well over the default 60 a minute from one key; the limit has its own test.
UNLIMITED = ReportsSettings(rate_limit_per_minute=100_000)


@pytest.fixture
async def reports(world: World, tmp_path: Path) -> AsyncIterator[ReportApi]:
    with open_desk(world, tmp_path, UNLIMITED) as desk:
        async with serving(world, desk) as api:
            yield api


async def stored(api: ReportApi) -> int:
    """Every report in the book, whatever its requested time (the officers' count)."""
    status, listed = await api.officer("GET", "/api/reports", page_size="1")
    assert status == 200
    return int(listed["total"])


def photo_files(tmp_path: Path) -> set[Path]:
    return {p for p in (tmp_path / "photos").rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", FORM_CASES, ids=lambda case: case.name)
async def test_a_hostile_form_gets_its_answer(reports: ReportApi, case: FormCase) -> None:
    before = await stored(reports)
    async with reports.session.post(
            f"{reports.open311}/requests.json", data=case.body(reports.key),
            headers={"Content-Type": "application/x-www-form-urlencoded"}) as answer:
        status, body = answer.status, await answer.json()
    if case.expected == "accepted":
        assert status == 201, body
        assert await stored(reports) == before + 1
        return
    assert status == case.expected, body
    assert body[0]["code"] == case.expected
    if not case.before_intake and case.raw is None:
        assert case.reason in body[0]["description"]
    assert await stored(reports) == before


@pytest.mark.parametrize("case", PHOTO_CASES, ids=lambda case: case.name)
async def test_a_hostile_photo_gets_its_answer(reports: ReportApi, tmp_path: Path,
                                               case: PhotoCase) -> None:
    before, files = await stored(reports), photo_files(tmp_path)
    status, body, _ = await reports.post_multipart(reports.report("sampah"), case.data,
                                                   filename=case.filename,
                                                   content_type=case.content_type)
    if case.expected == "accepted":
        assert status == 201, body
        new = photo_files(tmp_path) - files
        assert len(new) <= 1  # the same pixels as an earlier case are stored once
        for path in new:
            content = path.read_bytes()
            assert not any(secret in content for secret in case.absent)
        return
    assert status == case.expected, body
    assert body[0]["code"] == case.expected and case.reason in body[0]["description"]
    assert await stored(reports) == before
    assert photo_files(tmp_path) == files
