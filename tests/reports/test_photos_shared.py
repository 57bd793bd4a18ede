"""Photos in a report book several instances share (PostgreSQL): each instance's store keeps
a photo in the book too, and one asked for a photo it lacks takes it from there.

Two stores in two data directories stand for two instances (two machines); the book is a
real PostgreSQL database."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from reports.book import ReportBook
from reports.errors import ReportRefused, UnknownReport
from reports.photos import PhotoStore
from reports.settings import MIB, ReportsSettings
from siaga.sandbox.postgres import PostgreSQL
from siaga_core.errors import StorageError
from tests.reports import images
from tests.reports.conftest import new_report

MAX_PIXELS = 40_000_000


@pytest.fixture
def shared_book(postgres: PostgreSQL, tmp_path: Path) -> Iterator[ReportBook]:
    name = f"photos_{uuid.uuid4().hex}"
    url = postgres.create_database(name)
    with ReportBook.open(ReportsSettings(database_url=SecretStr(url)), tmp_path) as book:
        yield book
    postgres.drop_database(name)


def store_at(directory: Path, book: ReportBook) -> PhotoStore:
    return PhotoStore(directory, 10 * MIB, MAX_PIXELS, shared=book if book.shared else None)


def test_a_photo_taken_by_one_instance_is_served_by_another(
        shared_book: ReportBook, tmp_path: Path) -> None:
    taker, other = store_at(tmp_path / "a", shared_book), store_at(tmp_path / "b", shared_book)
    photo = taker.accept(images.jpeg(exif=images.camera_exif()))
    body = taker.path(photo.name).read_bytes()
    assert shared_book.photo(photo.name) == body

    assert not (tmp_path / "b").exists()  # nothing on the other machine yet
    served = other.path(photo.name)
    assert served.read_bytes() == body and served.is_relative_to(tmp_path / "b")

    shutil.rmtree(tmp_path / "a")  # the machine that took it is gone
    third = store_at(tmp_path / "c", shared_book)
    assert third.path(photo.name).read_bytes() == body


def test_the_same_photo_from_two_instances_is_kept_once(
        shared_book: ReportBook, tmp_path: Path) -> None:
    data = images.png()
    first = store_at(tmp_path / "a", shared_book).accept(data)
    second = store_at(tmp_path / "b", shared_book).accept(data)
    assert first.name == second.name
    assert shared_book.photo(first.name) == (tmp_path / "b" / first.name[:2]
                                             / first.name).read_bytes()


def test_a_photo_nobody_has_is_unknown(shared_book: ReportBook, tmp_path: Path) -> None:
    store = store_at(tmp_path / "a", shared_book)
    with pytest.raises(UnknownReport, match="no photo named"):
        store.path("ab" * 32 + ".jpg")


def test_bytes_that_do_not_match_their_name_are_not_served(
        shared_book: ReportBook, tmp_path: Path) -> None:
    real = store_at(tmp_path / "a", shared_book).accept(images.jpeg())
    # Other bytes under a name that is no hash of them: the book was changed behind us.
    forged_name = hashlib.sha256(b"the real photo").hexdigest() + ".jpg"
    shared_book.keep_photo(forged_name, images.jpeg(width=32, height=32))
    reader = store_at(tmp_path / "b", shared_book)
    with pytest.raises(UnknownReport):
        reader.path(forged_name)
    assert not (tmp_path / "b" / forged_name[:2] / forged_name).exists()
    assert reader.path(real.name).is_file()  # a genuine one is still served


def test_a_refused_photo_is_not_kept_in_the_book(shared_book: ReportBook,
                                                  tmp_path: Path) -> None:
    store = store_at(tmp_path / "a", shared_book)
    with pytest.raises(ReportRefused):
        store.accept(images.truncated(images.jpeg()))
    # Its name would be the hash of a cleaned photo never made: the table itself is asked.
    assert shared_book._backend.read("SELECT COUNT(*) FROM photos") == [(0,)]


def test_a_book_of_one_instance_keeps_photos_on_disk_alone(tmp_path: Path) -> None:
    with ReportBook.open(ReportsSettings(), tmp_path) as book:
        assert not book.shared
        store = store_at(tmp_path / "photos", book)
        assert store.shared is None
        photo = store.accept(images.jpeg())
        assert store.path(photo.name).is_file() and book.photo(photo.name) is None


def test_photos_taken_before_the_book_was_shared_are_kept_in_it(
        shared_book: ReportBook, tmp_path: Path) -> None:
    alone = PhotoStore(tmp_path / "a", 10 * MIB, MAX_PIXELS)  # one instance, before
    photo = alone.accept(images.jpeg())
    assert shared_book.photo(photo.name) is None
    taker = store_at(tmp_path / "a", shared_book)  # the same disk, its book now shared
    assert taker.share_local(stop=lambda: True) == 0  # stopping: left for the next start
    assert taker.share_local() == 1
    assert taker.share_local() == 0  # kept once
    assert store_at(tmp_path / "b", shared_book).path(photo.name).read_bytes() == (
        alone.path(photo.name).read_bytes())


def test_a_photo_that_cannot_be_copied_here_is_a_storage_error_not_a_bug(
        shared_book: ReportBook, tmp_path: Path) -> None:
    photo = store_at(tmp_path / "a", shared_book).accept(images.jpeg())
    (tmp_path / "b").write_bytes(b"")  # the photo directory is a file: nothing is written
    reader = store_at(tmp_path / "b", shared_book)
    assert reader.local(photo.name) is None
    with pytest.raises(StorageError, match="could not be copied"):
        reader.path(photo.name)


def test_the_book_says_which_photos_it_lacks_without_reading_them(
        shared_book: ReportBook, tmp_path: Path) -> None:
    kept = store_at(tmp_path / "a", shared_book).accept(images.jpeg()).name
    others = [f"{number:064x}.jpg" for number in range(1200)]  # past a query's 500 names
    names = [*others[:700], kept, *others[700:]]
    assert shared_book.missing_photos(names) == others
    assert shared_book.missing_photos([]) == []


def test_a_photo_damaged_on_this_disk_is_not_kept_and_the_others_are(
        shared_book: ReportBook, tmp_path: Path) -> None:
    alone = PhotoStore(tmp_path / "a", 10 * MIB, MAX_PIXELS)
    damaged, sound = alone.accept(images.jpeg()), alone.accept(images.png())
    alone.path(damaged.name).write_bytes(b"not the photo any more")
    assert store_at(tmp_path / "a", shared_book).share_local() == 1
    assert shared_book.missing_photos([damaged.name, sound.name]) == [damaged.name]


def test_a_photo_whose_report_failed_is_forgotten_unless_a_report_shows_it(
        shared_book: ReportBook, tmp_path: Path) -> None:
    taker = store_at(tmp_path / "a", shared_book)
    failed = taker.accept(images.jpeg())
    assert taker.discard(failed.name, shared_book.forget_photo)
    assert shared_book.photo(failed.name) is None and taker.local(failed.name) is None
    shown = taker.accept(images.png())
    shared_book.add(new_report(photo=shown.name))
    taker.release(shown.name)
    again = taker.accept(images.png())  # the same photo, for a report that failed
    assert not taker.discard(again.name, shared_book.forget_photo)
    assert shared_book.photo(shown.name) is not None and taker.local(shown.name) is not None
