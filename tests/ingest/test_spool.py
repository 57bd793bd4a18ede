"""Tests of the on-disk spool: order, atomicity, budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.spool import Spool, SpoolFull

BUDGET = 1_000_000


def drain_all(spool: Spool) -> list[bytes]:
    bodies = []
    while (segment := spool.oldest()) is not None:
        bodies.append(segment.body)
        spool.remove(segment)
    return bodies


def test_segments_come_out_in_append_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BUDGET)
    for body in (b"a 1", b"b 2", b"c 3"):
        spool.append(body)
    assert drain_all(spool) == [b"a 1", b"b 2", b"c 3"]


def test_order_survives_reopening_the_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path, BUDGET)
    for i in range(12):  # past 9 and 10, where a name sort would go wrong without padding
        first.append(f"m v={i}".encode())
    reopened = Spool(tmp_path, BUDGET)
    assert drain_all(reopened) == [f"m v={i}".encode() for i in range(12)]


def test_appends_after_reopening_go_after_the_old_segments(tmp_path: Path) -> None:
    first = Spool(tmp_path, BUDGET)
    first.append(b"old 1")
    first.append(b"old 2")
    oldest = first.oldest()
    assert oldest is not None
    first.remove(oldest)
    reopened = Spool(tmp_path, BUDGET)
    reopened.append(b"new")
    assert drain_all(reopened) == [b"old 2", b"new"]


def test_reopening_counts_what_is_on_disk(tmp_path: Path) -> None:
    first = Spool(tmp_path, BUDGET)
    first.append(b"12345")
    first.append(b"123")
    reopened = Spool(tmp_path, BUDGET)
    assert (reopened.segments, reopened.size_bytes, reopened.empty) == (2, 8, False)


def test_depth_follows_appends_and_removals(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BUDGET)
    assert (spool.segments, spool.size_bytes, spool.empty) == (0, 0, True)
    spool.append(b"abcd")
    spool.append(b"ef")
    assert (spool.segments, spool.size_bytes, spool.empty) == (2, 6, False)
    drain_all(spool)
    assert (spool.segments, spool.size_bytes, spool.empty) == (0, 0, True)


def test_an_empty_spool_has_no_oldest_segment(tmp_path: Path) -> None:
    assert Spool(tmp_path, BUDGET).oldest() is None


def test_a_leftover_temp_file_is_ignored_and_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BUDGET)
    spool.append(b"whole 1")
    oldest = spool.oldest()
    assert oldest is not None
    # What a crash between write and rename leaves behind.
    leftover = tmp_path / (oldest.path.name.replace("1.lp", "2.lp") + ".tmp")
    leftover.write_bytes(b"half a bat")

    reopened = Spool(tmp_path, BUDGET)

    assert not leftover.exists()
    assert (reopened.segments, reopened.size_bytes) == (1, len(b"whole 1"))
    assert drain_all(reopened) == [b"whole 1"]


def test_files_that_are_not_segments_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("operator notes")
    spool = Spool(tmp_path, BUDGET)
    assert spool.empty
    assert (tmp_path / "README").exists()


def test_appending_past_the_budget_raises_spool_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10)
    spool.append(b"123456")
    with pytest.raises(SpoolFull, match=r"6 of 10 bytes used, 5 more needed"):
        spool.append(b"12345")
    assert (spool.segments, spool.size_bytes) == (1, 6)


def test_appending_exactly_to_the_budget_is_allowed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10)
    spool.append(b"123456")
    spool.append(b"1234")
    assert spool.size_bytes == 10


def test_removing_frees_budget(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10)
    spool.append(b"123456")
    drain_all(spool)
    spool.append(b"1234567890")
    assert spool.size_bytes == 10


def test_replace_keeps_the_rest_in_the_same_place_in_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BUDGET)
    spool.append(b"a 1\na 2\na 3")
    spool.append(b"b 1")
    oldest = spool.oldest()
    assert oldest is not None

    spool.replace(oldest, b"a 3")

    assert (spool.segments, spool.size_bytes) == (2, len(b"a 3") + len(b"b 1"))
    assert drain_all(Spool(tmp_path, BUDGET)) == [b"a 3", b"b 1"]


def test_replace_with_nothing_removes_the_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BUDGET)
    spool.append(b"a 1")
    oldest = spool.oldest()
    assert oldest is not None
    spool.replace(oldest, b"")
    assert spool.empty


def test_removing_a_segment_twice_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BUDGET)
    spool.append(b"a 1")
    oldest = spool.oldest()
    assert oldest is not None
    spool.remove(oldest)
    with pytest.raises(ValueError, match="not in the spool"):
        spool.remove(oldest)


def test_a_segment_deleted_by_hand_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BUDGET)
    spool.append(b"a 1")
    spool.append(b"b 1")
    first = spool.oldest()
    assert first is not None
    first.path.unlink()
    assert drain_all(spool) == [b"b 1"]
    assert spool.size_bytes == 0
