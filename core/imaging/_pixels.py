"""Pixel helpers shared by the readers, the scope rules, the models and the renderings.

``to_uint8`` is the one conversion of [0, 1] grey pixels to 8-bit in the product: display images, the
8-bit inputs of both models, the scope rules and the training export all go through it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from core.config import Settings
from core.imaging.errors import TooManyPixels

# Robust windowing for high-bit-depth data that carries no window of its own.
PERCENTILE_WINDOW = (0.5, 99.5)

#: Decoded images larger than this are reduced by a whole factor (box average) as soon as they are decoded,
#: before any floating-point copy: every chest detector (at most about 4300 x 4300 px, 18.5 MP) is kept
#: whole, and a 49 MP file costs what a 12 MP one does downstream. The analysed (stored) frame is the
#: reduced one.
MAX_ANALYSIS_PIXELS = 20_000_000
#: Bytes the decoder may allocate for the whole image (Pillow keeps RGB, RGBA, CMYK and 32-bit grey at
#: 4 bytes a pixel): refused over this before decoding, whatever the pixel limit is set to.
MAX_DECODED_BYTES = 256 * 2**20
#: Images decoded at once in one process: each decode briefly holds up to MAX_DECODED_BYTES, so two
#: concurrent uploads of the largest files stay under the 500 MB a serving process may use for them.
DECODE_SLOTS = 2
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
# Rows of about this many pixels are processed at a time when a whole-image float copy is not needed.
_BAND_PIXELS = 1 << 21


@contextmanager
def decode_slot() -> Iterator[None]:
    """Hold one of the process's DECODE_SLOTS while decoding (waits while all are taken)."""
    with _decode_slots:
        yield


def check_decoded_bytes(width: int, height: int, bytes_per_pixel: int) -> None:
    """Refuse, before decoding, an image whose decoded form would exceed MAX_DECODED_BYTES."""
    if width * height * bytes_per_pixel > MAX_DECODED_BYTES:
        raise TooManyPixels(
            f"{width}x{height} x {bytes_per_pixel} B = {width * height * bytes_per_pixel} B decoded "
            f"> {MAX_DECODED_BYTES}",
            user_message=(
                f"This image declares {width} x {height} pixels, too many to be analysed safely; the file "
                "may be damaged."
            ),
        )


def reduction_factor(width: int, height: int) -> int:
    """The smallest whole factor that brings ``width`` x ``height`` to at most MAX_ANALYSIS_PIXELS."""
    factor = 1
    while -(-width // factor) * -(-height // factor) > MAX_ANALYSIS_PIXELS:
        factor += 1
    return factor


def reduce_array(arr: np.ndarray, factor: int) -> np.ndarray:
    """Box-average ``arr`` (height x width [x channels]) by ``factor`` into float32, band by band (no
    float copy of the whole input); the last row and column of boxes may be partial, as Pillow's reduce."""
    height, width = arr.shape[:2]
    out_h, out_w = -(-height // factor), -(-width // factor)
    out = np.empty((out_h, out_w, *arr.shape[2:]), dtype=np.float32)
    col_starts = np.arange(0, width, factor)
    col_counts = np.diff(np.append(col_starts, width)).astype(np.float32)
    band = max(1, _BAND_PIXELS // max(1, width * factor))  # output rows per band
    for o0 in range(0, out_h, band):
        o1 = min(out_h, o0 + band)
        rows = np.asarray(arr[o0 * factor : o1 * factor], dtype=np.float32)
        row_starts = np.arange(0, rows.shape[0], factor)
        sums = np.add.reduceat(np.add.reduceat(rows, row_starts, axis=0), col_starts, axis=1)
        counts = np.multiply.outer(
            np.minimum(factor, rows.shape[0] - row_starts).astype(np.float32), col_counts
        )
        out[o0:o1] = sums / (counts[..., None] if arr.ndim == 3 else counts)
    return out


def map_bands(arr: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` (a per-pixel transform) applied to ``arr`` a band of rows at a time, into one float32 array:
    the transform's own float64 temporaries never span the whole image."""
    out = np.empty(arr.shape[:2], dtype=np.float32)
    band = max(1, _BAND_PIXELS // max(1, int(np.prod(arr.shape[1:]))))
    for r0 in range(0, arr.shape[0], band):
        out[r0 : r0 + band] = fn(arr[r0 : r0 + band])
    return out


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` in [0, 1] as uint8 0-255 (rounded, clipped), for display and for 8-bit model inputs."""
    return np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def check_pixel_count(width: int, height: int, settings: Settings) -> None:
    if width * height > settings.max_image_pixels:
        raise TooManyPixels(
            f"{width}x{height} = {width * height} px > {settings.max_image_pixels}",
            user_message=(
                f"This image declares {width} x {height} pixels, more than the "
                f"{settings.max_image_pixels / 1e6:g} million this software accepts; the file may be damaged."
            ),
        )


def percentile_window(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Map the 0.5th-99.5th percentile of ``values`` onto [0, 1] (robust to a few hot or dead pixels)."""
    step = stride(values)
    low, high = np.percentile(values[::step, ::step], PERCENTILE_WINDOW)
    if high <= low:  # a constant image: leave it flat, check_plausible_chest refuses it as blank
        return np.zeros(values.shape, dtype=np.float32), "constant image"
    # float32, in place when ``values`` is already a float32 array of its own (no float64 full-size copy)
    out = values if values.dtype == np.float32 and values.flags.writeable else values.astype(np.float32)
    out -= np.float32(low)
    out /= np.float32(high - low)
    return out, f"percentile window {PERCENTILE_WINDOW[0]:g}-{PERCENTILE_WINDOW[1]:g}% ({low:g}..{high:g})"


def stride(arr: np.ndarray) -> int:
    # Statistics on about a million pixels are as good as on all of them, and faster on a 4k detector image.
    return max(1, int(np.sqrt(arr.shape[0] * arr.shape[1] / 1_000_000)))


def luma(rgb: np.ndarray) -> np.ndarray:
    # ITU-R 601-2, the weights Pillow's convert('L') uses, so RGB PNGs and RGB DICOMs turn grey the same way.
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def colour_stats(rgb: np.ndarray) -> tuple[float, float]:
    """(mean chroma, chromaticity spread) of a uint8 RGB image, on a copy at most 256 px on a side.

    Mean chroma is the average of max(R,G,B) - min(R,G,B). The spread is the standard deviation of the
    chromaticity (each pixel's R, G, B divided by their sum) over pixels that are not dark: a grey image
    tinted one colour has constant chromaticity (spread ~0) whatever its tint, a photograph has many hues.
    """
    small = Image.fromarray(np.ascontiguousarray(rgb[..., :3]))
    small.thumbnail((256, 256))
    a = np.asarray(small, dtype=np.float64) / 255.0
    chroma = float((a.max(axis=-1) - a.min(axis=-1)).mean())
    total = a.sum(axis=-1)
    lit = total > 0.3  # dark pixels have noisy chromaticity
    if int(lit.sum()) < 100:
        return chroma, 0.0
    chromaticity = a[lit] / total[lit][:, None]
    spread = float(np.sqrt(chromaticity.var(axis=0).sum()))
    return chroma, spread


def finish(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.float32 and pixels.flags.writeable and pixels.flags.c_contiguous:
        out = np.clip(pixels, 0.0, 1.0, out=pixels)  # in place: no second full-size copy
    else:
        out = np.ascontiguousarray(np.clip(pixels, 0.0, 1.0), dtype=np.float32)
    out.flags.writeable = False  # XrayImage is frozen; so are its pixels
    return out
