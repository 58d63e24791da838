"""Pixel helpers shared by the readers, the scope rules, the models and the renderings.

``to_uint8`` is the one conversion of [0, 1] grey pixels to 8-bit in the product: display images, the
8-bit inputs of both models, the scope rules and the training export all go through it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.config import Settings
from core.imaging.errors import TooManyPixels

# Robust windowing for high-bit-depth data that carries no window of its own.
PERCENTILE_WINDOW = (0.5, 99.5)


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
        return np.zeros_like(values, dtype=np.float64), "constant image"
    return (values - low) / (high - low), (
        f"percentile window {PERCENTILE_WINDOW[0]:g}-{PERCENTILE_WINDOW[1]:g}% ({low:g}..{high:g})"
    )


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
    out = np.clip(pixels, 0.0, 1.0).astype(np.float32)
    out.flags.writeable = False  # XrayImage is frozen; so are its pixels
    return out
