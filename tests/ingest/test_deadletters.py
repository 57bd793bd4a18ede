"""Tests of the dead-letter store and its table for the command line."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from ingest.deadletters import DeadLetter, DeadLetterStore, format_payload, format_table

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z


def letter(
    code: str = "bad-json",
    payload: bytes = b"{",
    received_ns: int = T0,
    topic: str = "siaga/water-level/pa-01/telemetry",
) -> DeadLetter:
    return DeadLetter(topic, payload, f"reason for {code}", received_ns, code)


def test_stored_letters_come_back_newest_first(tmp_path: Path) -> None:
    with DeadLetterStore(tmp_path / "dead.db") as store:
        store.add_many([letter("bad-json", b"1", T0), letter("bad-topic", b"2", T0 + 5)])
        back = store.recent()
    assert [(x.code, x.payload, x.received_ns) for x in back] == [
        ("bad-topic", b"2", T0 + 5),
        ("bad-json", b"1", T0),
    ]
    assert back[1].topic == "siaga/water-level/pa-01/telemetry"
    assert back[1].reason == "reason for bad-json"


def test_recent_can_be_limited_and_filtered_by_code(tmp_path: Path) -> None:
    with DeadLetterStore(tmp_path / "dead.db") as store:
        store.add_many([letter("bad-json", received_ns=T0 + i) for i in range(5)])
        store.add_many([letter("future-ts")])
        assert len(store.recent(limit=2)) == 2
        assert [x.code for x in store.recent(code="future-ts")] == ["future-ts"]
        assert [x.received_ns for x in store.recent(limit=2, code="bad-json")] == [T0 + 4, T0 + 3]


def test_counts_are_by_code(tmp_path: Path) -> None:
    with DeadLetterStore(tmp_path / "dead.db") as store:
        assert store.counts() == {}
        store.add_many([letter("bad-json"), letter("bad-json"), letter("unknown-device")])
        assert store.counts() == {"bad-json": 2, "unknown-device": 1}


def test_letters_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "dead.db"
    with DeadLetterStore(path) as store:
        store.add_many([letter("spool-full")])
    with DeadLetterStore(path) as reopened:
        assert reopened.counts() == {"spool-full": 1}


def test_a_file_from_before_schema_versions_opens_with_its_letters(tmp_path: Path) -> None:
    path = tmp_path / "dead.db"
    with DeadLetterStore(path) as store:
        store.add_many([letter("spool-full")])
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 0")  # every file written before versions says 0
    with DeadLetterStore(path) as reopened:
        assert (reopened.schema_version, reopened.counts()) == (1, {"spool-full": 1})


def test_the_database_uses_write_ahead_logging(tmp_path: Path) -> None:
    path = tmp_path / "dead.db"
    DeadLetterStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_payloads_that_are_not_utf8_are_kept_byte_for_byte(tmp_path: Path) -> None:
    raw = b"\xff\xfe\x00level\x80"
    with DeadLetterStore(tmp_path / "dead.db") as store:
        store.add_many([letter("bad-json", raw)])
        assert store.recent()[0].payload == raw


def test_adding_nothing_is_a_no_op(tmp_path: Path) -> None:
    with DeadLetterStore(tmp_path / "dead.db") as store:
        store.add_many([])
        assert store.counts() == {}


def test_a_dead_letter_refuses_a_code_that_is_not_lowercase_with_dashes() -> None:
    with pytest.raises(ValueError, match="lowercase-with-dashes"):
        letter("Bad JSON")


def test_a_dead_letter_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        DeadLetter("t", b"", "", T0, "bad-json")


def test_the_table_shows_time_code_topic_reason_and_payload(tmp_path: Path) -> None:
    with DeadLetterStore(tmp_path / "dead.db") as store:
        store.add_many([letter("bad-json", b'{"level_cm": ', T0 + 123_456_789)])
        table = format_table(store.recent())
    header, row = table.splitlines()
    assert header.split() == ["TIME", "CODE", "TOPIC", "REASON", "PAYLOAD"]
    assert row.split(maxsplit=2)[:2] == ["2023-11-14T22:13:20.123Z", "bad-json"]
    assert "siaga/water-level/pa-01/telemetry" in row
    assert row.endswith('reason for bad-json  {"level_cm":')


def test_the_table_of_no_letters_is_just_the_header() -> None:
    assert format_table([]).split() == ["TIME", "CODE", "TOPIC", "REASON", "PAYLOAD"]


def test_a_payload_that_is_not_utf8_is_shown_as_hex() -> None:
    assert format_payload(b"\xff\x00") == "hex:ff00"


def test_a_long_payload_is_cut_to_80_characters() -> None:
    shown = format_payload(b"x" * 200)
    assert len(shown) == 80
    assert shown.endswith("...")


def test_control_characters_in_a_payload_stay_on_one_line() -> None:
    assert format_payload(b'{"a":\n1}\x1b[2J') == '{"a":\\n1}\\x1b[2J'


def test_non_ascii_text_is_shown_as_text() -> None:
    assert format_payload("Pintu Air Manggarai \u2014 siaga".encode()) == (
        "Pintu Air Manggarai \u2014 siaga"
    )
