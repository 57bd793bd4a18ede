"""The plate watch list: the only plates Siaga may keep (SPEC section 7, issue 16).

A plate is personal data. The decoder looks each plate event up here: a listed plate stays
in its `Detection` (stored, and `WatchlistVehicleSeen` raised with the row's labels); any
other plate is counted and dropped before anything downstream can hold it.

The file is a CSV with a header row: a `plate` column and any other columns, whose values
become the alert's labels (e.g. `reason`, `agency`). Plates are compared as
`devices.detections.normalize_plate` writes them (upper case, no spaces), so `b 1234 xyz`
in the file matches `B 1234 XYZ` from a camera. An error names the file and line and never
the plate written there (errors reach logs).

A city's list of vehicles in tax arrears runs to millions of rows, so a row is kept as a
tuple of its label values (repeated values shared), not as a dict of its own.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, TextIO

from devices.detections import normalize_plate
from devices.registry import LABEL_KEY_PATTERN
from siaga_core.errors import ConfigFileError, Problem

PLATE_COLUMN: Final = "plate"
# A plate as compared: what PLATE_PATTERN of devices.detections allows, without spaces.
_NORMALIZED_PLATE: Final = re.compile(r"[A-Z0-9]{1,16}")
_LABEL_KEY: Final = re.compile(LABEL_KEY_PATTERN)
_MAX_PROBLEMS: Final = 20  # a file with every row wrong says so in a screenful, not a million lines


@dataclass(frozen=True, slots=True)
class WatchEntry:
    """One listed plate (normalized) and its row's labels (empty cells left out)."""

    plate: str
    labels: Mapping[str, str]


class Watchlist:
    """Listed plates -> their labels; `match` is a dict lookup (it runs per plate event)."""

    def __init__(self, columns: Iterable[str] = (),
                 rows: Mapping[str, tuple[str, ...]] | None = None) -> None:
        """`rows` maps a normalized plate to its values of `columns` (the label columns)."""
        self._columns = tuple(columns)
        self._rows: Mapping[str, tuple[str, ...]] = rows or {}

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, Mapping[str, str]]]) -> Watchlist:
        """A watch list from (plate, labels) pairs, as tests and tools write them."""
        pairs = [(normalize_plate(plate), dict(labels)) for plate, labels in entries]
        columns = sorted({key for _, labels in pairs for key in labels})
        return cls(columns, {plate: tuple(labels.get(c, "") for c in columns)
                             for plate, labels in pairs})

    @classmethod
    def load(cls, path: Path) -> Watchlist:
        """Read a watch list CSV; raises `ConfigFileError` naming each problem's line."""
        try:
            # utf-8-sig: a spreadsheet's "CSV UTF-8" export starts with a byte order mark.
            with path.open(encoding="utf-8-sig", newline="") as file:
                columns, rows, problems = _read(file)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ConfigFileError(path, [Problem("watchlist", _io_problem(exc))]) from None
        if problems:
            shown = problems[:_MAX_PROBLEMS]
            if len(problems) > _MAX_PROBLEMS:
                shown.append(Problem("watchlist", f"and {len(problems) - _MAX_PROBLEMS} more"))
            raise ConfigFileError(path, shown)
        return cls(columns, rows)

    def match(self, plate: str) -> WatchEntry | None:
        """The entry of `plate` (any spacing and case) when it is listed, else None."""
        key = normalize_plate(plate)
        values = self._rows.get(key)
        if values is None:
            return None
        labels = {column: value for column, value in zip(self._columns, values, strict=True)
                  if value}
        return WatchEntry(key, MappingProxyType(labels))

    def labels_of(self, plate: str) -> Mapping[str, str] | None:
        """The labels of a listed plate (for the rules, which see only plain data)."""
        entry = self.match(plate)
        return None if entry is None else entry.labels

    @property
    def columns(self) -> tuple[str, ...]:
        """The label columns, in the file's order."""
        return self._columns

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, plate: object) -> bool:
        return isinstance(plate, str) and normalize_plate(plate) in self._rows

    def describe(self) -> str:
        """For the start-up log line: how many plates, never which."""
        return f"{len(self)} listed plates"


def _read(file: TextIO) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]], list[Problem]]:
    reader = csv.reader(file)
    header = next(reader, None)
    if header is None:
        return (), {}, [Problem("header", "the file is empty; expected a header row with "
                                          "a 'plate' column", 1)]
    names = [name.strip() for name in header]
    plate_at, label_at, problems = _header(names)
    if problems:
        return (), {}, problems
    rows: dict[str, tuple[str, ...]] = {}
    first_line: dict[str, int] = {}
    shared: dict[str, str] = {}  # one string per distinct label value (an agency, a reason)
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # a blank line, e.g. at the end
        if len(cells) != len(names):
            problems.append(Problem("row", f"{len(cells)} cells; the header has {len(names)}",
                                    line))
            continue
        plate = normalize_plate(cells[plate_at])
        if _NORMALIZED_PLATE.fullmatch(plate) is None:
            # The value is not shown: it may be a real plate, and errors reach logs.
            problems.append(Problem("plate", "must be 1 to 16 letters or digits (spaces are "
                                             "ignored)", line))
            continue
        if plate in first_line:
            problems.append(Problem("plate", f"listed twice (first on line {first_line[plate]})",
                                    line))
            continue
        values = []
        for index in label_at:
            value = cells[index].strip()
            if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
                problems.append(Problem(names[index], "must not contain control characters",
                                        line))
            values.append(shared.setdefault(value, value))
        first_line[plate] = line
        rows[plate] = tuple(values)
    return tuple(names[index] for index in label_at), rows, problems


def _header(names: list[str]) -> tuple[int, list[int], list[Problem]]:
    problems = []
    if names.count(PLATE_COLUMN) != 1:
        found = "twice" if PLATE_COLUMN in names else "no such column"
        problems.append(Problem("header", f"needs one 'plate' column ({found})", 1))
    for index, name in enumerate(names):
        if name == PLATE_COLUMN:
            continue
        if _LABEL_KEY.match(name) is None:
            problems.append(Problem("header", f"column {index + 1} ({name[:40]!r}) is not a "
                                              "label name: lower-case letters, digits and _", 1))
        elif names.index(name) != index:
            problems.append(Problem("header", f"column {name!r} twice", 1))
    plate_at = names.index(PLATE_COLUMN) if PLATE_COLUMN in names else -1
    return plate_at, [i for i, name in enumerate(names) if name != PLATE_COLUMN], problems


def _io_problem(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start}); save the CSV as UTF-8"
    if isinstance(exc, OSError):
        return f"cannot read the file: {exc.strerror or exc}"
    return f"not a CSV file: {exc}"
