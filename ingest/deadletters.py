"""Dead letters: messages Siaga could not store, kept in SQLite for operators to see."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final

import orjson

from siaga_core.sqlitestore import SqliteStore

PAYLOAD_SHOWN_CHARS = 80  # one terminal line's worth: enough to recognise a payload
REDACTED: Final = "[redacted]"
WITHHELD: Final = "payload withheld: not JSON, so a plate in it could not be redacted"
WITHHELD_KEY: Final = "payload withheld: a key in it looks like a plate"
# What a reason quotes of the payload: `(got 'B 1234 XYZ')`, `'...'`, `"..."`. A reason of a
# message that may hold plates says what was wrong, never what was sent.
_WORDS = re.compile(r"[A-Za-z0-9]+")
_QUOTED = re.compile(r"\(got [^)]*\)|'[^']*'|\"[^\"]*\"")
# A string that could be a plate written anywhere, not only under `plate`: 2 to 16
# letters and digits, with both (spaces, dots and dashes aside). Short ids such as `cam01`
# match too: a dead letter loses a little detail, never a plate.
_PLATE_LIKE = re.compile(r"(?=[^A-Za-z]*[A-Za-z])(?=[^0-9]*[0-9])[A-Za-z0-9]{2,16}")
_PLATE_LIKE_MAX = 40  # longer strings are sentences or ids, not plates written oddly
_SEPARATORS = str.maketrans("", "", " .-_\t")
# Keys whose values are personal data besides plates: Frigate's `sub_label` holds a known
# plate's owner or a recognised face's name.
_PERSONAL_KEYS: Final = frozenset({"sub_label"})
# Keys whose string values stay when they look like a plate: the event's own identity,
# which Siaga stores anyway for a valid event, and which a reason about it refers to. Not
# with a space in it: no valid id has one, and a plate is often written with them. A label,
# type, zone or time that looks like a plate is no valid one either: it is redacted.
_KEPT_KEYS: Final = frozenset({"event_id", "id", "camera"})
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


def redact_plates(letter: DeadLetter) -> DeadLetter:
    """`letter` with every plate in its payload replaced by "[redacted]", at any depth, and
    a reason that quotes nothing of the payload (`(got ...)` and quoted text withheld).

    A plate is personal data (SPEC section 7) and a dead letter is kept and shown. What is
    replaced: every value under a key naming a plate (`plate`, `license_plate`, any case)
    or under Frigate's `sub_label`, and every other string that looks like a plate
    (`_PLATE_LIKE`) except the event's identity (`_KEPT_KEYS`). A payload that is not
    JSON, or has a key that looks like a plate, is withheld whole and the reason says so.
    Iterative: a payload may nest 1024 levels.
    """
    letter = replace(letter, reason=_QUOTED.sub(_unquoted, letter.reason))
    try:
        document = orjson.loads(letter.payload)
    except orjson.JSONDecodeError:
        return _withheld(letter, WITHHELD)
    root: list[object] = [document]
    stack: list[dict[str, object] | list[object]] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if "plate" in key.lower() or key in _PERSONAL_KEYS:
                    node[key] = REDACTED
                elif _looks_like_plate(key):
                    return _withheld(letter, WITHHELD_KEY)
                elif isinstance(value, dict | list):
                    stack.append(value)
                elif isinstance(value, str) and _looks_like_plate(value) and (
                        key not in _KEPT_KEYS or " " in value):
                    node[key] = REDACTED
        else:
            for index, value in enumerate(node):
                if isinstance(value, dict | list):
                    stack.append(value)
                elif isinstance(value, str) and _looks_like_plate(value):
                    node[index] = REDACTED
    payload = json_bytes(root[0])
    return letter if payload == letter.payload else replace(letter, payload=payload)


def _looks_like_plate(text: str) -> bool:
    if len(text) > _PLATE_LIKE_MAX:
        return False
    return _PLATE_LIKE.fullmatch(text.translate(_SEPARATORS)) is not None


def _withheld(letter: DeadLetter, why: str) -> DeadLetter:
    return replace(letter, payload=b"", reason=f"{letter.reason}; {why}")


def _unquoted(found: re.Match[str]) -> str:
    """A quoted part of a reason, or `'…'` when anything in it could be a plate."""
    text = found.group(0)
    if not any(_looks_like_plate(word) for word in _WORDS.findall(text)) and not \
            _looks_like_plate(text.strip("()'\"").removeprefix("got ").strip("'\"")):
        return text
    return "(value withheld)" if text.startswith("(") else "'…'"


def looks_like_plate(text: str) -> bool:
    """Whether `text` could be a plate however written (for names counted in the open)."""
    return _looks_like_plate(text)


def json_bytes(value: object) -> bytes:
    """Compact JSON of what orjson.loads returned, for a dead letter.

    orjson reads 1024 levels of nesting but writes only 254 (it raises past that), so a
    value it read may be one it cannot write back: those go through `_deep_json`.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _deep_json(value)


def _deep_json(value: object) -> bytes:
    """Compact JSON of what orjson.loads returned, however deep, with an explicit stack."""
    parts: list[bytes] = []
    # Pending values, last first; a bytes entry is literal output (loads never returns bytes).
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, bytes):
            parts.append(node)
        elif isinstance(node, list):
            stack.append(b"]")
            for index in range(len(node) - 1, -1, -1):
                stack.append(node[index])
                if index:
                    stack.append(b",")
            parts.append(b"[")
        elif isinstance(node, dict):
            stack.append(b"}")
            entries = list(node.items())
            for index in range(len(entries) - 1, -1, -1):
                key, child = entries[index]
                stack.extend((child, orjson.dumps(key) + b":"))
                if index:
                    stack.append(b",")
            parts.append(b"{")
        else:
            parts.append(orjson.dumps(node))
    return b"".join(parts)


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
