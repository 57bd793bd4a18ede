"""The plate watch list: a CSV with a `plate` column, label columns, errors by file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.watchlist import Watchlist
from siaga_core.errors import ConfigFileError

GOOD = """plate,reason,agency
B 1234 XYZ,tunggakan pajak,Bapenda DKI
b9876abc,,Bapenda DKI

D 1 A,stolen,Polda Metro Jaya
"""


def write(tmp_path: Path, text: str, name: str = "watchlist.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_listed_plate_matches_whatever_its_spacing_and_case_with_its_row_as_labels(
    tmp_path: Path,
) -> None:
    watchlist = Watchlist.load(write(tmp_path, GOOD))
    entry = watchlist.match("b 1234  xyz")
    assert entry is not None
    assert entry.plate == "B1234XYZ"
    assert dict(entry.labels) == {"reason": "tunggakan pajak", "agency": "Bapenda DKI"}
    assert len(watchlist) == 3 and watchlist.columns == ("reason", "agency")


def test_an_empty_cell_is_no_label(tmp_path: Path) -> None:
    watchlist = Watchlist.load(write(tmp_path, GOOD))
    assert watchlist.labels_of("B 9876 ABC") == {"agency": "Bapenda DKI"}


def test_a_plate_not_listed_matches_nothing(tmp_path: Path) -> None:
    watchlist = Watchlist.load(write(tmp_path, GOOD))
    assert watchlist.match("B 1234 XYA") is None
    assert watchlist.labels_of("B 1") is None
    assert "B 1234 XYA" not in watchlist and "B1234XYZ" in watchlist


def test_an_empty_watch_list_matches_nothing() -> None:
    assert Watchlist().match("B 1234 XYZ") is None and len(Watchlist()) == 0


def test_a_spreadsheet_export_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffplate,agency\nB 1 CD,Samsat\n".encode())
    assert Watchlist.load(path).labels_of("B1CD") == {"agency": "Samsat"}


def test_entries_can_be_given_directly() -> None:
    watchlist = Watchlist.from_entries([("B 1 CD", {"agency": "Samsat"}), ("F 2 G", {})])
    assert watchlist.labels_of("b1cd") == {"agency": "Samsat"}
    assert watchlist.labels_of("F2G") == {}


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("plate,reason\nB 1234 XYZ,pajak\nB-1234?,pajak\n", ":3: plate:", "1 to 16 letters"),
        ("plate,reason\nB 1 A,x\nb1a,y\n", ":3: plate:", "listed twice (first on line 2)"),
        ("plate,reason\nB 1 A,x,extra\n", ":2: row:", "3 cells; the header has 2"),
        ("nomor,reason\nB 1 A,x\n", ":1: header:", "'plate' column"),
        ("plate,Agency Name\nB 1 A,x\n", ":1: header:", "not a label name"),
        ("plate,plate\nB 1 A,B 1 A\n", ":1: header:", "(twice)"),
        ("", ":1: header:", "empty"),
        ("plate,reason\n,x\n", ":2: plate:", "1 to 16 letters"),
        ("plate,reason\nB 1 A,\"a\tb\"\n", ":2: reason:", "control characters"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_line(tmp_path: Path, text: str, where: str,
                                                         message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        Watchlist.load(path)
    rendered = str(caught.value)
    assert f"{path}{where}" in rendered and message in rendered, rendered


def test_an_error_never_shows_the_plate_written_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "plate,reason\nB 1234 XYZ!,pajak\nB 1234 XYZ!,pajak\n")
    with pytest.raises(ConfigFileError) as caught:
        Watchlist.load(path)
    assert "1234" not in str(caught.value)


def test_a_file_that_is_not_utf8_or_missing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"plate,reason\nB 1 A,caf\xe9\n")
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        Watchlist.load(path)
    with pytest.raises(ConfigFileError, match="cannot read"):
        Watchlist.load(tmp_path / "missing.csv")


def test_a_file_with_many_bad_rows_reports_a_screenful(tmp_path: Path) -> None:
    rows = "".join("bad!\n" for _ in range(500))
    with pytest.raises(ConfigFileError) as caught:
        Watchlist.load(write(tmp_path, "plate\n" + rows))
    assert len(caught.value.problems) == 21 and "and 480 more" in str(caught.value)
