"""`siaga reports keys add|list|revoke` and `siaga reports stats` on a real report book."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reports.book import ReportBook
from reports.errors import KeyRefused
from reports.model import Contact, NewReport, State
from reports.settings import ReportsSettings
from siaga.cli.main import main

T2020 = 1_577_836_800 * 10**9  # 2020-01-01T00:00:00Z (07:00 WIB)
HOUR = 3600 * 10**9


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "siaga.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_new_key_is_printed_once_alone_on_the_last_line_and_stored_hashed(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "reports", "keys", "add", "qlue", "-c", str(config))
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert len(key) >= 32 and " " not in key
    with ReportBook.open(ReportsSettings(), tmp_path / "data") as book:
        assert book.key_name(key) == "qlue"
    stored = (tmp_path / "data" / "reports.sqlite").read_bytes()
    assert key.encode() not in stored
    assert hashlib.sha256(key.encode()).hexdigest().encode() in stored

    code, out, _ = run(capsys, "reports", "keys", "list", "-c", str(config))
    assert code == 0 and "qlue" in out and "active" in out and key not in out


def test_a_revoked_key_is_refused_and_an_unknown_name_is_one_clear_error(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "reports", "keys", "add", "kelurahan-menteng", "-c", str(config))
    key = out.strip().splitlines()[-1]
    code, out, _ = run(capsys, "reports", "keys", "revoke", "kelurahan-menteng",
                       "-c", str(config))
    assert code == 0 and "revoked" in out
    with (ReportBook.open(ReportsSettings(), tmp_path / "data") as book,
          pytest.raises(KeyRefused, match="api_key")):
        book.key_name(key)
    code, _, err = run(capsys, "reports", "keys", "revoke", "nobody", "-c", str(config))
    assert code == 1 and "nobody" in err and "Traceback" not in err
    code, _, err = run(capsys, "reports", "keys", "add", "kelurahan-menteng", "-c",
                       str(config))
    # A revoked name may be given a new key; a name in use may not.
    assert code == 0
    code, _, err = run(capsys, "reports", "keys", "add", "kelurahan-menteng", "-c",
                       str(config))
    assert code == 1 and "kelurahan-menteng" in err


def test_stats_print_a_table_a_person_reads(config: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    with ReportBook.open(ReportsSettings(), tmp_path / "data") as book:
        for index, code in enumerate(["sampah", "sampah", "sampah", "pohon"]):
            at = T2020 + index * HOUR
            report = book.add(NewReport(code, -6.2 + index * 0.01, 106.8, "x", at, at, "qlue",
                                        contact=Contact()))
            if index < 3:
                book.add_update(report.id, State.FIXED, "beres", "petugas", at + 2 * HOUR)
    code, out, _ = run(capsys, "reports", "stats", "--year", "2020", "-c", str(config))
    assert code == 0
    assert "4 reports, 3 resolved (75.00%)" in out
    lines = out.splitlines()
    sampah = next(line for line in lines if "sampah" in line.lower())
    assert "3" in sampah and "2.0" in sampah  # three reports, closed in a median of 2 h
    code, out, _ = run(capsys, "reports", "stats", "--year", "2020", "--json", "-c",
                       str(config))
    assert code == 0 and '"total": 4' in out and '"resolved_pct": 75.0' in out


def test_a_key_may_have_its_own_rate_limit(config: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "reports", "keys", "add", "aggregator", "--rate-limit", "600",
                       "-c", str(config))
    assert code == 0
    key = out.strip().splitlines()[-1]
    with ReportBook.open(ReportsSettings(), tmp_path / "data") as book:
        assert book.key(key).rate_limit_per_minute == 600
    code, out, _ = run(capsys, "reports", "keys", "list", "-c", str(config))
    assert "600" in out.splitlines()[1]
    code, _, err = run(capsys, "reports", "keys", "add", "zero", "--rate-limit", "0",
                       "-c", str(config))
    assert code == 1 and "at least 1" in err
