"""Residents' photos: checked by content, pixel-limited, re-encoded without metadata, on disk.

What arrives is untrusted bytes with an untrusted name. The name is never used; the type is
decided by the content (magic bytes, then Pillow restricted to that one format). The size in
pixels is read from the header before anything is decoded, so a decompression bomb (a small
file declaring 30000x30000 pixels) is refused before it costs memory. What is stored is a new
image built from the decoded pixels alone, re-encoded: nothing of the original file survives,
neither its metadata (EXIF GPS, camera serial numbers, XMP, comments, PNG text) nor anything
appended to or hidden in it (a ZIP or HTML polyglot). The file is named by the SHA-256 of
those new bytes, so the same photo sent twice is stored once.

Instances sharing one report book (PostgreSQL) share its photos too (`SharedPhotos`): each
photo is kept in the book as well before its report is stored, and an instance asked for a
photo it does not have on disk takes it from the book and keeps a copy. So a photo taken by
one instance is served by every other, and outlives the machine that took it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from reports.errors import PhotoTooLarge, ReportRefused, UnknownReport
from reports.settings import MIB
from siaga_core.errors import StorageError
from siaga_core.files import fsync_directory

if TYPE_CHECKING:
    # Pillow is imported on the first photo, not at start: a service that takes no photo
    # (most of them, most of the time) keeps its memory for readings.
    from PIL import Image

log = logging.getLogger(__name__)

JPEG_QUALITY: Final = 85  # what phone cameras use; a flood photo needs no more
WEBP_QUALITY: Final = 85
# libwebp's effort, 0..6: 0 encodes a phone photo about 3x faster than the default 4, and
# the file comes out about as large (measured on a 1280x960 photo: 70 ms against 190 ms).
WEBP_METHOD: Final = 0
# What a photo may be. Order matters for nothing; each entry: Pillow's format name, the
# stored file's extension, its media type.
FORMATS: Final = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
}
MEDIA_TYPES: Final = {extension: media_type for extension, media_type in FORMATS.values()}
_NAME: Final = re.compile(r"[0-9a-f]{64}\.(jpg|png|webp)")
# What else people send, to say so in the refusal (the first bytes of each).
_OTHER_TYPES: Final = (
    (b"GIF8", "a GIF"), (b"%PDF", "a PDF"), (b"PK\x03\x04", "a ZIP archive"),
    (b"BM", "a BMP"), (b"II*\x00", "a TIFF"), (b"MM\x00*", "a TIFF"),
    (b"<?xml", "XML or SVG"), (b"<svg", "an SVG"), (b"<!DOCTYPE", "HTML"), (b"<html", "HTML"),
)
# What Pillow raises on a malformed file: it has no single root error for "bad image".
# Warnings too: Pillow warns of corrupt EXIF and of large images, and where warnings are
# made errors (python -W error) they arrive as exceptions. (Pillow's DecompressionBombError
# is a subclass of none of them: `_decode` adds it.)
_DECODE_ERRORS: Final = (OSError, ValueError, SyntaxError, EOFError, struct.error,
                         IndexError, TypeError, Warning)
TEMP_SUFFIX: Final = ".tmp"


class SharedPhotos(Protocol):
    """Where the instances sharing a report book keep its photos: the book itself
    (`reports.book.ReportBook`, on PostgreSQL). Blocking, as the store is."""

    def keep_photo(self, name: str, body: bytes) -> None:
        """Keep `body` under `name`, durably; a photo already kept there stays."""

    def photo(self, name: str) -> bytes | None:
        """The photo kept under `name`, or None."""

    def missing_photos(self, names: Sequence[str]) -> list[str]:
        """Those of `names` not kept (their bodies are not read)."""


@dataclass(frozen=True, slots=True)
class StoredPhoto:
    name: str  # "<sha256>.<ext>": what `NewReport.photo` holds and the media URL ends with
    media_type: str
    width: int
    height: int


class PhotoStore:
    """Photos on disk under `directory/<first 2 hex>/<sha256>.<ext>`, each written atomically,
    and in `shared` too when instances share them.

    `accept` and `path` may run in several threads at once (they block on files and the
    shared book; the HTTP layer runs them off the event loop). Beside its settings it holds
    one thing: the photos accepted for reports not stored yet, which `discard` leaves alone.
    """

    def __init__(self, directory: Path, max_bytes: int, max_pixels: int,
                 shared: SharedPhotos | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.shared = shared
        self._held: Counter[str] = Counter()  # photo -> reports on their way to the book
        self._holding = threading.Lock()

    def accept(self, data: bytes) -> StoredPhoto:
        """Check, clean and store a photo; `PhotoTooLarge` or `ReportRefused` saying why not,
        `StorageError` when it cannot be written. The photo is held for its report until
        `release` (the report is stored) or `discard` (it could not be)."""
        if len(data) > self.max_bytes:
            in_mib = f" ({self.max_bytes / MIB:g} MiB)" if self.max_bytes >= MIB else ""
            raise PhotoTooLarge(f"photo is {len(data):,} bytes; at most "
                                f"{self.max_bytes:,}{in_mib}")
        pillow_format = _sniff(data)
        width, height = header_size(data, pillow_format)
        self._check_pixels(width, height)
        image = self._decode(data, pillow_format, (width, height))
        body = _encode(image, pillow_format)
        extension, media_type = FORMATS[pillow_format]
        name = f"{hashlib.sha256(body).hexdigest()}.{extension}"
        with self._holding:  # before the file is there: `discard` must see it is wanted
            self._held[name] += 1
        try:
            self._store(name, body)
        except BaseException:
            self.release(name)
            raise
        return StoredPhoto(name, media_type, image.width, image.height)

    def release(self, name: str) -> None:
        """The report `accept` held photo `name` for is stored: it holds it no more."""
        with self._holding:
            self._let_go(name)

    def discard(self, name: str, forget: Callable[[str], bool]) -> bool:
        """Let go of photo `name`, whose report could not be stored, and remove it from this
        disk unless another report wants it: one on its way (held here), or a stored one.
        `forget` (`ReportBook.forget_photo`) answers for those: False when a report shows
        the photo, else True once it forgot it in a shared book. Whether it was removed.
        Blocking; `StorageError` when the book cannot answer or the file cannot be removed
        (the photo stays)."""
        # Locked throughout, the book's answer too: a report accepting this very photo
        # meanwhile (the same upload sent again) waits rather than lose the file under it.
        with self._holding:
            self._let_go(name)
            if self._held[name] > 0 or not forget(name):
                return False
            try:
                (self.directory / name[:2] / name).unlink(missing_ok=True)
            except OSError as exc:
                raise StorageError(f"photo {name} could not be removed from "
                                   f"{self.directory}: {exc.strerror or exc}") from exc
            return True

    def _let_go(self, name: str) -> None:
        self._held[name] -= 1
        if self._held[name] <= 0:
            del self._held[name]

    def path(self, name: str) -> Path:
        """Where the photo `name` is on disk (copied from `shared` first when only another
        instance had it); `UnknownReport` for any other name or a photo nobody has,
        `StorageError` when the shared book cannot be read or the copy not written."""
        return self.local(name) or self.fetch(name)

    def local(self, name: str) -> Path | None:
        """Where the photo is on this instance's disk, or None; `UnknownReport` for a name
        that is no photo's. A file check only: cheap enough for the event loop."""
        if not _NAME.fullmatch(name):  # 64 hex, a dot, an extension: no "/", "..", NUL
            raise UnknownReport(f"no photo named {name[:80]!r}")
        path = self.directory / name[:2] / name
        return path if path.is_file() else None

    def fetch(self, name: str) -> Path:
        """The photo another instance took, from the shared book, copied to this disk and
        served from it from now on. Blocking: run it off the event loop."""
        body = None if self.shared is None else self.shared.photo(name)
        if body is None:
            raise UnknownReport(f"no photo named {name!r}")
        if hashlib.sha256(body).hexdigest() != name[:64]:
            # The name is the hash of what was kept: other bytes were changed since, and
            # are not served as the resident's photo.
            log.error("photo %s in the shared book does not match its name: not served", name)
            raise UnknownReport(f"no photo named {name!r}")
        try:
            self._write(name, body)
        except OSError as exc:  # the disk's trouble: the caller answers 503, not a bug's 500
            raise StorageError(f"photo {name} could not be copied to {self.directory}: "
                               f"{exc.strerror or exc}") from exc
        return self.directory / name[:2] / name

    def share_local(self, stop: Callable[[], bool] = lambda: False) -> int:
        """Keep in `shared` the photos on this disk it lacks (taken before instances shared
        them, or while keeping failed), until `stop()` says so; how many. Blocking, and
        idempotent: what is left is kept the next time."""
        shared = self.shared
        if shared is None or not self.directory.is_dir():
            return 0
        here = {path.name: path for path in self.directory.glob("*/*")
                if _NAME.fullmatch(path.name) and path.parent.name == path.name[:2]}
        kept = 0
        for name in shared.missing_photos(sorted(here)):
            if stop():
                break
            try:
                body = here[name].read_bytes()
            except OSError as exc:  # one unreadable file must not keep the others back
                log.warning("photo %s not kept in the shared book: %s", name, exc)
                continue
            if hashlib.sha256(body).hexdigest() != name[:64]:
                # Damaged on this disk: kept, it would stand in the book for good (a kept
                # photo stays), and `fetch` would refuse it everywhere.
                log.error("photo %s on this disk does not match its name: not kept", name)
                continue
            shared.keep_photo(name, body)
            kept += 1
        return kept

    def media_type(self, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise UnknownReport(f"no photo named {name[:80]!r}")
        return MEDIA_TYPES[name.rsplit(".", 1)[1]]

    def sweep(self) -> int:
        """Remove the temporary files a killed process left mid-write; call it at start,
        before anything writes. They were never served (`path` takes only final names)."""
        removed = 0
        if self.directory.is_dir():
            for temp in self.directory.glob(f"*/.*{TEMP_SUFFIX}"):
                temp.unlink(missing_ok=True)
                removed += 1
        return removed

    def _check_pixels(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise ReportRefused(f"photo is {width}x{height} pixels; at most "
                                f"{self.max_pixels:,} pixels: send a smaller photo")

    def _decode(self, data: bytes, pillow_format: str,
                header: tuple[int, int]) -> Image.Image:
        from PIL import Image, ImageOps, UnidentifiedImageError

        kind = _KIND[pillow_format]
        # Pillow's only decompression-bomb guard is the process-wide Image.MAX_IMAGE_PIXELS.
        # We leave it alone (other code in the process shares it) and rely on our own check
        # of the header above, which is stricter by default (40 M against Pillow's 89 M).
        # Pillow's own check stays a second line: its DecompressionBombError (and its warning,
        # where warnings are errors) is caught below, and the size it reads is checked again.
        try:
            with Image.open(io.BytesIO(data), formats=[pillow_format]) as opened:
                if opened.size != header:  # two size fields disagree: a crafted file
                    raise ReportRefused(f"photo is not a valid {kind}: its header is "
                                        "inconsistent")
                self._check_pixels(*opened.size)
                opened.load()  # the whole file now: a truncated one fails here
                # The orientation is applied first: the EXIF that says it goes next.
                upright = ImageOps.exif_transpose(opened)
                return _pixels_only(upright, pillow_format)
        except ReportRefused:
            raise
        except (*_DECODE_ERRORS, Image.DecompressionBombError) as exc:
            raise ReportRefused(f"photo is not a valid {kind}: {_reason(exc)}") from exc
        except UnidentifiedImageError as exc:  # an OSError, so listed for the reader only
            raise ReportRefused(f"photo is not a valid {kind}") from exc

    def _store(self, name: str, body: bytes) -> None:
        try:
            self._write(name, body)
        except OSError as exc:  # a full or failing disk: the caller answers 503, not a 500
            raise StorageError(f"photo {name} could not be written to {self.directory}: "
                               f"{exc.strerror or exc}") from exc
        if self.shared is not None:  # before its report is stored, which names it
            self.shared.keep_photo(name, body)

    def _write(self, name: str, body: bytes) -> None:
        folder = self.directory / name[:2]
        path = folder / name
        self._make_folder(folder)
        if not path.exists():  # content-addressed: an existing file holds these very bytes
            _write_durably(folder, path, body)
        # Also when it existed: another thread may have renamed it a moment ago without
        # its directory entry on disk yet, and the report is acknowledged after this.
        fsync_directory(folder)

    def _make_folder(self, folder: Path) -> None:
        if folder.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        folder.mkdir(exist_ok=True)
        fsync_directory(self.directory)  # the new folder's own entry must reach the disk


_KIND: Final = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}


def _sniff(data: bytes) -> str:
    """Pillow's format name for what the first bytes say, or `ReportRefused`."""
    if not data:
        raise ReportRefused("photo is empty: send a JPEG, PNG or WebP image")
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    head = data[:64].lstrip().lower()
    seen = next((what for magic, what in _OTHER_TYPES if head.startswith(magic.lower())),
                None)
    what = f" (it looks like {seen})" if seen else ""
    raise ReportRefused(f"photo is not a JPEG, PNG or WebP image{what}: the type is judged "
                        "by the content, not by the file's name")


def header_size(data: bytes, pillow_format: str) -> tuple[int, int]:
    """(width, height) as the header declares them, read without decoding anything."""
    try:
        size = _HEADER_READERS[pillow_format](data)
    except (struct.error, IndexError):
        size = None
    if size is None or size[0] < 1 or size[1] < 1:
        raise ReportRefused(f"photo is not a valid {_KIND[pillow_format]}: no image size "
                            "in its header (truncated?)")
    return size


def _png_size(data: bytes) -> tuple[int, int] | None:
    # The signature (8 bytes), then the IHDR chunk: length, type, width, height (big-endian).
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # Walk the segments to the first start of frame (SOF0..SOF15 but DHT, JPG and DAC).
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            position += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return width, height
        position += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk, body = data[12:16], data[20:30]
    if chunk == b"VP8 " and body[3:6] == b"\x9d\x01\x2a":  # lossy: after the frame tag
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and body[:1] == b"\x2f":  # lossless: 14 bits each, minus one
        (bits,) = struct.unpack("<I", body[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, 24 bits each, minus one
        width = int.from_bytes(body[4:7], "little") + 1
        height = int.from_bytes(body[7:10], "little") + 1
        return width, height
    return None


_HEADER_READERS: Final = {"JPEG": _jpeg_size, "PNG": _png_size, "WEBP": _webp_size}


def _pixels_only(image: Image.Image, pillow_format: str) -> Image.Image:
    """A new image holding the pixels alone, in a mode the format stores.

    Pillow's savers read some metadata from `image.info` (a JPEG's comment, a PNG's ICC
    profile) even when not asked to, so the decoded image is never saved as it is. The ICC
    profile goes too: it is a blob of up to megabytes passed through unchecked, it can name
    the camera, and a flood photo is not colour-critical (most phones shoot sRGB anyway).
    """
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if pillow_format == "JPEG":
        mode = "L" if image.mode in ("1", "L") else "RGB"
    elif pillow_format == "PNG" and image.mode in ("L", "LA", "RGB", "RGBA"):
        mode = image.mode
    else:
        mode = "RGBA" if has_alpha else "RGB"
    converted = image.convert(mode) if image.mode != mode else image
    # A fresh image (its `info` empty) with the pixels pasted in: the same result as a round
    # trip through bytes, without copying the pixels twice (a 1.2-megapixel photo: about
    # 1 ms rather than 11).
    from PIL import Image

    clean = Image.new(mode, converted.size)
    clean.paste(converted)
    return clean


def _encode(image: Image.Image, pillow_format: str) -> bytes:
    out = io.BytesIO()
    if pillow_format == "JPEG":
        image.save(out, "JPEG", quality=JPEG_QUALITY)
    elif pillow_format == "PNG":
        image.save(out, "PNG", optimize=False)  # optimize costs seconds on a large photo
    else:
        image.save(out, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    return out.getvalue()


def _reason(exc: BaseException) -> str:
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return "too many pixels (a decompression bomb?)"
    text = str(exc).strip() or type(exc).__name__
    return text[:120]


def _write_durably(folder: Path, path: Path, body: bytes) -> None:
    # A unique temporary name: two threads storing the same photo must not share one.
    handle, temp_name = tempfile.mkstemp(dir=folder, prefix=".", suffix=TEMP_SUFFIX)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes 0600; a photo is public once served
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
