"""The report book: residents' reports, officers' updates, links to alerts, API keys, statistics.

One class over one schema (reports.schema) on either backend (reports.backends): SQLite in
the data directory by default, PostgreSQL when `reports.database_url` is set, so several
instances share one book. Every write is committed, and so durable, before the method
returns: a report is acknowledged to the resident only once it is. Blocking: the service
calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Self

from reports import keys
from reports.backends import open_backend
from reports.categories import Category
from reports.errors import KeyRefused, ReportRefused, TooManyReports, UnknownReport
from reports.keys import ApiKey
from reports.model import UPDATE_STATES, Contact, NewReport, Report, State, Update
from reports.ratelimit import refilled, too_many
from reports.settings import ReportsSettings
from reports.stats import Stats, compute, year_range_ns
from siaga_core.geo import Box, distance_m
from siaga_core.sqlbackend import Backend, Row, Tx

__all__ = ["ApiKey", "ReportBook", "ReportQuery", "Stats"]

_ID = re.compile(r"[0-9]{1,18}")  # ids are positive BIGINTs; anything else names no report
REPORT_COLUMNS: Final = (
    "id, service_code, agency, lat, lon, description, address, attributes, contact, photo,"
    " media_url, key_name, requested_ns, received_ns, updated_ns, state, status_notes,"
    " first_response_ns, closed_ns, duplicate_of")
UPDATE_COLUMNS: Final = "id, report_id, state, note, officer, at_ns"
STATUSES: Final = ("open", "closed")
INVALID_KEY: Final = "api_key is not valid: ask the city for a key"
_KEY_COLUMNS: Final = "name, created_ns, revoked_ns, hint, rate_limit_per_minute"
PHOTOS_PER_QUERY: Final = 500  # names in one `IN (...)`: well under SQLite's 32,766 variables


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """Which reports, in which page: every filter given must hold (none: all reports)."""

    ids: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()
    status: str | None = None  # "open" | "closed" (GeoReport status)
    states: tuple[State, ...] = ()
    agency: str | None = None
    box: Box | None = None
    requested_from_ns: int | None = None  # inclusive, like the bounds below
    requested_to_ns: int | None = None
    updated_since_ns: int | None = None
    offset: int = 0
    limit: int = 50
    newest_first: bool = True  # by requested time, then id

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ReportRefused(f"status must be open or closed, not {self.status!r}")
        if self.offset < 0 or self.limit < 0:
            raise ReportRefused("offset and limit must not be negative")

    def where(self) -> tuple[str, list[object]]:
        """The SQL condition (`TRUE` for none) and its parameters."""
        clauses: list[str] = []
        params: list[object] = []

        def among(column: str, values: Sequence[object]) -> None:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)

        if self.ids:
            numbers = [int(i) for i in self.ids if _ID.fullmatch(i)]
            if numbers:
                among("id", numbers)
            else:
                clauses.append("1 = 0")  # no id could name a report: none matches
        if self.service_codes:
            among("service_code", self.service_codes)
        if self.states:
            among("state", [state.value for state in self.states])
        for column, value in (("status", self.status), ("agency", self.agency)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.box is not None:
            clauses.append("lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?")
            params += [self.box.south, self.box.north, self.box.west, self.box.east]
        for clause, bound in (("requested_ns >= ?", self.requested_from_ns),
                              ("requested_ns <= ?", self.requested_to_ns),
                              ("updated_ns >= ?", self.updated_since_ns)):
            if bound is not None:
                clauses.append(clause)
                params.append(bound)
        return " AND ".join(clauses) or "1 = 1", params


class ReportBook:
    """Reports and everything about them, on SQLite or PostgreSQL (see the module)."""

    def __init__(self, backend: Backend, settings: ReportsSettings,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._backend = backend
        self._settings = settings
        self._clock_ns = clock_ns
        self._categories = MappingProxyType(
            {category.code: category for category in settings.resolved_categories()})

    @classmethod
    def open(cls, settings: ReportsSettings, data_dir: Path,
             clock_ns: Callable[[], int] = time.time_ns) -> ReportBook:
        url = settings.database_url
        return cls(open_backend(None if url is None else url.get_secret_value(), data_dir),
                   settings, clock_ns)

    def describe(self) -> str:
        """Where the book is, for logs: "SQLite /path" or "PostgreSQL host:port/db"."""
        return self._backend.describe()

    @property
    def categories(self) -> Mapping[str, Category]:
        return self._categories

    # --- reports ------------------------------------------------------------------------

    def add(self, new: NewReport) -> Report:
        """Store a new report, marked as a probable duplicate of the nearest open one."""
        category = self._categories.get(new.service_code)
        if category is None:
            raise UnknownReport(f"no category {new.service_code!r}")

        def work(tx: Tx) -> tuple[int, str | None]:
            # Two reports of one place arriving together must see each other: the search
            # and the insert are one unit, taken in turn per category.
            tx.serialize(f"category:{new.service_code}")
            duplicate_of = self._nearest_open(tx, new)
            rows = tx.execute(
                "INSERT INTO reports (service_code, agency, lat, lon, description, address,"
                " attributes, contact, photo, media_url, key_name, requested_ns, received_ns,"
                " updated_ns, state, status, duplicate_of)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (new.service_code, category.agency, new.lat, new.lon, new.description,
                 new.address, json.dumps(new.attributes, sort_keys=True),
                 json.dumps(_contact_json(new.contact), sort_keys=True), new.photo,
                 new.media_url, new.key_name, new.requested_ns, new.received_ns,
                 new.received_ns, State.OPEN.value, State.OPEN.status,
                 None if duplicate_of is None else int(duplicate_of)))
            return int(rows[0][0]), duplicate_of

        report_id, duplicate_of = self._backend.run(work)
        return Report(
            str(report_id), new.service_code, category.agency, new.lat, new.lon,
            new.description, new.requested_ns, new.received_ns, new.received_ns, new.key_name,
            State.OPEN, None, new.address, dict(new.attributes), new.contact, new.photo,
            new.media_url, None, None, duplicate_of)

    def _nearest_open(self, tx: Tx, new: NewReport) -> str | None:
        radius = self._settings.duplicate_radius_m
        window_ns = int(self._settings.duplicate_window.total_seconds() * 10**9)
        around = Box.around(new.lat, new.lon, radius)
        candidates = tx.execute(
            "SELECT id, lat, lon FROM reports WHERE service_code = ? AND status = ?"
            " AND requested_ns BETWEEN ? AND ? AND lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?",
            (new.service_code, State.OPEN.status, new.requested_ns - window_ns,
             new.requested_ns + window_ns, around.south, around.north, around.west,
             around.east))
        near = [(distance_m(new.lat, new.lon, lat, lon), int(rid)) for rid, lat, lon in candidates]
        near = [(distance, rid) for distance, rid in near if distance <= radius]
        return str(min(near)[1]) if near else None

    def get(self, report_id: str) -> Report:
        found = self.find(ReportQuery(ids=(report_id,), limit=1))
        if not found:
            raise UnknownReport(f"no report {report_id}")
        return found[0]

    def find(self, query: ReportQuery) -> list[Report]:
        where, params = query.where()
        order = "DESC" if query.newest_first else "ASC"
        rows = self._backend.read(
            f"SELECT {REPORT_COLUMNS} FROM reports WHERE {where}"
            f" ORDER BY requested_ns {order}, id {order} LIMIT ? OFFSET ?",
            [*params, query.limit, query.offset])
        return self._reports(rows)

    def count(self, query: ReportQuery) -> int:
        """How many reports match, whatever the page."""
        where, params = query.where()
        return int(self._backend.read(f"SELECT COUNT(*) FROM reports WHERE {where}",
                                      params)[0][0])

    def added_after(self, service_code: str, after_id: int, limit: int = 1000) -> list[Report]:
        """The reports of a category stored after report `after_id`, in the order stored.

        For a reader following the book (several instances sharing it): `add` stores a
        category's reports one at a time, each committed before the next one takes its id,
        so within a category the ids are the order of commits, and a reader that has seen
        id n has seen every lower id of the category. No report is skipped by reading on
        from the last id seen. (PostgreSQL: this needs the ids' sequence to hand them out
        one at a time, its default CACHE 1. The primary key's index serves `id > ?`: the
        new rows are few.)
        """
        rows = self._backend.read(
            f"SELECT {REPORT_COLUMNS} FROM reports WHERE service_code = ? AND id > ?"
            " ORDER BY id LIMIT ?", (service_code, after_id, limit))
        return self._reports(rows)

    def last_id(self, service_code: str) -> int:
        """The id of the category's latest report, 0 when it has none: where to follow from."""
        rows = self._backend.read("SELECT MAX(id) FROM reports WHERE service_code = ?",
                                  (service_code,))
        return int(rows[0][0] or 0)

    def _reports(self, rows: list[Row]) -> list[Report]:
        """Reports from their rows, each with the alerts linked to it (one more query)."""
        if not rows:
            return []
        ids = [row[0] for row in rows]
        alerts: dict[int, list[str]] = {}
        for report_id, fingerprint in self._backend.read(
                f"SELECT report_id, fingerprint FROM alert_links WHERE report_id IN"
                f" ({', '.join('?' * len(ids))}) ORDER BY linked_ns, fingerprint", ids):
            alerts.setdefault(int(report_id), []).append(fingerprint)
        return [_report(row, tuple(alerts.get(int(row[0]), ()))) for row in rows]

    def overdue(self, now_ns: int) -> list[Report]:
        """Open reports no officer has answered within their category's response time."""
        due_ns = {code: int(category.response_time.total_seconds() * 10**9)
                  for code, category in self._categories.items()}
        rows = self._backend.read(
            f"SELECT {REPORT_COLUMNS} FROM reports WHERE state = ? AND received_ns < ?"
            " ORDER BY received_ns, id", (State.OPEN.value, now_ns - min(due_ns.values())))
        late = [row for row in rows  # row[1]: service_code, row[13]: received_ns
                if row[13] + due_ns.get(row[1], 0) < now_ns]
        return self._reports(late)

    # --- officers' updates --------------------------------------------------------------

    def add_update(self, report_id: str, state: State, note: str, officer: str,
                   at_ns: int) -> Update:
        """Record an officer's change of state and apply it to the report, unless one made
        later is recorded already: then it only joins the history (and may be the first
        response). Of two made at the same time, the one recorded last applies."""
        if state not in UPDATE_STATES:
            raise ReportRefused("state must be one of "
                                + ", ".join(s.value for s in UPDATE_STATES))
        number = _number(report_id)

        def work(tx: Tx) -> int:
            # Read, then write what follows from it: two officers updating one report at once
            # (two instances on PostgreSQL) take turns, or the first response could be lost.
            tx.serialize(f"report:{number}")
            rows = tx.execute(
                "SELECT requested_ns, received_ns, updated_ns, status, status_notes,"
                " first_response_ns, closed_ns FROM reports WHERE id = ?", (number,))
            if not rows:
                raise UnknownReport(f"no report {report_id}")
            requested_ns, received_ns, updated_ns, status, notes, first_ns, closed_ns = rows[0]
            # A resident's clock may run up to intake's future bound ahead of ours: an
            # update made at once, stamped by our clock, is not earlier than such a report.
            if at_ns < min(requested_ns, received_ns):
                raise ReportRefused(f"an update of report {report_id} cannot be earlier"
                                    " than the report")
            latest_ns = tx.execute("SELECT MAX(at_ns) FROM updates WHERE report_id = ?",
                                   (number,))[0][0]
            first_ns = at_ns if first_ns is None else min(first_ns, at_ns)
            if latest_ns is None or at_ns >= latest_ns:
                _apply(tx, number, state, note or notes, max(updated_ns, at_ns), first_ns,
                       _closed_ns(state, status, closed_ns, at_ns))
            else:
                # Backdated (an officer's device that was offline): it happened before what
                # the report already shows, so it must not undo a later change (reopen a
                # fixed report); it only counts as a response.
                tx.execute("UPDATE reports SET first_response_ns = ? WHERE id = ?",
                           (first_ns, number))
            inserted = tx.execute(
                "INSERT INTO updates (report_id, state, note, officer, at_ns)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id", (number, state.value, note, officer,
                                                         at_ns))
            return int(inserted[0][0])

        update_id = self._backend.run(work)
        return Update(str(update_id), str(number), state, note, officer, at_ns)

    def updates(self, report_id: str | None = None, since_ns: int | None = None,
                until_ns: int | None = None, limit: int = 1000,
                offset: int = 0) -> list[Update]:
        """Officers' updates, oldest first; `since_ns` and `until_ns` are inclusive; `offset`
        and `limit` page through them."""
        clauses, params = ["1 = 1"], list[object]()
        if report_id is not None:
            number = _number(report_id)
            if not self._backend.read("SELECT 1 FROM reports WHERE id = ?", (number,)):
                raise UnknownReport(f"no report {report_id}")
            clauses.append("report_id = ?")
            params.append(number)
        for clause, bound in (("at_ns >= ?", since_ns), ("at_ns <= ?", until_ns)):
            if bound is not None:
                clauses.append(clause)
                params.append(bound)
        rows = self._backend.read(
            f"SELECT {UPDATE_COLUMNS} FROM updates WHERE {' AND '.join(clauses)}"
            " ORDER BY at_ns, id LIMIT ? OFFSET ?", [*params, limit, offset])
        return [Update(str(uid), str(rid), State(state), note, officer, at)
                for uid, rid, state, note, officer, at in rows]

    # --- links to alerts ----------------------------------------------------------------

    def link(self, report_id: str, fingerprint: str) -> bool:
        """Link a report to an alert; True if the link is new."""
        if not fingerprint:
            raise ReportRefused("an alert's fingerprint must not be empty")
        number = _number(report_id)

        def work(tx: Tx) -> bool:
            if not tx.execute("SELECT 1 FROM reports WHERE id = ?", (number,)):
                raise UnknownReport(f"no report {report_id}")
            return bool(tx.execute(
                "INSERT INTO alert_links (report_id, fingerprint, linked_ns) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING report_id",
                (number, fingerprint, self._clock_ns())))

        return self._backend.run(work)

    def link_many(self, links: Sequence[tuple[str, str]]) -> int:
        """Link each (report id, fingerprint) in one transaction, skipping reports that are
        gone; how many links are new."""
        pairs = [(_number(report_id), fingerprint) for report_id, fingerprint in links
                 if fingerprint]
        now = self._clock_ns()

        def work(tx: Tx) -> int:
            new = 0
            for number, fingerprint in pairs:
                new += len(tx.execute(
                    "INSERT INTO alert_links (report_id, fingerprint, linked_ns)"
                    " SELECT id, ?, ? FROM reports WHERE id = ?"
                    " ON CONFLICT DO NOTHING RETURNING report_id",
                    (fingerprint, now, number)))
            return new

        return self._backend.run(work) if pairs else 0

    def linked_reports(self, fingerprint: str) -> list[str]:
        rows = self._backend.read(
            "SELECT report_id FROM alert_links WHERE fingerprint = ? ORDER BY report_id",
            (fingerprint,))
        return [str(row[0]) for row in rows]

    # --- photos, in a book several instances share ------------------------------------

    @property
    def shared(self) -> bool:
        """Whether several instances may share this book (PostgreSQL): then it keeps the
        photos too (`reports.photos.SharedPhotos`), so any instance serves any photo."""
        return self._backend.dialect == "postgresql"

    def keep_photo(self, name: str, body: bytes) -> None:
        """Store a cleaned photo under its name (its content's hash); one already kept
        under that name holds these very bytes, and stays."""
        now = self._clock_ns()
        self._backend.run(lambda tx: tx.execute(
            "INSERT INTO photos (name, body, stored_ns) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING", (name, body, now)))

    def photo(self, name: str) -> bytes | None:
        """The photo kept under `name`, or None."""
        rows = self._backend.read("SELECT body FROM photos WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None

    def forget_photo(self, name: str) -> bool:
        """Forget the photo `name` unless a report shows it (its own could not be stored):
        True when none does, so the photo may go from the disk too. On SQLite, which keeps
        no photos, this only answers."""
        def work(tx: Tx) -> bool:
            # No index on `photo`: a scan, on the rare path of a report that failed.
            if tx.execute("SELECT 1 FROM reports WHERE photo = ? LIMIT 1", (name,)):
                return False
            # Another instance storing a report of these very bytes right now would lose
            # them from the book; it still has its file, and keeps it in the book again at
            # its next start (`PhotoStore.share_local`).
            tx.execute("DELETE FROM photos WHERE name = ?", (name,))
            return True

        return self._backend.run(work)

    def missing_photos(self, names: Sequence[str]) -> list[str]:
        """Those of `names` not kept, in their order; asked by the name only, a few hundred
        a query (an instance's photos at start: thousands)."""
        kept: set[str] = set()
        for start in range(0, len(names), PHOTOS_PER_QUERY):
            chosen = names[start:start + PHOTOS_PER_QUERY]
            kept.update(row[0] for row in self._backend.read(
                f"SELECT name FROM photos WHERE name IN ({', '.join('?' * len(chosen))})",
                chosen))
        return [name for name in names if name not in kept]

    # --- statistics ---------------------------------------------------------------------

    def stats(self, year: int) -> Stats:
        """The CRM's figures for `year` (reports requested in it, Jakarta time)."""
        start_ns, end_ns = year_range_ns(year)
        rows = self._backend.read(
            "SELECT service_code, agency, requested_ns, first_response_ns, closed_ns, state"
            " FROM reports WHERE requested_ns >= ? AND requested_ns < ?", (start_ns, end_ns))
        return compute(year, rows, self._categories)

    # --- API keys -----------------------------------------------------------------------

    def add_key(self, name: str, rate_limit_per_minute: int | None = None) -> str:
        """A new key named `name`, returned once: only its digest is kept. Its own rate
        limit, if given, replaces the configured default for this key."""
        keys.check_name(name)
        if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
            raise ReportRefused(f"a key's rate limit must be at least 1 report a minute, "
                                f"not {rate_limit_per_minute}")
        plain = keys.new_key()

        def work(tx: Tx) -> None:
            tx.serialize("api_keys")
            if tx.execute("SELECT 1 FROM api_keys WHERE name = ? AND revoked_ns IS NULL",
                          (name,)):
                raise ReportRefused(f"an API key named {name!r} exists; revoke it first")
            tx.execute("INSERT INTO api_keys (name, digest, hint, created_ns,"
                       " rate_limit_per_minute) VALUES (?, ?, ?, ?, ?)",
                       (name, keys.digest(plain), keys.hint(plain), self._clock_ns(),
                        rate_limit_per_minute))

        self._backend.run(work)
        return plain

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        rows = self._backend.read(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_ns, id")
        return [_api_key(row) for row in rows]

    def revoke_key(self, name: str) -> ApiKey:
        """Revoke the active key named `name`: refused from the next request on."""
        def work(tx: Tx) -> Row:
            rows = tx.execute(
                "UPDATE api_keys SET revoked_ns = ? WHERE name = ? AND revoked_ns IS NULL"
                f" RETURNING {_KEY_COLUMNS}", (self._clock_ns(), name))
            if not rows:
                raise UnknownReport(f"no API key named {name!r}")
            return rows[0]

        return _api_key(self._backend.run(work))

    def key(self, plain: str) -> ApiKey:
        """The active key `plain`, or KeyRefused."""
        rows = [] if not plain else self._backend.read(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE digest = ? AND revoked_ns IS NULL",
            (keys.digest(plain),))
        if not rows:
            raise KeyRefused(INVALID_KEY)
        return _api_key(rows[0])

    def key_name(self, plain: str) -> str:
        """The name of the active key `plain`, or KeyRefused."""
        return self.key(plain).name

    def take_report_token(self, key_name: str, capacity: float, now_ns: int) -> None:
        """One report from `key_name` against its bucket in the book (`capacity` a minute),
        or `TooManyReports`: `reports.ratelimit.RateLimiter`'s rule, for instances sharing
        the book, on wall-clock times (the instances' NTP keeps them together).

        One statement takes the token (`_TAKE_TOKEN`: the bucket refilled and less one,
        when it holds one), so a key's row is locked for that statement and its commit
        only: every report of a busy app takes its turn there. Soft state: on PostgreSQL
        the commit does not wait for the disk (a crash may give a key back a few tokens).
        """
        per_ns = capacity / 60 / 1e9  # tokens a nanosecond

        def work(tx: Tx) -> TooManyReports | None:
            if tx.dialect == "postgresql":
                tx.execute("SET LOCAL synchronous_commit TO OFF")
            if tx.execute(_TAKE_TOKEN, (key_name, capacity - 1, now_ns, per_ns, capacity,
                                        capacity, per_ns, per_ns, capacity, capacity, per_ns)):
                return None
            # Refused, whatever Python's rounding of the same refill would say (the SQL's
            # answer stands). Retry-After from the bucket as it is now.
            tokens, at_ns = tx.execute(
                "SELECT tokens, at_ns FROM rate_buckets WHERE key_name = ?", (key_name,))[0]
            if now_ns < at_ns:  # the clock stepped back: count from now, as RateLimiter does
                tx.execute("UPDATE rate_buckets SET at_ns = ? WHERE key_name = ?",
                           (now_ns, key_name))
            return too_many(key_name, refilled(tokens, (now_ns - at_ns) / 1e9, capacity),
                            capacity)

        refusal = self._backend.run(work)  # committed first: a step back is remembered
        if refusal is not None:
            raise refusal

    # --- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# The token bucket of `reports.ratelimit.refilled`, in SQL both databases speak: the
# stored tokens, plus `per_ns` for each nanosecond since (none when the clock stepped
# back), at most the capacity. Parameters: per_ns, capacity, capacity, per_ns.
_REFILLED: Final = (
    "CASE WHEN rate_buckets.tokens + (CASE WHEN excluded.at_ns > rate_buckets.at_ns"
    " THEN excluded.at_ns - rate_buckets.at_ns ELSE 0 END) * ? > ? THEN ?"
    " ELSE rate_buckets.tokens + (CASE WHEN excluded.at_ns > rate_buckets.at_ns"
    " THEN excluded.at_ns - rate_buckets.at_ns ELSE 0 END) * ? END")
# A new key's bucket starts full, less this report's token; a known key's is refilled and
# takes one only when it holds one (otherwise no row comes back: refused, unchanged).
# Parameters: key, capacity - 1, now, then _REFILLED's twice.
_TAKE_TOKEN: Final = (
    "INSERT INTO rate_buckets (key_name, tokens, at_ns) VALUES (?, ?, ?)"
    f" ON CONFLICT (key_name) DO UPDATE SET tokens = ({_REFILLED}) - 1,"
    f" at_ns = excluded.at_ns WHERE ({_REFILLED}) >= 1 RETURNING tokens")


def _number(report_id: str) -> int:
    if not _ID.fullmatch(report_id):
        raise UnknownReport(f"no report {report_id}")
    return int(report_id)


def _closed_ns(state: State, status: str, closed_ns: int | None, at_ns: int) -> int | None:
    # Closed once, a later closing state (fixed, then confirmed duplicate) does not move the
    # time it was closed; reopening clears it.
    if not state.closes:
        return None
    return at_ns if status != "closed" else closed_ns


def _apply(tx: Tx, number: int, state: State, notes: str | None, updated_ns: int,
           first_ns: int, closed_ns: int | None) -> None:
    """Make `state` the report's current one."""
    tx.execute(
        "UPDATE reports SET state = ?, status = ?, status_notes = ?, updated_ns = ?,"
        " first_response_ns = ?, closed_ns = ? WHERE id = ?",
        (state.value, state.status, notes, updated_ns, first_ns, closed_ns, number))


def _contact_json(contact: Contact) -> dict[str, str]:
    return {key: value for key, value in asdict(contact).items() if value is not None}


def _report(row: Row, alerts: tuple[str, ...]) -> Report:
    (rid, code, agency, lat, lon, description, address, attributes, contact, photo,
     media_url, key_name, requested, received, updated, state, notes, first, closed,
     duplicate_of) = row
    contact_fields: dict[str, Any] = json.loads(contact)
    return Report(
        str(rid), code, agency, float(lat), float(lon), description, int(requested),
        int(received), int(updated), key_name, State(state), notes, address,
        json.loads(attributes), Contact(**contact_fields), photo, media_url, first, closed,
        None if duplicate_of is None else str(duplicate_of), alerts)


def _api_key(row: Row) -> ApiKey:
    name, created, revoked, hint, limit = row
    return ApiKey(str(name), int(created), None if revoked is None else int(revoked), str(hint),
                  None if limit is None else int(limit))
