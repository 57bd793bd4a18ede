"""Durable on-disk FIFO of line-protocol batches, kept while InfluxDB cannot take them."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from siaga_core.errors import StorageError
from siaga_core.files import fsync_directory

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".lp"  # line protocol, so an operator can read or replay a segment by hand
TEMP_SUFFIX = ".tmp"  # a name no scan takes for a segment: a crash mid-write leaves only this
SEQUENCE_DIGITS = 20  # zero padded to the width of 2**64, so names sort like their numbers
_SEGMENT_NAME = re.compile(rf"^(\d{{{SEQUENCE_DIGITS}}}){re.escape(SEGMENT_SUFFIX)}$")


class SpoolFull(StorageError):
    """Appending would take the spool past its byte budget."""

    def __init__(self, max_bytes: int, size_bytes: int, needed: int) -> None:
        super().__init__(
            f"spool full: {size_bytes} of {max_bytes} bytes used, {needed} more needed"
        )
        self.max_bytes = max_bytes
        self.size_bytes = size_bytes
        self.needed = needed


@dataclass(frozen=True, slots=True)
class Segment:
    """One spooled batch: newline-joined line protocol."""

    id: int
    path: Path
    body: bytes


class Spool:
    """A directory of segment files, oldest first, with a byte budget.

    Every change is atomic on disk (temp file, fsync, rename, fsync of the directory), so
    after a crash the directory holds whole segments only. Sequence numbers name the files
    and only grow, so order survives restarts. Methods block on disk I/O: call them through
    `asyncio.to_thread`. A lock serialises them, as an append (from the flush) and a removal
    (from the drain) may run in two threads at once.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool budget must be positive, got {max_bytes} bytes")
        self._directory = directory
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._order: deque[int] = deque()
        self._sizes: dict[int, int] = {}
        self._size_bytes = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._scan()
        self._next_id = self._order[-1] + 1 if self._order else 1

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    # The depth properties read plain ints without the lock: under the GIL such a read is
    # atomic, and taking the lock could block the event loop behind another thread's fsync.
    @property
    def segments(self) -> int:
        return len(self._sizes)

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    @property
    def empty(self) -> bool:
        return not self._sizes

    def append(self, body: bytes) -> None:
        """Store `body` as the newest segment; raise `SpoolFull` past the budget."""
        if not body:
            raise ValueError("refusing to spool an empty batch")
        with self._lock:
            self._check_budget(len(body))
            segment_id = self._next_id
            self._write_durably(self._path(segment_id), body)
            self._next_id += 1
            self._order.append(segment_id)
            self._sizes[segment_id] = len(body)
            self._size_bytes += len(body)

    def oldest(self) -> Segment | None:
        """The oldest segment with its body, or None when the spool is empty."""
        with self._lock:
            while self._order:
                segment_id = self._order[0]
                path = self._path(segment_id)
                try:
                    return Segment(segment_id, path, path.read_bytes())
                except FileNotFoundError:
                    # Deleted behind our back (by an operator): nothing left to deliver.
                    log.warning("spool segment %s vanished; skipping it", path)
                    self._forget(segment_id)
            return None

    def remove(self, segment: Segment) -> None:
        """Delete a delivered segment."""
        with self._lock:
            self._require(segment)
            # No fsync of the directory: if a crash undoes the unlink, the segment is
            # delivered again, and InfluxDB overwrites a point with the same series and time.
            segment.path.unlink(missing_ok=True)
            self._forget(segment.id)

    def replace(self, segment: Segment, body: bytes) -> None:
        """Keep only `body` (the undelivered rest) of a segment, in the same place in line."""
        if not body:
            self.remove(segment)
            return
        with self._lock:
            self._require(segment)
            growth = len(body) - self._sizes[segment.id]
            if growth > 0:
                self._check_budget(growth)
            self._write_durably(segment.path, body)
            self._sizes[segment.id] = len(body)
            self._size_bytes += growth

    def _scan(self) -> None:
        found: dict[int, int] = {}
        for entry in self._directory.iterdir():
            if entry.name.endswith(TEMP_SUFFIX):
                # A write that crashed before its rename: its batch was never acknowledged.
                log.info("removing incomplete spool file %s", entry)
                entry.unlink(missing_ok=True)
                continue
            match = _SEGMENT_NAME.match(entry.name)
            if match is None or not entry.is_file():
                continue
            found[int(match.group(1))] = entry.stat().st_size
        for segment_id in sorted(found):
            self._order.append(segment_id)
            self._sizes[segment_id] = found[segment_id]
            self._size_bytes += found[segment_id]

    def _check_budget(self, needed: int) -> None:
        if self._size_bytes + needed > self._max_bytes:
            raise SpoolFull(self._max_bytes, self._size_bytes, needed)

    def _require(self, segment: Segment) -> None:
        if segment.id not in self._sizes:
            raise ValueError(f"segment {segment.id} is not in the spool {self._directory}")

    def _forget(self, segment_id: int) -> None:
        # Segments almost always leave from the head, which keeps this O(1).
        if self._order and self._order[0] == segment_id:
            self._order.popleft()
        else:
            self._order.remove(segment_id)
        self._size_bytes -= self._sizes.pop(segment_id)

    def _path(self, segment_id: int) -> Path:
        return self._directory / f"{segment_id:0{SEQUENCE_DIGITS}d}{SEGMENT_SUFFIX}"

    def _write_durably(self, path: Path, body: bytes) -> None:
        temp = path.with_name(path.name + TEMP_SUFFIX)
        try:
            with temp.open("wb") as file:
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_directory(self._directory)
