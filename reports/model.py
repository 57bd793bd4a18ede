"""What a report is: its states, the report itself, an officer's update, links to alerts.

Plain frozen dataclasses inside; pydantic is only at the edges (the HTTP forms and bodies in
`siaga.api`, the settings). Times are UTC nanoseconds, like readings and alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


class State(StrEnum):
    """A report's detailed state (SPEC section 6: `extended_attributes.state`)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in-progress"
    FIXED = "fixed"
    DUPLICATE = "duplicate"
    NOT_RESPONSIBLE = "not-responsible"
    NO_FURTHER_ACTION = "no-further-action"

    @property
    def closes(self) -> bool:
        """GeoReport's `status` is `closed` in these states, `open` in the others."""
        return self in CLOSING

    @property
    def status(self) -> str:
        return "closed" if self.closes else "open"


CLOSING: Final = frozenset({State.FIXED, State.DUPLICATE, State.NOT_RESPONSIBLE,
                            State.NO_FURTHER_ACTION})
# What an officer may set (POST /api/reports/{id}/updates): every state but the first.
UPDATE_STATES: Final = tuple(state for state in State if state is not State.OPEN)


@dataclass(frozen=True, slots=True)
class Contact:
    """Who reported: never shown on the public Open311 side, only to officers."""

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    device_id: str | None = None  # the app's device id (GeoReport `device_id`)
    account_id: str | None = None  # the app's account id (GeoReport `account_id`)


@dataclass(frozen=True, slots=True)
class NewReport:
    """A validated report as it arrives, before it has an id (what intake hands the book)."""

    service_code: str
    lat: float
    lon: float
    description: str
    requested_ns: int  # GeoReport `requested_datetime`: when the resident reported it
    received_ns: int  # when Siaga took it
    key_name: str  # the API key's name: which app or channel it came through
    address: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)  # `attribute[...]` fields
    contact: Contact = Contact()
    photo: str | None = None  # the stored, metadata-free photo: "<sha256>.<ext>" (reports.photos)
    media_url: str | None = None  # a photo elsewhere, as FixMyStreet sends it


@dataclass(frozen=True, slots=True)
class Report:
    """A stored report with its current state."""

    id: str  # GeoReport `service_request_id`
    service_code: str
    agency: str  # the agency responsible, from the category at intake
    lat: float
    lon: float
    description: str
    requested_ns: int
    received_ns: int
    updated_ns: int
    key_name: str
    state: State
    status_notes: str | None
    address: str | None
    attributes: dict[str, str]
    contact: Contact
    photo: str | None
    media_url: str | None
    first_response_ns: int | None  # the first officer update (any state)
    closed_ns: int | None
    duplicate_of: str | None  # the open report it probably repeats (officers confirm)
    alerts: tuple[str, ...] = ()  # fingerprints of the alerts it is linked to


@dataclass(frozen=True, slots=True)
class Update:
    """One officer's change of a report's state (FixMyStreet's service request update)."""

    id: str  # `update_id`
    report_id: str
    state: State
    note: str
    officer: str
    at_ns: int
