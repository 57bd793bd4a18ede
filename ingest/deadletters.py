"""Dead letters: messages Siaga could not store, kept in SQLite for operators to see."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from siaga_core.sqlitestore import SqliteStore

PAYLOAD_SHOWN_CHARS = 80  # one terminal line's worth: enough to recognise a payload
_CODE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_NS_PER_S = 1_000_000_000
_NS_PER_MS = 1_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_code ON dead_letters (code, received_at);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at);
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message (or one reading of it) that was not stored, and why.

    `reason` is for people; `code` (e.g. `bad-json`, `unknown-device`,
    `rejected-by-influxdb`) is for counting.
    """

    topic: str
    payload: bytes
    reason: str
    received_ns: int
    code: str

    def __post_init__(self) -> None:
        if not _CODE.match(self.code):
            raise ValueError(f"dead letter code must be lowercase-with-dashes, got {self.code!r}")
        if not self.reason:
            raise ValueError("a dead letter needs a reason")
        if self.received_ns < 0:
            raise ValueError(f"received_ns must be >= 0, got {self.received_ns}")


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as read back from the store, with its row id."""

    id: int
    topic: str
    payload: bytes
    reason: str
    received_ns: int
    code: str


class DeadLetterStore(SqliteStore):
    """An SQLite table of dead letters.

    A `SqliteStore` by inheritance: the store is its file, and what it adds is only its
    schema and queries (open, transactions, errors and close are the shell's). A message is
    acknowledged to the broker once its dead letters are committed, and the broker then
    forgets it: hence the shell's synchronous=FULL. Blocking: call it through
    `asyncio.to_thread`.
    """

    # 1: the schema as first written; IF NOT EXISTS, so a file from before versions (0)
    # just gains version 1.
    MIGRATIONS = (_SCHEMA,)

    def add_many(self, letters: Sequence[DeadLetter]) -> None:
        """Store all `letters` in one transaction: all of them are durable, or none."""
        if not letters:
            return
        rows = [(x.received_ns, x.topic, x.payload, x.code, x.reason) for x in letters]
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO dead_letters (received_at, topic, payload, code, reason)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def recent(self, limit: int = 50, code: str | None = None) -> list[StoredDeadLetter]:
        """The newest dead letters first, optionally only those with `code`."""
        query = "SELECT id, topic, payload, reason, received_at, code FROM dead_letters"
        params: tuple[object, ...] = ()
        if code is not None:
            query += " WHERE code = ?"
            params = (code,)
        query += " ORDER BY received_at DESC, id DESC LIMIT ?"
        return [StoredDeadLetter(*row) for row in self.read(query, (*params, limit))]

    def counts(self) -> dict[str, int]:
        """How many dead letters there are of each code."""
        rows = self.read("SELECT code, COUNT(*) FROM dead_letters GROUP BY code ORDER BY code")
        return {code: count for code, count in rows}


def format_table(letters: Iterable[DeadLetter | StoredDeadLetter]) -> str:
    """Dead letters as an aligned text table, one line each, for the command line."""
    header = ("TIME", "CODE", "TOPIC", "REASON", "PAYLOAD")
    rows = [header] + [
        (
            format_time(x.received_ns),
            x.code,
            _one_line(x.topic),
            _one_line(x.reason),
            format_payload(x.payload),
        )
        for x in letters
    ]
    # The payload column goes last and unpadded: it is the widest and the least regular.
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def format_time(received_ns: int) -> str:
    """RFC 3339 in UTC, to the millisecond."""
    seconds, rest = divmod(received_ns, _NS_PER_S)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // _NS_PER_MS:03d}Z"


def format_payload(payload: bytes) -> str:
    """The payload as text when it is UTF-8, else as hex, cut to one short line."""
    try:
        shown = _one_line(payload.decode("utf-8"))
    except UnicodeDecodeError:
        shown = "hex:" + payload.hex()
    if len(shown) > PAYLOAD_SHOWN_CHARS:
        shown = shown[: PAYLOAD_SHOWN_CHARS - 3] + "..."
    return shown


def _one_line(text: str) -> str:
    # Escape control characters so one letter stays one row and cannot drive the terminal.
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )
