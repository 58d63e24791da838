"""Reading radiographs: PNG, JPEG or DICOM bytes in, one normalised grayscale :class:`XrayImage` out.

:func:`read_image` decodes (the format from the bytes, never from the file name; size limits checked before
anything is decoded); :func:`read_chest_xray` adds the pixel plausibility rules of :mod:`core.imaging.scope`.
PNG and JPEG go through Pillow here; DICOM through :mod:`core.imaging.dicom`.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.config import Settings, get_settings
from core.imaging._pixels import check_pixel_count, colour_stats, finish, luma, percentile_window
from core.imaging.dicom import looks_like_dicom, read_dicom
from core.imaging.errors import (
    CorruptImage,
    EmptyFile,
    FileTooLarge,
    ImageRejected,
    TooManyPixels,
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


def _read_pillow(data: bytes, fmt: SourceFormat, sha: str, settings: Settings) -> XrayImage:
    # Pillow's own bomb guard is process-wide state (Image.MAX_IMAGE_PIXELS) that training code shares, so the
    # configured limit is enforced here from the header instead; Pillow's guard stays as a second line.
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            check_pixel_count(width, height, settings)
            probe.verify()  # PNG: walks every chunk and checks its CRC without decoding
        image = Image.open(io.BytesIO(data))
        image.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise CorruptImage(f"Pillow cannot identify the {fmt}: {exc}") from exc
    except Exception as exc:  # untrusted bytes make parsers raise anything: OSError, struct.error...
        raise CorruptImage(f"{fmt} decode failed: {type(exc).__name__}: {exc}") from exc

    notes: list[str] = []
    n_frames = int(getattr(image, "n_frames", 1))
    if n_frames > 1:  # an animated PNG: Pillow has loaded the first frame
        notes.append(f"The file holds {n_frames} frames; only the first is shown and analysed.")
    original_shape = (height, width)
    oriented: Image.Image = image
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception as exc:  # a malformed EXIF block should not cost the doctor the image
        log.warning("image %s: EXIF orientation ignored (%s)", sha[:12], exc)
        notes.append("The orientation stored in the file could not be read; the image is shown as stored.")

    mean_chroma = spread = 0.0
    mode = oriented.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey PNG. Image.convert('L') would clip every value above 255 to white, so go through numpy.
        raw = np.asarray(oriented).astype(np.float64)
        pixels, windowing = percentile_window(raw)
        bit_depth = 16
    else:
        if mode in ("L", "LA", "1"):
            grey = np.asarray(oriented.convert("L"), dtype=np.float64)
        else:  # RGB, RGBA, P, PA, CMYK, YCbCr...: measure the colour before it is thrown away
            rgb = np.asarray(oriented.convert("RGB"))
            mean_chroma, spread = colour_stats(rgb)
            grey = luma(rgb.astype(np.float64))
        pixels = grey / 255.0
        windowing = "full range (8-bit)"
        bit_depth = 8
    return XrayImage(
        pixels=finish(pixels),
        source_format=fmt,
        original_shape=original_shape,
        sha256=sha,
        bit_depth=bit_depth,
        windowing=windowing,
        mean_chroma=mean_chroma,
        chroma_spread=spread,
        notes=tuple(notes),
    )


def _describe_unsupported(data: bytes) -> str:
    for magic, offset, what in _OTHER_MAGICS:
        if data[offset : offset + len(magic)] == magic:
            return what
    return "not an image this software recognises"


def _extension_matches(filename: str, fmt: SourceFormat) -> bool:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return ext in {"png": {"png"}, "jpeg": {"jpg", "jpeg", "jpe"}, "dicom": {"dcm", "dicom", ""}}[fmt]
