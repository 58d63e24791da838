"""A generated corpus of hostile and odd upload files (issue 13), each with the outcome the product owes it.

:func:`corpus` builds every :class:`Case` from the real sample film (``assets/samples``) and from bytes made
here: truncations at several points of PNG, JPEG and DICOM files, lying headers, decompression bombs under
and over the pixel limit, polyglots, DICOM oddities (no preamble, lying Rows/Columns, markdown in its
strings, oversized strings, no pixel data, other modalities and body parts), non-images and odd image modes.
``expect`` is ``"accepted"`` or the refusal code (``ImageRejected.code``, or ``"patient_mismatch"`` for a
DICOM naming another patient). :func:`big_files` gives the largest files an upload may hold, for the memory
bound (``scripts/measure_memory.py`` and the slow tests).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.support.xray_samples import PNG

#: The patient ID the corpus's DICOM files name unless a case says otherwise (the test's patient).
PATIENT_ID = "ED-1"
#: A Markdown link and image, as a crafted DICOM would carry them in a header value.
LINK = "[Click here](https://evil.example/login)"
IMAGE = "![x](https://evil.example/pixel.png)"


@dataclass(frozen=True)
class Case:
    """One upload: its bytes, the file name it is uploaded under, and the outcome owed."""

    name: str
    data: bytes
    expect: str  # "accepted" or a refusal code
    filename: str = ""

    @property
    def upload_name(self) -> str:
        return self.filename or self.name


# ---------------------------------------------------------------- encoders


@cache
def film() -> np.ndarray:
    """The real sample film (1024 x 1024, 8-bit grey), read-only."""
    pixels = np.asarray(Image.open(PNG).convert("L"))
    pixels.flags.writeable = False
    return pixels


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width: int, height: int, rows: bytes, *, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A PNG built by hand: ``rows`` are the filtered scanlines (zlib-compressed here)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def zero_png(width: int, height: int) -> bytes:
    """A black 8-bit grey PNG of any size, compressed without ever holding the image (a pixel bomb)."""
    z = zlib.compressobj(9)
    line = bytes(width + 1)
    body = b"".join(z.compress(line) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")
    )


def banded_png(side: int, *, mode: str = "L") -> bytes:
    """A ``side`` x ``side`` PNG of horizontal grey bands (each row constant): tiny file, huge image.

    ``mode`` 'L' (8-bit grey), 'RGB' (grey in three channels) or 'I;16' (16-bit grey).
    """
    z = zlib.compressobj(9)
    parts = []
    for y in range(side):
        if mode == "I;16":
            row = struct.pack(">H", (y * 65535) // max(1, side - 1)) * side
        else:
            level = bytes([(y * 255) // max(1, side - 1)])
            row = level * (side * (3 if mode == "RGB" else 1))
        parts.append(z.compress(b"\x00" + row))
    parts.append(z.flush())
    depth, colour = {"L": (8, 0), "RGB": (8, 2), "I;16": (16, 0)}[mode]
    ihdr = struct.pack(">IIBBBBB", side, side, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def dicom(
    pixels: np.ndarray | None = None,
    *,
    preamble: bool = True,
    syntax: str = "1.2.840.10008.1.2.1",
    pixel_bytes: bytes | None = None,
    **attributes: Any,
) -> bytes:
    """A DICOM file of ``pixels`` (default the sample film) with its attributes set as given.

    ``pixels=None`` and ``pixel_bytes=None`` with ``PixelData=None`` in ``attributes`` writes no pixel data.
    ``preamble=False`` drops the 128-byte preamble (the file starts with 'DICM').
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, generate_uid

    arr = film() if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = attributes.pop("SOPClassUID", "1.2.840.10008.5.1.4.1.1.1.1")  # DX
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = PATIENT_ID
    ds.PatientName = "LOVELACE^ADA"
    ds.StudyDate = "20240102"
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = "RGB" if arr.ndim == 3 else "MONOCHROME2"
    bits = 16 if arr.dtype == np.uint16 else 8
    ds.BitsAllocated = bits
    ds.BitsStored = 12 if bits == 16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    with_pixels = attributes.pop("PixelData", True) is not None
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if with_pixels:
        ds.PixelData = pixel_bytes if pixel_bytes is not None else np.ascontiguousarray(arr).tobytes()
    out = io.BytesIO()
    if meta.TransferSyntaxUID.is_private:  # an unknown syntax: written as explicit VR little endian
        ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    else:
        ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    return data if preamble else data[128:]


def compressed_dicom(pixels: np.ndarray, syntax: str, **attributes: Any) -> bytes:
    """``pixels`` in a compressed transfer syntax (RLE or JPEG 2000, with pydicom's encoders)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom(pixels, **attributes)))
    ds.compress(syntax, pixels)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def cut(data: bytes, fraction: float) -> bytes:
    return data[: max(1, int(len(data) * fraction))]


def _pixel_offset(data: bytes) -> int:
    """Where the pixel data's value starts in an uncompressed little-endian DICOM."""
    tag = data.rfind(b"\xe0\x7f\x10\x00")
    return tag + 12  # tag, VR 'OB'/'OW', two reserved bytes, four bytes of length


# ---------------------------------------------------------------- the corpus


def corpus() -> list[Case]:
    """Every case, at least 60, each with a distinct name."""
    cases = [*_accepted(), *_not_images(), *_png_cases(), *_jpeg_cases(), *_dicom_cases(), *_polyglots()]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be distinct"
    return cases


def _accepted() -> list[Case]:
    grey = Image.fromarray(film())
    rgb = grey.convert("RGB")
    sixteen = Image.fromarray((film().astype(np.uint16) * 257).astype(np.uint16))
    stored = grey.transpose(Image.Transpose.ROTATE_90)  # shown upright by EXIF orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    return [
        Case("png-grey-8bit.png", encode(grey, "PNG"), "accepted"),
        Case("png-rgb.png", encode(rgb, "PNG"), "accepted"),
        Case("png-rgba.png", encode(grey.convert("RGBA"), "PNG"), "accepted"),
        Case("png-grey-alpha.png", encode(grey.convert("LA"), "PNG"), "accepted"),
        Case("png-palette.png", encode(grey.convert("P"), "PNG"), "accepted"),
        Case("png-16bit.png", encode(sixteen, "PNG"), "accepted"),
        Case("png-interlaced.png", _adam7(grey), "accepted"),
        Case("jpeg-grey.jpg", encode(grey, "JPEG", quality=95), "accepted"),
        Case("jpeg-rgb.jpg", encode(rgb, "JPEG", quality=95), "accepted"),
        Case("jpeg-cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG", quality=95), "accepted"),
        Case("jpeg-progressive.jpg", encode(grey, "JPEG", quality=90, progressive=True), "accepted"),
        Case("jpeg-exif-rotated.jpg", encode(stored, "JPEG", quality=95, exif=exif.tobytes()), "accepted"),
        Case("name-with-links-http---evil.example-a@b.c-\u202egnp.png", _variant(1), "accepted"),
    ]


def _adam7(image: Image.Image) -> bytes:
    # Pillow writes no interlaced PNG; an Adam7 file is a valid PNG a scanner may produce: build one.
    pixels = np.asarray(image)
    passes = (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    )
    rows = b""
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            rows += b"".join(b"\x00" + line.tobytes() for line in sub)
    height, width = pixels.shape
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def _variant(index: int) -> bytes:
    pixels = film().copy()
    pixels[0, index] ^= 1
    return encode(Image.fromarray(pixels), "PNG")


def _not_images() -> list[Case]:
    return [
        Case("zero-bytes.png", b"", "empty_file"),
        Case("text.png", b"Patient ED-1: chest X-ray attached.\n" * 20, "unsupported_format"),
        Case(
            "page.html",
            b"<!doctype html><html><body><script>alert(1)</script></body></html>",
            "unsupported_format",
        ),
        Case(
            "drawing.svg",
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="1024" height="1024">'
            b'<a href="https://evil.example"><rect width="1024" height="1024"/></a></svg>',
            "unsupported_format",
        ),
        Case(
            "document.pdf",
            b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF",
            "unsupported_format",
        ),
        Case("picture.gif", encode(Image.fromarray(film()), "GIF"), "unsupported_format"),
        Case("picture.bmp", encode(Image.fromarray(film()), "BMP"), "unsupported_format"),
        Case("picture.tiff", encode(Image.fromarray(film()), "TIFF"), "unsupported_format"),
        Case("picture.webp", encode(Image.fromarray(film()), "WEBP"), "unsupported_format"),
        Case("one-null-byte.dcm", b"\x00", "unsupported_format"),
        Case("only-dicm.dcm", bytes(128) + b"DICM", "corrupt_image"),
    ]


def _png_cases() -> list[Case]:
    good = encode(Image.fromarray(film()), "PNG")
    iend = good.rfind(b"IEND") - 4
    idat = good.find(b"IDAT") - 4
    bad_crc = bytearray(good)
    bad_crc[idat + 20] ^= 0xFF
    rows = b"".join(b"\x00" + bytes([v % 256]) * 64 for v in range(64))
    return [
        Case("png-cut-after-signature.png", good[:8], "corrupt_image"),
        Case("png-cut-in-ihdr.png", good[:20], "corrupt_image"),
        Case("png-cut-after-ihdr.png", good[:33], "corrupt_image"),
        Case("png-cut-in-idat-10.png", cut(good, 0.10), "corrupt_image"),
        Case("png-cut-in-idat-50.png", cut(good, 0.50), "corrupt_image"),
        Case("png-cut-in-idat-99.png", good[: iend - 20], "corrupt_image"),
        Case("png-no-iend.png", good[:iend], "corrupt_image"),
        Case("png-bad-crc.png", bytes(bad_crc), "corrupt_image"),
        Case("png-header-claims-60000.png", raw_png(60000, 60000, rows), "too_many_pixels"),
        Case("png-header-claims-7000-holds-64.png", raw_png(7000, 7000, rows), "corrupt_image"),
        Case("png-bomb-under-limit-7000.png", zero_png(7000, 7000), "not_chest_xray"),
        Case("png-bomb-over-limit-8000.png", zero_png(8000, 8000), "too_many_pixels"),
        Case("png-bomb-over-limit-1x60M.png", zero_png(60_000_000, 1), "too_many_pixels"),
        Case("png-1bit.png", encode(Image.fromarray(film()).convert("1"), "PNG"), "not_chest_xray"),
        Case("png-tiny-32px.png", encode(Image.fromarray(film()).resize((32, 32)), "PNG"), "not_chest_xray"),
        Case("png-strip.png", encode(Image.fromarray(film()[:200]), "PNG"), "not_chest_xray"),
        Case("png-colour-photo.png", _colour_photo(), "not_chest_xray"),
        Case("png-blank-grey.png", encode(Image.new("L", (512, 512), 128), "PNG"), "not_chest_xray"),
    ]


def _colour_photo() -> bytes:
    y, x = np.mgrid[0:256, 0:256]
    rgb = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    return encode(Image.fromarray(rgb), "PNG")


def _jpeg_cases() -> list[Case]:
    good = encode(Image.fromarray(film()), "JPEG", quality=90)
    sof = good.find(b"\xff\xc0")
    huge = bytearray(good)
    huge[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return [
        Case("jpeg-soi-only.jpg", good[:4], "corrupt_image"),
        Case("jpeg-cut-in-header.jpg", good[: sof + 4], "corrupt_image"),
        Case("jpeg-cut-10.jpg", cut(good, 0.10), "corrupt_image"),
        Case("jpeg-cut-50.jpg", cut(good, 0.50), "corrupt_image"),
        Case("jpeg-cut-90.jpg", cut(good, 0.90), "corrupt_image"),
        Case("jpeg-header-claims-65000.jpg", bytes(huge), "too_many_pixels"),
        Case(
            "jpeg-bomb-over-limit-8000.jpg",
            encode(Image.new("L", (8000, 8000), 0), "JPEG"),
            "too_many_pixels",
        ),
        Case("jpeg-1bit-drawing.jpg", encode(Image.new("L", (512, 512), 0), "JPEG"), "not_chest_xray"),
    ]


def _dicom_cases() -> list[Case]:
    good = dicom()
    start = _pixel_offset(good)
    sixteen = (film().astype(np.uint16) * 16).astype(np.uint16)
    rgb = np.repeat(film()[..., None], 3, axis=2)
    two_frames = np.concatenate([film(), film()], axis=0)
    return [
        Case("dicom-plain.dcm", good, "accepted"),
        Case("dicom-no-preamble.dcm", dicom(preamble=False), "accepted"),
        Case("dicom-implicit-vr.dcm", dicom(syntax="1.2.840.10008.1.2"), "accepted"),
        Case(
            "dicom-monochrome1.dcm", dicom(255 - film(), PhotometricInterpretation="MONOCHROME1"), "accepted"
        ),
        Case(
            "dicom-16bit-rescale-window.dcm",
            dicom(sixteen, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=1016, WindowWidth=4096),
            "accepted",
        ),
        Case("dicom-rgb.dcm", dicom(rgb), "accepted"),
        Case(
            "dicom-two-frames.dcm",
            dicom(film(), NumberOfFrames=2, pixel_bytes=two_frames.tobytes()),
            "accepted",
        ),
        Case("dicom-rle.dcm", compressed_dicom(film(), "1.2.840.10008.1.2.5"), "accepted"),
        Case("dicom-j2k.dcm", compressed_dicom(film(), "1.2.840.10008.1.2.4.90"), "accepted"),
        Case("dicom-secondary-capture-chest.dcm", dicom(Modality="OT", BodyPartExamined="CHEST"), "accepted"),
        Case(
            "dicom-oversized-strings.dcm",
            dicom(
                StudyDescription="CHEST " + "A" * 2_000_000,
                PatientName="LOVELACE^ADA^" + "X" * 100_000,  # the record's patient, an absurd middle name
                BodyPartExamined="CHEST" + " " * 10 + "Z" * 50_000,
                ViewPosition="PA" * 10_000,
            ),
            "accepted",
        ),
        Case("dicom-other-patient-link.dcm", dicom(PatientID=LINK), "patient_mismatch"),
        Case("dicom-other-patient-image.dcm", dicom(PatientID=IMAGE), "patient_mismatch"),
        Case("dicom-other-patient-bidi.dcm", dicom(PatientID="ED-2\u202e\u0007"), "patient_mismatch"),
        Case("dicom-ct.dcm", dicom(Modality="CT"), "wrong_modality"),
        Case("dicom-modality-link.dcm", dicom(Modality="[x](https://evil.example)"), "wrong_modality"),
        Case("dicom-hand.dcm", dicom(Modality="CR", BodyPartExamined="HAND"), "not_chest_xray"),
        Case("dicom-body-part-image.dcm", dicom(Modality="CR", BodyPartExamined=IMAGE), "not_chest_xray"),
        Case("dicom-body-part-link.dcm", dicom(Modality="CR", BodyPartExamined=LINK), "not_chest_xray"),
        Case(
            "dicom-report-no-pixels.dcm",
            dicom(
                SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11",
                Modality="SR",
                PixelData=None,
                Rows=None,
                Columns=None,
            ),
            "no_pixel_data",
        ),
        Case(
            "dicom-rows-lie-bigger.dcm",
            dicom(Rows=2048, Columns=2048, pixel_bytes=film().tobytes()),
            "corrupt_image",
        ),
        Case(
            "dicom-rows-claim-7000.dcm",
            dicom(Rows=7000, Columns=7000, pixel_bytes=film().tobytes()),
            "corrupt_image",
        ),
        Case(
            "dicom-rows-claim-60000.dcm",
            dicom(Rows=60000, Columns=60000, pixel_bytes=film().tobytes()),
            "too_many_pixels",
        ),
        Case("dicom-rows-zero.dcm", dicom(Rows=0, Columns=0, pixel_bytes=film().tobytes()), "corrupt_image"),
        Case("dicom-cut-in-meta.dcm", good[:200], "corrupt_image"),
        Case("dicom-cut-before-pixels.dcm", good[: start - 12], "corrupt_image"),
        Case("dicom-cut-in-pixel-tag.dcm", good[: start - 6], "corrupt_image"),
        Case("dicom-cut-pixels-1.dcm", good[: start + 1000], "corrupt_image"),
        Case("dicom-cut-pixels-50.dcm", good[: start + len(film().tobytes()) // 2], "corrupt_image"),
        Case("dicom-cut-pixels-99.dcm", good[:-100], "corrupt_image"),
        Case("dicom-noise-after-dicm.dcm", bytes(128) + b"DICM" + bytes(range(256)) * 8, "corrupt_image"),
        Case("dicom-unknown-syntax.dcm", dicom(syntax="1.2.3.4.5.6.7"), "unsupported_format"),
    ]


def _polyglots() -> list[Case]:
    png = encode(Image.fromarray(film()), "PNG")
    zipped = _zip_of(b"payload")
    tiny_png = encode(Image.new("L", (8, 8), 0), "PNG")
    preamble = tiny_png.ljust(128, b"\x00")[:128]
    png_in_preamble = preamble + dicom()[128:]
    return [
        Case("png-then-zip.png", _variant(2) + zipped, "accepted"),
        Case("zip-then-png.png", zipped + png, "unsupported_format"),
        Case("jpeg-then-zip.jpg", encode(Image.fromarray(film()), "JPEG", quality=91) + zipped, "accepted"),
        Case("dicom-preamble-holds-png.dcm", png_in_preamble, "not_chest_xray"),
        Case("html-then-png.png", b"<html><img src=x onerror=alert(1)>" + png, "unsupported_format"),
    ]


def _zip_of(payload: bytes) -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("evil.txt", payload)
    return out.getvalue()


# ---------------------------------------------------------------- the largest files, for the memory bound


def write_big_files(folder: Path) -> list[Path]:
    """Write :func:`big_files` into ``folder`` one at a time; their paths."""
    paths = []
    for name, make in _big_makers().items():
        path = folder / name
        path.write_bytes(make())
        paths.append(path)
    return paths


def big_files() -> dict[str, bytes]:
    """The most expensive files to decode that an upload can hold (pixel limit 50 MP, upload limit 50 MB)."""
    return {name: make() for name, make in _big_makers().items()}


def _big_makers() -> dict[str, Callable[[], bytes]]:
    side = 7000  # 49 MP, under the 50 MP limit
    j2k_pixels = (
        ((np.arange(side, dtype=np.uint32)[:, None] * 4095) // side).astype(np.uint16).repeat(side, axis=1)
    )
    big = 5000  # 16-bit, 50 MB of pixel data: the largest uncompressed DICOM under the 50 MB limit
    ramp = ((np.arange(big, dtype=np.uint32)[:, None] * 4095) // big).astype(np.uint16)
    files: dict[str, Callable[[], bytes]] = {
        "rgb-7000.png": lambda: banded_png(side, mode="RGB"),
        "grey16-7000.png": lambda: banded_png(side, mode="I;16"),
        "grey8-7000.png": lambda: banded_png(side, mode="L"),
        "rgb-7000.jpg": lambda: encode(Image.new("RGB", (side, side), (90, 90, 90)), "JPEG"),
        "header-7000-holds-little.png": lambda: raw_png(side, side, b"\x00" * (side + 1) * 4),
        "dicom-16bit-5000.dcm": lambda: dicom(
            np.repeat(ramp, big, axis=1),
            RescaleSlope=1,
            RescaleIntercept=-1024,
            WindowCenter=1024,
            WindowWidth=4000,
        ),
        "dicom-j2k-7000.dcm": lambda: compressed_dicom(j2k_pixels, "1.2.840.10008.1.2.4.90"),
        "dicom-rgb-4000.dcm": lambda: dicom(np.full((4000, 4000, 3), 100, dtype=np.uint8)),
    }
    return files
