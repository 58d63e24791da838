"""Reading radiographs: PNG, JPEG or DICOM bytes in, one normalised grayscale :class:`XrayImage` out.

:func:`read_image` decodes (the format from the bytes, never from the file name; size limits checked before
anything is decoded); :func:`read_chest_xray` adds the pixel plausibility rules of :mod:`core.imaging.scope`.
PNG and JPEG go through Pillow here; DICOM through :mod:`core.imaging.dicom`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import zlib
from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.config import Settings, get_settings
from core.imaging._pixels import (
    check_decoded_bytes,
    check_pixel_count,
    colour_stats,
    decode_slot,
    finish,
    percentile_window,
    reduce_array,
    reduction_factor,
)
from core.imaging.dicom import looks_like_dicom, read_dicom
from core.imaging.errors import (
    CorruptImage,
    EmptyFile,
    FileTooLarge,
    ImageRejected,
    TooManyPixels,
    TruncatedFile,
    UnsupportedFormat,
)
from core.imaging.image import SourceFormat, XrayImage
from core.imaging.scope import PlausibilityCheck, check_plausible_chest

log = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# Formats people upload by mistake, named so that the refusal can say what the file is.
_OTHER_MAGICS: tuple[tuple[bytes, int, str], ...] = (
    (b"%PDF", 0, "a PDF document"),
    (b"II*\x00", 0, "a TIFF image"),
    (b"MM\x00*", 0, "a TIFF image"),
    (b"BM", 0, "a BMP image"),
    (b"GIF8", 0, "a GIF image"),
    (b"WEBP", 8, "a WebP image"),
    (b"ftypheic", 4, "an HEIC photo"),
    (b"ftypmif1", 4, "an HEIF photo"),
    (b"PK\x03\x04", 0, "a ZIP archive"),
)


def sniff_format(data: bytes) -> SourceFormat | None:
    """The format of ``data`` from its magic bytes (never from a file name), or ``None`` if not supported."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if looks_like_dicom(data):
        return "dicom"
    return None


def read_image(data: bytes, filename: str | None = None, *, settings: Settings | None = None) -> XrayImage:
    """Decode an uploaded PNG, JPEG or DICOM file into an :class:`XrayImage`.

    ``filename`` is used for log messages only: the format comes from the bytes. Size limits come from
    ``settings`` (default :func:`core.config.get_settings`) and are checked before anything is decoded.
    Raises a subclass of :class:`ImageRejected` for anything that cannot be read or is not a chest X-ray by
    its DICOM tags; pixel-based plausibility is :func:`check_plausible_chest`'s job.
    """
    settings = settings or get_settings()
    if not data:
        raise EmptyFile("zero bytes")
    limit_bytes = settings.max_upload_mb * 1024 * 1024
    if len(data) > limit_bytes:
        raise FileTooLarge(
            f"{len(data)} bytes > {limit_bytes}",
            user_message=(
                f"This file is {len(data) / 2**20:.0f} MB, more than the {settings.max_upload_mb} MB limit; "
                "please upload a single X-ray image."
            ),
        )

    sha = hashlib.sha256(data).hexdigest()
    fmt = sniff_format(data)
    if fmt is None:
        what = _describe_unsupported(data)
        raise UnsupportedFormat(
            f"magic bytes {data[:8]!r}",
            user_message=(
                f"This file is {what}, which cannot be analysed; please upload the X-ray as PNG, JPEG or "
                "DICOM."
            ),
        )
    if filename and not _extension_matches(filename, fmt):
        # Common and harmless (a .dcm exported as .jpg); the bytes decide.
        log.debug("file %s has content %s despite its extension", sha[:12], fmt)

    image = read_dicom(data, sha, settings) if fmt == "dicom" else _read_pillow(data, fmt, sha, settings)
    log.info(
        "read %s image %s: %dx%d, %d-bit, %s",
        image.source_format,
        sha[:12],
        image.shape[1],
        image.shape[0],
        image.bit_depth,
        image.windowing,
    )
    return image


def read_chest_xray(
    data: bytes,
    filename: str | None = None,
    *,
    extra_checks: Iterable[PlausibilityCheck] = (),
    settings: Settings | None = None,
) -> XrayImage:
    """:func:`read_image` then :func:`check_plausible_chest`: the one call an upload handler needs."""
    image = read_image(data, filename, settings=settings)
    check_plausible_chest(image, extra_checks)
    return image


# Bytes a pixel takes once Pillow has decoded it, by mode (an unknown mode counts as the most, 4).
_DECODED_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 4, "PA": 4, "I;16": 2, "I;16L": 2, "I;16B": 2}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# EXIF orientation -> the numpy view that turns the stored image upright (ImageOps.exif_transpose's table).
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].T,
    8: lambda a: np.rot90(a, 1),
}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _read_pillow(data: bytes, fmt: SourceFormat, sha: str, settings: Settings) -> XrayImage:
    # Pillow's own bomb guard is process-wide state (Image.MAX_IMAGE_PIXELS) that training code shares, so the
    # configured limit is enforced here from the header instead; Pillow's guard stays as a second line.
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            check_pixel_count(width, height, settings)
            check_decoded_bytes(width, height, _DECODED_BYTES_PER_PIXEL.get(probe.mode, 4))
            probe.verify()  # PNG: walks every chunk and checks its CRC without decoding
        if fmt == "png":
            _check_png_complete(data)
        with decode_slot():
            return _decode_pillow(data, fmt, sha, (height, width))
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise CorruptImage(f"Pillow cannot identify the {fmt}: {exc}") from exc
    except EOFError as exc:
        raise TruncatedFile(f"{fmt} ends early: {exc}") from exc
    except Exception as exc:  # untrusted bytes make parsers raise anything: OSError, struct.error...
        if "truncated" in str(exc).lower():
            raise TruncatedFile(f"{fmt} decode failed: {type(exc).__name__}: {exc}") from exc
        raise CorruptImage(f"{fmt} decode failed: {type(exc).__name__}: {exc}") from exc


def _decode_pillow(data: bytes, fmt: SourceFormat, sha: str, original_shape: tuple[int, int]) -> XrayImage:
    """Decode to one grey channel, reduced to MAX_ANALYSIS_PIXELS, before any float copy is made: the only
    full-size buffers are Pillow's decoded image and its 8-bit (or 16-bit) grey conversion."""
    height, width = original_shape
    notes: list[str] = []
    mean_chroma = spread = 0.0
    image: Image.Image = Image.open(io.BytesIO(data))
    try:
        n_frames = int(getattr(image, "n_frames", 1))
        if n_frames > 1:  # an animated PNG: Pillow loads the first frame
            notes.append(f"The file holds {n_frames} frames; only the first is shown and analysed.")
        orientation = _exif_orientation(image, sha, notes)
        factor = reduction_factor(width, height)
        if fmt == "jpeg" and image.mode == "RGB" and factor > 1:
            # Colour measured on a 1/8-scale decode; the image itself decoded as its luma channel only, at the
            # largest DCT scale (1/2, 1/4, 1/8) that keeps it at least the reduced size.
            mean_chroma, spread = _jpeg_colour(data, width, height)
            image.draft("L", (-(-width // factor), -(-height // factor)))
        image.load()
        if image.mode in _SIXTEEN_BIT_MODES:
            # 16-bit grey. Image.convert('L') would clip every value above 255 to white, so go through numpy.
            stored = np.asarray(image)
            image.close()
            factor = reduction_factor(stored.shape[1], stored.shape[0])
            values = reduce_array(stored, factor) if factor > 1 else stored.astype(np.float32)
            del stored
            pixels, windowing = percentile_window(_orient(values, orientation))
            bit_depth = 16
        else:
            if image.mode not in ("L", "LA", "1"):  # RGB, RGBA, P, PA, CMYK, YCbCr...
                image, mean_chroma, spread = _measure_colour(image)
            grey = image if image.mode == "L" else image.convert("L")
            if grey is not image:
                image.close()
            factor = reduction_factor(*grey.size)
            if factor > 1:
                grey = grey.reduce(factor)
            pixels = np.divide(_orient(np.asarray(grey), orientation), 255, dtype=np.float32)
            windowing = "full range (8-bit)"
            bit_depth = 8
    finally:
        image.close()
    if pixels.shape != _orient(np.empty(original_shape, dtype=np.uint8), orientation).shape:
        notes.append(
            f"The image ({width} x {height} pixels) was reduced to {pixels.shape[1]} x {pixels.shape[0]} "
            "for analysis."
        )
    return XrayImage(
        pixels=finish(np.ascontiguousarray(pixels)),
        source_format=fmt,
        original_shape=original_shape,
        sha256=sha,
        bit_depth=bit_depth,
        windowing=windowing,
        mean_chroma=mean_chroma,
        chroma_spread=spread,
        notes=tuple(notes),
    )


def _exif_orientation(image: Image.Image, sha: str, notes: list[str]) -> int:
    try:
        return int(image.getexif().get(0x0112) or 1)
    except Exception as exc:  # a malformed EXIF block should not cost the doctor the image
        log.warning("image %s: EXIF orientation ignored (%s)", sha[:12], exc)
        notes.append("The orientation stored in the file could not be read; the image is shown as stored.")
        return 1


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` turned upright for an EXIF orientation (a view; 1 and unknown values: as stored)."""
    turn = _ORIENT.get(orientation)
    return turn(pixels) if turn is not None else pixels


def _measure_colour(image: Image.Image) -> tuple[Image.Image, float, float]:
    """(the image as RGB, mean chroma, spread), the colour measured on a copy at most ~1024 px a side."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if rgb is not image:
        image.close()
    step = max(1, min(rgb.size) // 1024)
    small = rgb.reduce(step) if step > 1 else rgb
    mean_chroma, spread = colour_stats(np.asarray(small))
    return rgb, mean_chroma, spread


def _jpeg_colour(data: bytes, width: int, height: int) -> tuple[float, float]:
    with Image.open(io.BytesIO(data)) as small:
        small.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        return colour_stats(np.asarray(small.convert("RGB")))


def _check_png_complete(data: bytes) -> None:
    """Refuse a PNG whose image data ends before the image its header declares (Pillow fills the rest with
    black without a word). Decompresses the IDAT stream once, a bounded piece at a time, keeping nothing."""
    if len(data) < 33:
        raise TruncatedFile("PNG header cut short")
    width, height, depth, colour, _compression, _filter, interlace = struct.unpack(">IIBBBBB", data[16:29])
    channels = _PNG_CHANNELS.get(colour, 4)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        pass_w, pass_h = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if pass_w and pass_h:
            expected += pass_h * (1 + -(-(pass_w * channels * depth) // 8))
    inflater = zlib.decompressobj()
    produced, pos = 0, 8
    try:
        while pos + 8 <= len(data) and produced < expected:
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            if kind == b"IDAT":
                chunk = data[pos + 8 : pos + 8 + length]
                while chunk and produced < expected:
                    produced += len(inflater.decompress(chunk, 1 << 20))
                    chunk = inflater.unconsumed_tail
            elif kind == b"IEND":
                break
            pos += 12 + length
    except zlib.error as exc:
        raise CorruptImage(f"PNG image data does not decompress: {exc}") from exc
    if produced < expected:
        raise TruncatedFile(f"PNG image data holds {produced} of {expected} bytes")


def _describe_unsupported(data: bytes) -> str:
    for magic, offset, what in _OTHER_MAGICS:
        if data[offset : offset + len(magic)] == magic:
            return what
    return "not an image this software recognises"


def _extension_matches(filename: str, fmt: SourceFormat) -> bool:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return ext in {"png": {"png"}, "jpeg": {"jpg", "jpeg", "jpe"}, "dicom": {"dcm", "dicom", ""}}[fmt]
