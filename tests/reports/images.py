"""Test images built with Pillow: photos with metadata, bombs, polyglots, broken files.

Every builder is deterministic (the same bytes on every run) and fast; the large ones are
cached, since the corpus and several tests share them.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

from PIL import Image
from PIL.ExifTags import GPS, IFD, Base

SERIAL = "SN-SIAGA-0042"  # the camera serial a stored photo must not reveal
CAMERA = "SiagaCam 3000"
# Where the photo was taken, as EXIF writes it: Manggarai, Jakarta (6 12' S, 106 50' E).
GPS_LATITUDE = (6.0, 12.0, 30.0)
GPS_LONGITUDE = (106.0, 50.0, 40.0)


def picture(width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    """An image whose top-left pixel is red and the rest a gradient: orientation shows."""
    image = Image.new(mode, (width, height))
    for x in range(width):
        for y in range(height):
            image.putpixel((x, y), _colour(mode, x * 255 // width, y * 255 // height))
    image.putpixel((0, 0), _colour(mode, 255, 0, red=True))
    return image


def _colour(mode: str, a: int, b: int, *, red: bool = False) -> int | tuple[int, ...]:
    if mode == "L":
        return 255 if red else a
    rgb = (255, 0, 0) if red else (a, b, 128)
    return (*rgb, 255) if mode == "RGBA" else rgb


def camera_exif(orientation: int | None = None) -> Image.Exif:
    """EXIF as a phone writes it: maker, model, serial number, GPS position."""
    exif = Image.Exif()
    exif[Base.Make] = "Siaga"
    exif[Base.Model] = CAMERA
    if orientation is not None:
        exif[Base.Orientation] = orientation
    exif.get_ifd(IFD.Exif)[Base.BodySerialNumber] = SERIAL
    gps = exif.get_ifd(IFD.GPSInfo)
    gps[GPS.GPSLatitudeRef] = "S"
    gps[GPS.GPSLatitude] = GPS_LATITUDE
    gps[GPS.GPSLongitudeRef] = "E"
    gps[GPS.GPSLongitude] = GPS_LONGITUDE
    return exif


def jpeg(width: int = 64, height: int = 48, *, exif: Image.Exif | None = None,
         comment: bytes | None = None) -> bytes:
    out = io.BytesIO()
    extra: dict[str, object] = {}
    if exif is not None:
        extra["exif"] = exif.tobytes()
    if comment is not None:
        extra["comment"] = comment
    picture(width, height).save(out, "JPEG", quality=90, **extra)
    return out.getvalue()


def png(width: int = 64, height: int = 48, *, mode: str = "RGB",
        text: dict[str, str] | None = None, exif: Image.Exif | None = None) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    out = io.BytesIO()
    extra: dict[str, object] = {"pnginfo": info}
    if exif is not None:
        extra["exif"] = exif.tobytes()
    picture(width, height, mode).save(out, "PNG", **extra)
    return out.getvalue()


def webp(width: int = 64, height: int = 48, *, exif: Image.Exif | None = None,
         lossless: bool = False) -> bytes:
    out = io.BytesIO()
    extra: dict[str, object] = {"lossless": lossless}
    if exif is not None:
        extra["exif"] = exif.tobytes()
    picture(width, height).save(out, "WEBP", quality=90, **extra)
    return out.getvalue()


def other_format(pillow_format: str) -> bytes:
    """A valid image in a format Siaga does not take (GIF, BMP, TIFF)."""
    out = io.BytesIO()
    picture().save(out, pillow_format)
    return out.getvalue()


@cache
def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A real PNG decompression bomb: a few hundred KB that decode to width*height pixels.

    1-bit grey, every row a filter byte and zeros: zlib shrinks it about a thousand times.
    Compressed row block by row block, so building 900 M pixels takes well under a second.
    """
    row = bytes(1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    rows_per_block = max(1, (1 << 20) // len(row))
    block = row * rows_per_block
    parts: list[bytes] = []
    whole, rest = divmod(height, rows_per_block)
    parts.extend(compressor.compress(block) for _ in range(whole))
    parts.append(compressor.compress(row * rest))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body)))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims another size (a bomb by header alone)."""
    data = bytearray(jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_with_two_frames() -> bytes:
    """A JPEG with a second frame header declaring another size: a crafted file."""
    data = jpeg(16, 16)
    sof = data.index(b"\xff\xc0")
    (length,) = struct.unpack(">H", data[sof + 2:sof + 4])
    segment = bytearray(data[sof:sof + 2 + length])
    segment[5:9] = struct.pack(">HH", 4000, 4000)
    return data[:sof] + data[sof:sof + 2 + length] + bytes(segment) + data[sof + 2 + length:]


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[:int(len(data) * keep)]


@cache
def zip_archive() -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("payload.html", "<script>alert('zip')</script>")
    return out.getvalue()
