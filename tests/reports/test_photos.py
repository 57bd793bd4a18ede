"""Photos: judged by content, pixel-limited, stored clean (no metadata), once, atomically."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image
from PIL.ExifTags import IFD

from reports.errors import PhotoTooLarge, ReportRefused, UnknownReport
from reports.photos import PhotoStore, StoredPhoto
from reports.settings import MIB
from siaga_core.errors import StorageError
from tests.reports import images
from tests.reports.hostile import PHOTO_CASES, PhotoCase

MAX_PIXELS = 40_000_000


@pytest.fixture
def store(tmp_path: Path) -> PhotoStore:
    return PhotoStore(tmp_path / "photos", 10 * MIB, MAX_PIXELS)


def stored_image(store: PhotoStore, photo: StoredPhoto) -> Image.Image:
    return Image.open(io.BytesIO(store.path(photo.name).read_bytes()))


def files_in(store: PhotoStore) -> list[Path]:
    return sorted(path for path in store.directory.rglob("*") if path.is_file())


@pytest.mark.parametrize("case", PHOTO_CASES, ids=lambda case: case.name)
def test_hostile_photo_gets_its_expected_outcome(store: PhotoStore, case: PhotoCase) -> None:
    if case.expected == "accepted":
        photo = store.accept(case.data)
        body = store.path(photo.name).read_bytes()
        assert photo.media_type == case.media_type
        assert [part for part in case.absent if part in body] == []
        return
    error = PhotoTooLarge if case.expected == 413 else ReportRefused
    with pytest.raises(error) as caught:
        store.accept(case.data)
    assert case.reason in str(caught.value)
    assert files_in(store) == []  # nothing refused is stored


@pytest.mark.parametrize("build", [images.jpeg, images.webp, images.png],
                         ids=["jpeg", "webp", "png"])
def test_gps_and_camera_serial_are_gone(store: PhotoStore, build: Callable[..., bytes]) -> None:
    original = build(exif=images.camera_exif())
    assert images.SERIAL.encode() in original  # the test photo does carry them
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(IFD.GPSInfo)
    photo = store.accept(original)
    body = store.path(photo.name).read_bytes()
    exif = stored_image(store, photo).getexif()
    assert dict(exif) == {}
    assert exif.get_ifd(IFD.GPSInfo) == {} and exif.get_ifd(IFD.Exif) == {}
    assert images.SERIAL.encode() not in body and images.CAMERA.encode() not in body
    assert b"Exif" not in body and b"eXIf" not in body


def test_no_icc_profile_xmp_or_comment_survives(store: PhotoStore) -> None:
    out = io.BytesIO()
    images.picture().save(out, "JPEG", icc_profile=b"\0" * 128 + b"acspSIAGA",
                          comment=b"secret", xmp=b"<x:xmpmeta>siaga-xmp</x:xmpmeta>")
    photo = store.accept(out.getvalue())
    info = stored_image(store, photo).info
    assert "icc_profile" not in info and "comment" not in info and "xmp" not in info
    assert b"siaga-xmp" not in store.path(photo.name).read_bytes()


def test_exif_orientation_is_applied(store: PhotoStore) -> None:
    # Orientation 6: the camera was turned; the picture is shown turned 90 degrees clockwise,
    # so the red top-left pixel ends top right. PNG keeps the pixels exact.
    photo = store.accept(images.png(64, 48, exif=images.camera_exif(orientation=6)))
    image = stored_image(store, photo)
    assert (photo.width, photo.height) == image.size == (48, 64)
    assert image.getpixel((47, 0)) == (255, 0, 0)
    assert image.getpixel((0, 0)) != (255, 0, 0)


def test_a_jpeg_is_turned_upright_too(store: PhotoStore) -> None:
    photo = store.accept(images.jpeg(64, 48, exif=images.camera_exif(orientation=8)))
    image = stored_image(store, photo)
    assert image.size == (48, 64)
    assert "exif" not in image.info  # nothing left to turn it a second time


def test_the_same_photo_is_stored_once(store: PhotoStore) -> None:
    first = store.accept(images.jpeg())
    again = store.accept(images.jpeg())
    # Other metadata, same pixels: the same clean photo.
    with_gps = store.accept(images.jpeg(exif=images.camera_exif()))
    assert first == again == with_gps
    assert files_in(store) == [store.path(first.name)]


def test_the_name_is_the_hash_of_the_stored_bytes(store: PhotoStore) -> None:
    photo = store.accept(images.webp())
    path = store.path(photo.name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert photo.name == f"{digest}.webp"
    assert path == store.directory / digest[:2] / photo.name


def test_storing_leaves_no_temporary_file(store: PhotoStore) -> None:
    names = {store.accept(build()).name for build in (images.jpeg, images.png, images.webp)}
    assert {path.name for path in files_in(store)} == names


def test_the_same_photo_from_many_threads_is_one_whole_file(store: PhotoStore) -> None:
    data = images.jpeg(320, 240)
    with ThreadPoolExecutor(8) as pool:
        photos = set(pool.map(lambda _: store.accept(data), range(16)))
    assert len(photos) == 1
    (photo,) = photos
    (path,) = files_in(store)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == photo.name.split(".")[0]


def test_a_discarded_photo_goes_unless_another_report_wants_it(store: PhotoStore) -> None:
    # `forget` stands for the book's answer (ReportBook.forget_photo): True, no stored
    # report shows the photo; False, one does.
    data = images.jpeg()
    first, second = store.accept(data), store.accept(data)  # two reports on their way
    assert not store.discard(first.name, lambda name: True)  # the second still wants it
    assert store.local(first.name) is not None
    assert store.discard(second.name, lambda name: True)
    assert store.local(first.name) is None and files_in(store) == []
    shown = store.accept(images.png())
    assert not store.discard(shown.name, lambda name: False)  # a stored report shows it
    assert store.local(shown.name) is not None


def test_a_released_photo_is_not_held_for_its_report_any_more(store: PhotoStore) -> None:
    stored, failed = store.accept(images.webp()), store.accept(images.webp())
    store.release(stored.name)  # its report is in the book: the book answers for it now
    assert store.discard(failed.name, lambda name: True)
    assert store.local(stored.name) is None


def test_a_photo_that_cannot_be_written_is_a_storage_error_not_a_bug(tmp_path: Path) -> None:
    (tmp_path / "photos").write_bytes(b"")  # the directory is a file: nothing is written
    store = PhotoStore(tmp_path / "photos", 10 * MIB, MAX_PIXELS)
    with pytest.raises(StorageError, match="could not be written"):
        store.accept(images.jpeg())


def test_a_crashed_write_is_never_served(store: PhotoStore) -> None:
    # What a crash between the temporary file and the rename leaves behind.
    photo = store.accept(images.jpeg())
    folder = store.path(photo.name).parent
    (folder / f".{photo.name}.tmp").write_bytes(b"half")
    with pytest.raises(UnknownReport):
        store.path(f".{photo.name}.tmp")
    assert store.path(photo.name).read_bytes() != b"half"


def test_the_start_sweeps_what_a_crashed_write_left_and_nothing_else(
        store: PhotoStore) -> None:
    photo = store.accept(images.jpeg())
    folder = store.path(photo.name).parent
    (folder / ".k1ll3d.tmp").write_bytes(b"half")
    assert store.sweep() == 1
    assert not list(folder.glob(".*.tmp"))
    assert store.path(photo.name).is_file()
    assert store.sweep() == 0


@pytest.mark.parametrize("name", [
    "../../etc/passwd", "a" * 64 + ".jpg/../../x", "A" * 64 + ".jpg", "a" * 63 + ".jpg",
    "a" * 64 + ".gif", "a" * 64 + ".jpg\n", "a" * 64 + ".jpg\x00.png", "/" + "a" * 64 + ".jpg",
    "a" * 64 + ".JPG", "", ".." + "a" * 62 + ".jpg",
])
def test_a_name_that_is_not_a_photo_name_is_unknown(store: PhotoStore, name: str) -> None:
    with pytest.raises(UnknownReport):
        store.path(name)
    with pytest.raises(UnknownReport):
        store.media_type(name)


def test_a_well_formed_name_of_no_photo_is_unknown(store: PhotoStore) -> None:
    with pytest.raises(UnknownReport, match="no photo named"):
        store.path("0" * 64 + ".png")


def test_media_types_follow_the_extension(store: PhotoStore) -> None:
    assert [store.media_type("0" * 64 + ext) for ext in (".jpg", ".png", ".webp")] == [
        "image/jpeg", "image/png", "image/webp"]


def test_too_large_names_the_limit(tmp_path: Path) -> None:
    small = PhotoStore(tmp_path, 2048, MAX_PIXELS)
    with pytest.raises(PhotoTooLarge) as caught:
        small.accept(b"\xff\xd8\xff" + bytes(3000))
    assert str(caught.value) == "photo is 3,003 bytes; at most 2,048"


def test_too_many_pixels_names_the_size_and_the_limit(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path, 10 * MIB, 10_000)
    with pytest.raises(ReportRefused) as caught:
        store.accept(images.png(200, 51))
    assert str(caught.value) == ("photo is 200x51 pixels; at most 10,000 pixels: "
                                 "send a smaller photo")
    assert store.accept(images.png(200, 50)).width == 200


def test_pillows_own_bomb_check_stays_a_second_line(tmp_path: Path) -> None:
    # Configured above Pillow's limit, the 900 M-pixel bomb passes our check; Pillow's
    # refusal must still come out as ReportRefused, not as a server error.
    lax = PhotoStore(tmp_path, 10 * MIB, 10**12)
    with pytest.raises(ReportRefused, match="too many pixels"):
        lax.accept(images.png_bomb())
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # left as Pillow sets it


def test_a_png_with_a_palette_and_transparency_keeps_its_alpha(store: PhotoStore) -> None:
    out = io.BytesIO()
    palette = images.picture(32, 32).convert("P")
    palette.info["transparency"] = 0
    palette.save(out, "PNG", transparency=0)
    image = stored_image(store, store.accept(out.getvalue()))
    assert image.mode == "RGBA"


@pytest.mark.parametrize("build", [images.jpeg, images.png, images.webp],
                         ids=["jpeg", "png", "webp"])
def test_corrupted_photos_are_refused_or_cleanly_stored(tmp_path: Path,
                                                        build: Callable[..., bytes]) -> None:
    # Seeded mutations: whatever Pillow makes of them, the answer is a stored clean image
    # or a ReportRefused, never another exception (which the HTTP layer would answer 500).
    store = PhotoStore(tmp_path, 10 * MIB, MAX_PIXELS)
    original = bytearray(build())
    chance = random.Random(14)
    outcomes = {"stored": 0, "refused": 0}
    for _ in range(150):
        data = bytearray(original)
        for _ in range(chance.randint(1, 8)):
            data[chance.randrange(len(data))] = chance.randrange(256)
        if chance.random() < 0.3:
            del data[chance.randrange(len(data)):]
        try:
            photo = store.accept(bytes(data))
        except ReportRefused:
            outcomes["refused"] += 1
        else:
            stored_image(store, photo).load()
            outcomes["stored"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 150
