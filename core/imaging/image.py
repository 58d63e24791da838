"""The decoded radiograph every reader returns and every check and model takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from core.imaging.dicom import DicomInfo

SourceFormat = Literal["png", "jpeg", "dicom"]


@dataclass(frozen=True)
class XrayImage:
    """A decoded radiograph, ready for the models and the pages.

    ``pixels`` is float32, height x width, in [0, 1], air dark and bone bright, and read-only (models copy
    before they change it). ``original_shape`` is (height, width) as stored in the file, before any EXIF
    rotation. ``windowing`` says how stored values became [0, 1] (for the model card and the audit trail).
    ``mean_chroma`` and ``chroma_spread`` describe the colour of RGB sources (0 for grey ones); ``notes``
    lists anything the doctor should know about how the file was read (e.g. only the first frame was used).
    """

    pixels: np.ndarray
    source_format: SourceFormat
    original_shape: tuple[int, int]
    sha256: str
    bit_depth: int
    dicom: DicomInfo | None = None
    windowing: str = "full range"
    mean_chroma: float = 0.0
    chroma_spread: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of ``pixels``."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))
