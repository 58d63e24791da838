"""The display files of a study: the grey preview and thumbnail, the boxes overlay and the heat maps.

Everything here is rendered in memory from the analysed image; :mod:`core.xray.diagnosis` writes the files
(content addressed) when it saves the study. A finding's heat map over the film is rendered on first view
and cached on disk (:func:`heatmap_image`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core import imaging
from core.errors import NotFound
from core.imaging import storage
from core.ml import inference, registry
from core.ml.classifier import Classifier, colorize, overlay_heatmap
from core.ml.detector import draw_detections

if TYPE_CHECKING:
    from core.xray.diagnosis import DiagnosisView

#: Longest side of the stored display image. A 3000 x 3000 detector image is shown (and zoomed) from
#: this; the original stays on disk untouched.
PREVIEW_MAX_SIDE = 2048
THUMBNAIL_SIDE = 256
JPEG_QUALITY = 90
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")

__all__ = [
    "JPEG_QUALITY",
    "PREVIEW_MAX_SIDE",
    "THUMBNAIL_SIDE",
    "HeatMap",
    "Rendered",
    "heatmap_image",
    "heatmap_layer",
    "render",
    "windowed",
]

#: Longest side of a heat map layer: the map has no detail finer than one grid cell, so the viewer stretches it.
HEAT_LAYER_SIDE = 256
HEAT_LAYER_ALPHA = 0.55


def encode_jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


@dataclass(frozen=True)
class Rendered:
    """The display files of one analysis, encoded: JPEGs, and the heat maps as an ``.npz``."""

    preview: bytes
    thumbnail: bytes
    overlay: bytes | None  # the preview with the detector's boxes; None when there were none
    cams: bytes


def render(image: imaging.XrayImage, analysis: inference.Analysis, classifier: Classifier) -> Rendered:
    """The display files of one analysis, in memory (written to disk only by the save)."""
    grey = Image.fromarray(imaging.to_uint8(image.pixels))
    scale = 1.0
    if max(grey.size) > PREVIEW_MAX_SIDE:
        scale = PREVIEW_MAX_SIDE / max(grey.size)
        grey = grey.resize(
            (round(grey.width * scale), round(grey.height * scale)),
            Image.Resampling.BILINEAR,
            reducing_gap=2.0,
        )
    thumb = grey.copy()
    thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    overlay = None
    found = analysis.detection.detections if analysis.detection is not None else ()
    if found:
        scaled = [d.scaled(scale) for d in found]
        shown = np.asarray(grey, dtype=np.float32) / 255.0
        overlay = encode_jpeg(draw_detections(shown, scaled, max_side=max(grey.size)))
    result = analysis.classification
    cams = np.stack([classifier.heatmap(result, name) for name in classifier.finding_names]).astype(
        np.float16
    )
    buffer = io.BytesIO()
    np.savez(buffer, names=np.array(classifier.finding_names), cams=cams)
    return Rendered(encode_jpeg(grey), encode_jpeg(thumb), overlay, buffer.getvalue())


@dataclass(frozen=True)
class HeatMap:
    """A finding's heat map blended over the film; ``flat`` when the map is zero everywhere (no region of
    the film raised that finding's score, so there is nothing to show)."""

    finding: str
    path: Path
    flat: bool


def localised_findings(classifier_version: str) -> tuple[str, ...]:
    """The findings whose heat maps this classifier version's card says point at the finding (the pointing
    game of ``core.training.evaluate_heatmaps``): the only ones the result page offers a heat map for."""
    card = registry.read_card("classifier", classifier_version)
    return tuple(f["name"] for f in card.get("findings", ()) if f.get("localised") is True)


def heatmap_image(view: DiagnosisView, finding: str) -> HeatMap:
    """``finding``'s heat map over the display image (rendered once, then cached on disk)."""
    if view.heatmap_path is None:
        raise NotFound("This diagnosis has no heat maps.")
    if finding not in [f.name for f in view.findings]:
        raise NotFound(f"No finding {finding!r} in this diagnosis.")
    with np.load(view.heatmap_path) as saved:  # a few hundred bytes: cheaper than a lookup elsewhere
        index = [str(n) for n in saved["names"]].index(finding)
        cam = saved["cams"][index].astype(np.float32)

    def draw() -> bytes:
        base = np.asarray(Image.open(view.preview_path).convert("L"), dtype=np.float32) / 255.0
        return encode_jpeg(overlay_heatmap(base, cam, max_side=PREVIEW_MAX_SIDE))

    name = _SAFE.sub("_", finding)
    path = storage.FileStore().cached(f"{storage.CACHE}/heat/{view.diagnosis_id}/{name}.jpg", draw)
    return HeatMap(finding, path, flat=not bool(cam.max() > 0))


def _cam(view: DiagnosisView, finding: str) -> np.ndarray:
    if view.heatmap_path is None:
        raise NotFound("This diagnosis has no heat maps.")
    if finding not in [f.name for f in view.findings]:
        raise NotFound(f"No finding {finding!r} in this diagnosis.")
    with np.load(view.heatmap_path) as saved:
        index = [str(n) for n in saved["names"]].index(finding)
        return np.asarray(saved["cams"][index], dtype=np.float32)


def heatmap_layer(view: DiagnosisView, finding: str) -> HeatMap:
    """``finding``'s heat map alone, as a small RGBA PNG with the film's aspect (transparent where the map is
    cold): the viewer lays it over the film as an overlay that can be hidden, never burned into the pixels.
    Rendered once, then cached on disk."""
    cam = _cam(view, finding)
    scale = HEAT_LAYER_SIDE / max(view.width, view.height, 1)
    size = (max(1, round(view.width * scale)), max(1, round(view.height * scale)))

    def draw() -> bytes:
        grid = Image.fromarray((np.clip(cam, 0, 1) * 255 + 0.5).astype(np.uint8))
        smooth = np.asarray(grid.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
        rgba = np.dstack([colorize(smooth), (smooth * HEAT_LAYER_ALPHA * 255 + 0.5).astype(np.uint8)])
        out = io.BytesIO()
        Image.fromarray(rgba).save(out, format="PNG", optimize=True)
        return out.getvalue()

    name = _SAFE.sub("_", finding)
    path = storage.FileStore().cached(f"{storage.CACHE}/heat-layer/{view.diagnosis_id}/{name}.png", draw)
    return HeatMap(finding, path, flat=not bool(cam.max() > 0))


def windowed(preview: Path, level: float = 0.5, width: float = 1.0, invert: bool = False) -> bytes:
    """The grey display image with a window/level applied (``level`` the window's centre and ``width`` its
    width, both as fractions of the grey range) and optionally inverted, as JPEG bytes. The defaults give the
    stored preview's own bytes back unchanged."""
    if abs(level - 0.5) < 1e-6 and abs(width - 1.0) < 1e-6 and not invert:
        return preview.read_bytes()
    low = (level - width / 2) * 255.0
    span = max(width * 255.0, 1.0)
    table = [min(255, max(0, round((v - low) / span * 255.0))) for v in range(256)]
    if invert:
        table = [255 - v for v in table]
    with Image.open(preview) as image:
        return encode_jpeg(image.convert("L").point(table))
