"""The report book on SQLite and PostgreSQL: reports, queries, duplicates, updates, links,
overdue reports, and durability through a SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from reports.book import ReportBook, ReportQuery
from reports.errors import ReportRefused, TooManyReports, UnknownReport
from reports.model import Contact, State
from reports.settings import ReportsSettings
from siaga.sandbox.ports import free_port
from siaga.sandbox.postgres import PostgreSQL
from siaga_core.errors import ConfigurationError, StorageError
from siaga_core.geo import Box
from tests.polling import wait_until
from tests.reports.conftest import (
    HOUR,
    MANGGARAI,
    MINUTE,
    T0,
    BookPlace,
    Clock,
    new_report,
    north_of,
)

# --- reports ----------------------------------------------------------------------------------


def test_a_report_is_stored_with_its_categorys_agency_and_read_back(book: ReportBook) -> None:
    contact = Contact(email="warga@example.id", first_name="Siti", phone="+62811000")
    sent = new_report("sampah", address="Jl. Saharjo", attributes={"volume": "besar"},
                      contact=contact, photo="ab" * 32 + ".jpg", received_ns=T0 + 5)
    added = book.add(sent)
    assert added.agency == "Dinas Lingkungan Hidup"
    assert (added.state, added.updated_ns, added.duplicate_of) == (State.OPEN, T0 + 5, None)
    assert book.get(added.id) == added
    stored = book.get(added.id)
    assert (stored.contact, stored.attributes, stored.address) == (
        contact, {"volume": "besar"}, "Jl. Saharjo")


def test_ids_are_increasing_integers(book: ReportBook) -> None:
    ids = [book.add(new_report(place=north_of(MANGGARAI, 1000 * i))).id for i in range(3)]
    numbers = [int(i) for i in ids]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3


@pytest.mark.parametrize("report_id", ["42", "x", "-1", "1e3", "\u0661"])  # Arabic-Indic one
def test_an_unknown_report_is_refused_by_its_id(book: ReportBook, report_id: str) -> None:
    with pytest.raises(UnknownReport, match=f"no report {report_id}"):
        book.get(report_id)


def test_reports_are_found_by_every_filter(book: ReportBook) -> None:
    far = (-6.1, 106.7)
    flood = book.add(new_report("banjir", T0))
    jam = book.add(new_report("macet", T0 + HOUR, place=far))
    tree = book.add(new_report("pohon", T0 + 2 * HOUR, place=north_of(far, 500)))
    book.add_update(tree.id, State.FIXED, "Sudah dipotong", "budi", T0 + 3 * HOUR)

    def found(**query: object) -> set[str]:
        return {report.id for report in book.find(ReportQuery(**query))}  # type: ignore[arg-type]

    assert found() == {flood.id, jam.id, tree.id}
    assert found(ids=(flood.id, tree.id, "nonsense")) == {flood.id, tree.id}
    assert found(ids=("nonsense",)) == set()
    assert found(service_codes=("macet", "pohon")) == {jam.id, tree.id}
    assert found(status="closed") == {tree.id}
    assert found(status="open") == {flood.id, jam.id}
    assert found(states=(State.OPEN,)) == {flood.id, jam.id}
    assert found(agency="Dinas Perhubungan") == {jam.id}
    assert found(box=Box(-6.12, 106.68, -6.08, 106.72)) == {jam.id, tree.id}
    assert found(requested_from_ns=T0 + HOUR) == {jam.id, tree.id}
    assert found(requested_to_ns=T0 + HOUR) == {flood.id, jam.id}
    assert found(updated_since_ns=T0 + 3 * HOUR) == {tree.id}


def test_pages_run_newest_first_and_the_count_ignores_the_page(book: ReportBook) -> None:
    ids = [book.add(new_report(at=T0 + i * MINUTE, place=north_of(MANGGARAI, 300 * i))).id
           for i in range(5)]
    page = book.find(ReportQuery(limit=2, offset=1))
    assert [report.id for report in page] == [ids[3], ids[2]]
    oldest = book.find(ReportQuery(limit=2, newest_first=False))
    assert [report.id for report in oldest] == ids[:2]
    assert book.count(ReportQuery(limit=2, offset=1)) == 5
    assert book.count(ReportQuery(requested_from_ns=T0 + 3 * MINUTE)) == 2


def test_a_query_refuses_an_unknown_status() -> None:
    with pytest.raises(ReportRefused, match="status must be open or closed"):
        ReportQuery(status="pending")


def test_a_reopened_book_holds_its_reports(book_place: BookPlace) -> None:
    with book_place.open() as book:
        added = book.add(new_report())
    with book_place.open() as book:
        assert book.get(added.id) == added


def test_two_books_on_one_database_share_the_id_sequence(book_place: BookPlace) -> None:
    with book_place.open() as first, book_place.open() as second:
        a = first.add(new_report(place=MANGGARAI))
        b = second.add(new_report(place=north_of(MANGGARAI, 5000)))
        assert a.id != b.id
        assert first.get(b.id) == b


def test_the_book_says_where_it_is_without_a_password(book_place: BookPlace) -> None:
    with book_place.open() as book:
        where = book.describe()
    if book_place.settings.database_url is None:
        assert where == f"SQLite {book_place.data_dir / 'reports.sqlite'}"
    else:
        assert where.startswith("PostgreSQL 127.0.0.1:") and "/book_" in where


# --- duplicates -------------------------------------------------------------------------------


def test_a_report_near_an_open_one_of_its_category_is_its_probable_duplicate(
        book: ReportBook) -> None:
    first = book.add(new_report("banjir", T0))
    again = book.add(new_report("banjir", T0 + 23 * HOUR, place=north_of(MANGGARAI, 90)))
    assert again.duplicate_of == first.id
    assert book.get(again.id).duplicate_of == first.id


def test_the_nearest_open_report_is_the_original(book: ReportBook) -> None:
    book.add(new_report("banjir", T0, place=north_of(MANGGARAI, 80)))
    nearest = book.add(new_report("banjir", T0, place=north_of(MANGGARAI, -30)))
    assert book.add(new_report("banjir", T0 + HOUR)).duplicate_of == nearest.id


@pytest.mark.parametrize(("code", "metres", "later"), [
    ("macet", 0, 0),  # another category
    ("banjir", 150, 0),  # too far
    ("banjir", 0, 25 * HOUR),  # too late
])
def test_a_report_apart_from_others_is_no_duplicate(book: ReportBook, code: str, metres: float,
                                                   later: int) -> None:
    book.add(new_report("banjir", T0))
    again = book.add(new_report(code, T0 + later, place=north_of(MANGGARAI, metres)))
    assert again.duplicate_of is None


def test_a_closed_report_has_no_duplicates(book: ReportBook) -> None:
    first = book.add(new_report("banjir", T0))
    book.add_update(first.id, State.FIXED, "Air surut", "budi", T0 + MINUTE)
    assert book.add(new_report("banjir", T0 + HOUR)).duplicate_of is None


# --- officers' updates ------------------------------------------------------------------------


def test_updates_move_a_report_through_its_states(book: ReportBook) -> None:
    report = book.add(new_report("pohon", T0))
    book.add_update(report.id, State.ACKNOWLEDGED, "Diterima", "budi", T0 + HOUR)
    book.add_update(report.id, State.IN_PROGRESS, "", "budi", T0 + 2 * HOUR)
    working = book.get(report.id)
    assert (working.state, working.status_notes, working.first_response_ns, working.closed_ns,
            working.updated_ns) == (State.IN_PROGRESS, "Diterima", T0 + HOUR, None,
                                    T0 + 2 * HOUR)
    book.add_update(report.id, State.FIXED, "Pohon sudah dipotong", "sari", T0 + 3 * HOUR)
    fixed = book.get(report.id)
    assert (fixed.state, fixed.state.status, fixed.status_notes, fixed.closed_ns) == (
        State.FIXED, "closed", "Pohon sudah dipotong", T0 + 3 * HOUR)
    assert book.count(ReportQuery(status="closed")) == 1


def test_a_report_closed_twice_keeps_its_first_closing_time(book: ReportBook) -> None:
    report = book.add(new_report())
    book.add_update(report.id, State.FIXED, "Surut", "budi", T0 + HOUR)
    book.add_update(report.id, State.DUPLICATE, "Sama dengan laporan lain", "sari", T0 + 2 * HOUR)
    closed = book.get(report.id)
    assert (closed.state, closed.closed_ns) == (State.DUPLICATE, T0 + HOUR)


@pytest.mark.parametrize("state", [State.NOT_RESPONSIBLE, State.NO_FURTHER_ACTION])
def test_every_closing_state_closes(book: ReportBook, state: State) -> None:
    report = book.add(new_report())
    book.add_update(report.id, state, "Bukan wewenang kami", "budi", T0 + HOUR)
    assert book.count(ReportQuery(status="closed", ids=(report.id,))) == 1


def test_a_reopened_report_is_open_again(book: ReportBook) -> None:
    report = book.add(new_report())
    book.add_update(report.id, State.FIXED, "Surut", "budi", T0 + HOUR)
    book.add_update(report.id, State.IN_PROGRESS, "Banjir lagi", "budi", T0 + 2 * HOUR)
    reopened = book.get(report.id)
    assert (reopened.state.status, reopened.closed_ns, reopened.first_response_ns) == (
        "open", None, T0 + HOUR)


def test_an_update_to_open_or_before_the_report_is_refused(book: ReportBook) -> None:
    report = book.add(new_report())
    with pytest.raises(ReportRefused, match="state must be one of acknowledged"):
        book.add_update(report.id, State.OPEN, "", "budi", T0 + HOUR)
    with pytest.raises(ReportRefused, match="cannot be earlier"):
        book.add_update(report.id, State.ACKNOWLEDGED, "", "budi", T0 - 1)
    with pytest.raises(UnknownReport, match="no report 999"):
        book.add_update("999", State.ACKNOWLEDGED, "", "budi", T0)
    assert book.updates() == []
    assert book.get(report.id).first_response_ns is None


def test_a_backdated_update_joins_the_history_without_undoing_a_later_one(
        book: ReportBook) -> None:
    report = book.add(new_report("pohon"))
    book.add_update(report.id, State.FIXED, "Pohon sudah dipotong", "budi", T0 + 2 * HOUR)
    # Sent late by an officer's device that was offline: it happened before the fix.
    book.add_update(report.id, State.IN_PROGRESS, "Menuju lokasi", "sari", T0 + HOUR)
    fixed = book.get(report.id)
    assert (fixed.state, fixed.state.status, fixed.status_notes, fixed.closed_ns,
            fixed.updated_ns, fixed.first_response_ns) == (
        State.FIXED, "closed", "Pohon sudah dipotong", T0 + 2 * HOUR, T0 + 2 * HOUR, T0 + HOUR)
    assert [u.state for u in book.updates(report.id)] == [State.IN_PROGRESS, State.FIXED]


def test_of_two_updates_made_at_one_time_the_one_recorded_last_applies(
        book: ReportBook) -> None:
    report = book.add(new_report("pohon"))
    book.add_update(report.id, State.FIXED, "Selesai", "budi", T0 + HOUR)
    book.add_update(report.id, State.IN_PROGRESS, "Belum selesai", "sari", T0 + HOUR)
    reopened = book.get(report.id)
    assert (reopened.state, reopened.status_notes, reopened.closed_ns) == (
        State.IN_PROGRESS, "Belum selesai", None)


def test_an_update_right_after_a_report_stamped_a_little_ahead_is_taken(
        book: ReportBook) -> None:
    # The resident's phone runs 200 s fast (intake takes up to 300 s ahead): an officer
    # answering at once is not earlier than the report.
    report = book.add(new_report(requested_ns=T0 + 200 * 10**9))
    book.add_update(report.id, State.ACKNOWLEDGED, "Diterima", "budi", T0 + 10**9)
    assert book.get(report.id).first_response_ns == T0 + 10**9
    with pytest.raises(ReportRefused, match="cannot be earlier"):
        book.add_update(report.id, State.ACKNOWLEDGED, "", "budi", T0 - 1)


def test_updates_are_listed_oldest_first_by_report_and_time(book: ReportBook) -> None:
    a = book.add(new_report("banjir"))
    b = book.add(new_report("macet"))
    late = book.add_update(a.id, State.FIXED, "Surut", "budi", T0 + 3 * HOUR)
    early = book.add_update(b.id, State.ACKNOWLEDGED, "OTW", "sari", T0 + HOUR)
    middle = book.add_update(a.id, State.ACKNOWLEDGED, "Dicek", "budi", T0 + 2 * HOUR)
    assert book.updates() == [early, middle, late]
    assert book.updates(a.id) == [middle, late]
    assert book.updates(since_ns=T0 + 2 * HOUR) == [middle, late]
    assert book.updates(until_ns=T0 + 2 * HOUR, limit=1) == [early]
    assert int(late.id) < int(early.id) < int(middle.id)
    with pytest.raises(UnknownReport):
        book.updates("12345")


# --- links to alerts --------------------------------------------------------------------------


def test_a_link_to_an_alert_is_made_once_and_read_both_ways(book: ReportBook,
                                                            clock: Clock) -> None:
    a = book.add(new_report())
    b = book.add(new_report(place=north_of(MANGGARAI, 3000)))
    assert book.link(a.id, "FloodLevel/manggarai") is True
    assert book.link(a.id, "FloodLevel/manggarai") is False
    assert book.link(b.id, "FloodLevel/manggarai") is True
    clock.now += MINUTE
    assert book.link(a.id, "CitizenFloodReports/x") is True
    # In the order they were linked.
    assert book.get(a.id).alerts == ("FloodLevel/manggarai", "CitizenFloodReports/x")
    assert book.find(ReportQuery(ids=(b.id,)))[0].alerts == ("FloodLevel/manggarai",)
    assert book.linked_reports("FloodLevel/manggarai") == [a.id, b.id]
    assert book.linked_reports("nothing") == []
    with pytest.raises(UnknownReport):
        book.link("777", "FloodLevel/manggarai")


# --- overdue reports --------------------------------------------------------------------------


def test_an_open_report_unanswered_past_its_response_time_is_overdue(book: ReportBook) -> None:
    flood = book.add(new_report("banjir", T0))  # due within 1 h
    answered = book.add(new_report("banjir", T0, place=north_of(MANGGARAI, 5000)))
    book.add_update(answered.id, State.ACKNOWLEDGED, "", "budi", T0 + MINUTE)
    rubbish = book.add(new_report("sampah", T0))  # due within 24 h
    assert book.overdue(T0 + HOUR) == []
    assert [r.id for r in book.overdue(T0 + HOUR + 1)] == [flood.id]
    assert {r.id for r in book.overdue(T0 + 25 * HOUR)} == {flood.id, rubbish.id}


# --- durability -------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]  # the writer imports tests.reports.conftest
WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pydantic import SecretStr
    from reports.book import ReportBook
    from reports.settings import ReportsSettings
    from tests.reports.conftest import new_report, north_of, MANGGARAI, T0
    url = sys.argv[2] or None
    settings = ReportsSettings(database_url=None if url is None else SecretStr(url))
    with ReportBook.open(settings, Path(sys.argv[1])) as book:
        for i in range(100_000):
            report = book.add(new_report(at=T0 + i, place=north_of(MANGGARAI, i % 1000)))
            print(report.id, flush=True)
""")


def test_a_report_acknowledged_before_a_sigkill_is_kept(book_place: BookPlace,
                                                        tmp_path_factory: pytest.TempPathFactory
                                                        ) -> None:
    out = tmp_path_factory.mktemp("writer") / "ids"
    url = book_place.settings.database_url
    with out.open("w") as ids:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(book_place.data_dir),
             "" if url is None else url.get_secret_value()],
            stdout=ids, cwd=REPO)
        try:
            wait_until(lambda: len(out.read_text().splitlines()) >= 200,
                       what="the writer acknowledging 200 reports")
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
    acknowledged = [line for line in out.read_text().splitlines() if line.strip()]
    with book_place.open() as book:
        kept = {report.id for report in book.find(ReportQuery(limit=1_000_000))}
    assert set(acknowledged) <= kept



# --- PostgreSQL's connection ------------------------------------------------------------------


def test_a_book_whose_connection_was_cut_reconnects(postgres: PostgreSQL) -> None:
    name = f"cut_{uuid.uuid4().hex}"
    url = postgres.create_database(name)
    try:
        with ReportBook.open(ReportsSettings(database_url=SecretStr(url)), Path(".")) as book:
            first = book.add(new_report())
            with psycopg.connect(postgres.url, autocommit=True) as admin:
                cut = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                    " WHERE datname = %s", (name,)).fetchall()
            assert cut == [(True,)]
            second = book.add(new_report(place=north_of(MANGGARAI, 5000)))  # a write, then
            assert [r.id for r in book.find(ReportQuery())] == [second.id, first.id]  # a read
    finally:
        postgres.drop_database(name)


def test_an_unreachable_postgresql_is_a_storage_error_without_the_password() -> None:
    url = f"postgresql://siaga:s3cret@127.0.0.1:{free_port()}/reports"
    with pytest.raises(StorageError, match=r"PostgreSQL 127\.0\.0\.1:\d+/reports") as caught:
        ReportBook.open(ReportsSettings(database_url=SecretStr(url)), Path("."))
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("url", ["mysql://localhost/reports", "postgresql://[::1"])
def test_a_database_url_that_is_not_postgresql_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"reports\.database_url"):
        ReportBook.open(ReportsSettings(database_url=SecretStr(url)), Path("."))


def test_a_keys_token_bucket_in_the_book_refills_as_the_limiter_does(book: ReportBook) -> None:
    second = 10**9
    book.take_report_token("qlue", 2, T0)
    book.take_report_token("qlue", 2, T0)
    book.take_report_token("other", 2, T0)  # a bucket per key
    with pytest.raises(TooManyReports) as caught:
        book.take_report_token("qlue", 2, T0 + 10 * second)
    assert caught.value.retry_after_s == 20  # a token every 30 s, 10 s of it gone
    book.take_report_token("qlue", 2, T0 + 30 * second)
    with pytest.raises(TooManyReports):
        book.take_report_token("qlue", 2, T0 + 31 * second)


def test_a_keys_bucket_in_the_book_holds_at_most_its_capacity(book: ReportBook) -> None:
    hour = 3600 * 10**9
    book.take_report_token("qlue", 2, T0)
    book.take_report_token("qlue", 2, T0 + hour)  # an hour refills two, not 120
    book.take_report_token("qlue", 2, T0 + hour)
    with pytest.raises(TooManyReports):
        book.take_report_token("qlue", 2, T0 + hour)


def test_a_clock_stepping_back_refills_nothing_and_counts_from_then(book: ReportBook) -> None:
    second, hour = 10**9, 3600 * 10**9
    book.take_report_token("qlue", 2, T0 + hour)  # one token left
    book.take_report_token("qlue", 2, T0)  # an hour back: the one left, nothing refilled
    with pytest.raises(TooManyReports) as caught:
        book.take_report_token("qlue", 2, T0)
    assert caught.value.retry_after_s == 30
    book.take_report_token("app", 2, T0 + hour)
    book.take_report_token("app", 2, T0 + hour)  # empty, an hour ahead
    with pytest.raises(TooManyReports) as caught:
        book.take_report_token("app", 2, T0)
    assert caught.value.retry_after_s == 30
    # The refusal counts from the stepped-back clock, as RateLimiter does: Retry-After
    # holds, not an hour's lock-out.
    book.take_report_token("app", 2, T0 + 30 * second)


def test_a_refusal_in_the_book_stands_whatever_pythons_rounding_says(book: ReportBook) -> None:
    # A bucket whose refill the SQL finds a hair under one token and Python's arithmetic
    # exactly one (found by the review's fuzzing): refused, and no token is taken.
    tokens = 1.000000082740371e-10
    book._backend.run(lambda tx: tx.execute(  # a bucket in that state, written directly
        "INSERT INTO rate_buckets (key_name, tokens, at_ns) VALUES (?, ?, ?)",
        ("qlue", tokens, T0)))
    for _ in range(2):
        with pytest.raises(TooManyReports) as caught:
            book.take_report_token("qlue", 11, T0 + 5_454_545_454)
        assert caught.value.retry_after_s == 1
