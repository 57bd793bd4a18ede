"""API keys in the report book, on both backends: stored hashed, revoked at once, shared."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from reports.book import ReportBook
from reports.errors import KeyRefused, ReportRefused, UnknownReport
from tests.reports.conftest import MINUTE, T0, BookPlace, Clock


def stored_bytes(place: BookPlace) -> bytes:
    """Everything the database holds about keys, as bytes: the SQLite files (WAL too), or
    the PostgreSQL table dumped as text."""
    if place.settings.database_url is None:
        return b"".join(path.read_bytes() for path in place.data_dir.glob("reports.sqlite*"))
    with psycopg.connect(place.settings.database_url.get_secret_value()) as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
    return repr(rows).encode()


def test_a_new_key_names_its_owner(book: ReportBook) -> None:
    key = book.add_key("qlue")
    assert len(key) >= 43
    assert book.key_name(key) == "qlue"


def test_a_key_is_stored_only_as_its_digest(book: ReportBook, book_place: BookPlace) -> None:
    key = book.add_key("qlue")
    stored = stored_bytes(book_place)
    assert key.encode() not in stored
    assert key[4:20].encode() not in stored  # nor any long piece of it
    assert hashlib.sha256(key.encode()).hexdigest().encode() in stored


def test_keys_are_listed_with_a_hint_and_never_whole(book: ReportBook, clock: Clock) -> None:
    first = book.add_key("qlue")
    clock.now += MINUTE
    second = book.add_key("crop.officers")
    listed = book.list_keys()
    assert [(k.name, k.created_ns, k.revoked_ns, k.hint) for k in listed] == [
        ("qlue", T0, None, first[:4]), ("crop.officers", T0 + MINUTE, None, second[:4])]


def test_a_revoked_key_is_refused_at_once(book: ReportBook, clock: Clock) -> None:
    key = book.add_key("qlue")
    clock.now += MINUTE
    revoked = book.revoke_key("qlue")
    assert (revoked.name, revoked.revoked_ns, revoked.active) == ("qlue", T0 + MINUTE, False)
    with pytest.raises(KeyRefused, match="api_key is not valid: ask the city for a key"):
        book.key_name(key)
    assert [k.revoked_ns for k in book.list_keys()] == [T0 + MINUTE]


def test_a_revoked_name_may_have_a_new_key(book: ReportBook) -> None:
    old = book.add_key("qlue")
    book.revoke_key("qlue")
    new = book.add_key("qlue")
    assert book.key_name(new) == "qlue"
    with pytest.raises(KeyRefused):
        book.key_name(old)


def test_revoking_an_unknown_or_revoked_key_is_refused(book: ReportBook) -> None:
    with pytest.raises(UnknownReport, match="no API key named 'nobody'"):
        book.revoke_key("nobody")
    book.add_key("qlue")
    book.revoke_key("qlue")
    with pytest.raises(UnknownReport, match="no API key named 'qlue'"):
        book.revoke_key("qlue")


def test_a_second_active_key_of_one_name_is_refused(book: ReportBook) -> None:
    key = book.add_key("qlue")
    with pytest.raises(ReportRefused, match="an API key named 'qlue' exists"):
        book.add_key("qlue")
    assert [k.name for k in book.list_keys()] == ["qlue"]
    assert book.key_name(key) == "qlue"


@pytest.mark.parametrize("name", ["", "a" * 65, "with space", "ümlaut", "semi;colon", "a/b"])
def test_a_key_name_outside_the_pattern_is_refused(book: ReportBook, name: str) -> None:
    with pytest.raises(ReportRefused, match="must be 1 to 64 characters"):
        book.add_key(name)
    assert book.list_keys() == []


@pytest.mark.parametrize("plain", ["", "nonsense", "' OR 1=1 --"])
def test_an_unknown_key_is_refused(book: ReportBook, plain: str) -> None:
    book.add_key("qlue")
    with pytest.raises(KeyRefused):
        book.key_name(plain)


def test_a_key_added_by_one_book_is_valid_at_once_in_another(book_place: BookPlace) -> None:
    with book_place.open() as service, book_place.open() as command_line:
        key = command_line.add_key("qlue")
        assert service.key_name(key) == "qlue"
        command_line.revoke_key("qlue")
        with pytest.raises(KeyRefused):
            service.key_name(key)
