"""The film as reports show it: the stored preview with the detector's boxes (red, "label 87%") and the
doctor's boxes of the current reading (blue, "label (doctor)"), drawn from the stored files.

A doctor's box that repeats a detector box (same label, corners within 2 px) is drawn once, as the
detector's. Boxes are in the pixels of the film as analysed (``DiagnosisView.width`` x ``height``); the
preview is that image shrunk to at most ``PREVIEW_MAX_SIDE``, so every box is scaled by the same factor.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from core.handoff.content import ReportContent
from core.ml.boxes import Box

AI_RGB = (220, 30, 40)
DOCTOR_RGB = (20, 110, 230)


def _same(a: Box, b: Box) -> bool:
    return a.label == b.label and all(abs(x - y) <= 2 for x, y in zip(a.box, b.box, strict=True))


def doctor_boxes(content: ReportContent) -> tuple[Box, ...]:
    """The reading's boxes that are not a detector box kept unchanged."""
    if content.reading is None:
        return ()
    return tuple(b for b in content.reading.boxes if not any(_same(b, d) for d in content.view.boxes))


def annotated_film(content: ReportContent, max_side: int = 1400) -> Image.Image:
    """The film (RGB) with every box drawn, at most ``max_side`` px on its long side."""
    view = content.view
    with Image.open(view.preview_path) as stored:
        base = stored.convert("RGB")
    if max(base.size) > max_side:
        base.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    scale = base.width / max(view.width, 1)
    draw = ImageDraw.Draw(base)
    side = max(base.size)
    width = max(2, round(side / 300))
    font = ImageFont.load_default(size=max(10, round(side / 45)))
    shown = [(b, f"{b.label} {b.confidence:.0%}", AI_RGB) for b in view.boxes]
    shown += [(b, f"{b.label} (doctor)", DOCTOR_RGB) for b in doctor_boxes(content)]
    for box, text, colour in shown:
        x1, y1, x2, y2 = (v * scale for v in box.box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y1 + width
        tx = min(max(x1, 0), max(base.width - tw - 2 * width, 0))
        draw.rectangle((tx, ty, tx + tw + 2 * width, ty + th + 2 * width), fill=colour)
        draw.text((tx + width - left, ty + width - top), text, fill=(255, 255, 255), font=font)
    return base


__all__ = ["AI_RGB", "DOCTOR_RGB", "annotated_film", "doctor_boxes"]
