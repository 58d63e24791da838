"""One box type: a labelled region of a radiograph, from the detector or drawn by a doctor.

Corners are in the pixels of the original image as analysed (after any EXIF rotation; x to the right, y
down), whatever size the image was shown at. ``score`` is the detector's confidence; a doctor's box has none.

Stored JSON. Two shapes exist in the database, and both stay as they are:

* a scored box (the detector's read; ``diagnoses.detections``, and ``detections`` in the output of
  ``python -m core diagnose --json``): ``{"label", "confidence", "box": [x1, y1, x2, y2]}``, the confidence
  rounded to 4 decimals and the corners to 0.1 px;
* an unscored box (a doctor's reading; ``corrections.boxes``, which the training export reads by these
  keys): ``{"label", "x1", "y1", "x2", "y2"}``.

:meth:`Box.from_json` reads either shape; :meth:`Box.to_json` writes the shape of the column the box belongs
to (scored: the first, unscored: the second), so every row is written exactly as before and old rows load
unchanged. Moving to a single stored shape would need a data migration of both columns and a new export
format, which this module does not decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["SOURCE_TO_FINDING", "Box", "class_findings"]

#: a box source label (NIH, ChestX-Det, RSNA) -> the classifier finding it shows
SOURCE_TO_FINDING: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Effusion",
    "Infiltrate": "Infiltration",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pneumonia": "Pneumonia",
    "Lung Opacity (RSNA pneumonia)": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Pleural Thickening": "Pleural_Thickening",
    "Emphysema": "Emphysema",
    "Fibrosis": "Fibrosis",
}


def class_findings(detector_card: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Each detector class -> the classifier findings it shows (from the card's class members)."""
    out: dict[str, tuple[str, ...]] = {}
    for c in detector_card.get("classes", ()):
        members = [SOURCE_TO_FINDING.get(m) for m in c.get("members", ())]
        out[str(c["name"])] = tuple(dict.fromkeys(m for m in members if m))
    return out


@dataclass(frozen=True)
class Box:
    """A labelled region in the original image's pixels; ``score`` is the detector's confidence, if any."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float | None = None

    @classmethod
    def scored(cls, label: str, score: float, x1: float, y1: float, x2: float, y2: float) -> Box:
        """A detector's box, in the order its output gives them (label, confidence, corners)."""
        return cls(label, x1, y1, x2, y2, score)

    @classmethod
    def from_model(cls, box: Box) -> Box:
        """A doctor's copy of a model's box: the same label and corners, no score."""
        return replace(box, score=None)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The corners (x1, y1, x2, y2)."""
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def confidence(self) -> float:
        """The detector's score; ``AttributeError`` for a box without one (a doctor's)."""
        if self.score is None:
            raise AttributeError(f"the {self.label!r} box has no confidence: it was not detected")
        return self.score

    def scaled(self, factor: float) -> Box:
        """The same box on a copy of the image resized by ``factor``."""
        return replace(
            self, x1=self.x1 * factor, y1=self.y1 * factor, x2=self.x2 * factor, y2=self.y2 * factor
        )

    def to_json(self) -> dict[str, Any]:
        """The stored shape: ``{label, confidence, box}`` when scored, else ``{label, x1, y1, x2, y2}``."""
        if self.score is not None:
            return {
                "label": self.label,
                "confidence": round(self.score, 4),
                "box": [round(v, 1) for v in self.box],
            }
        return {"label": self.label, "x1": self.x1, "y1": self.y1, "x2": self.x2, "y2": self.y2}

    as_dict = to_json  # the name the other result objects use

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Box:
        """A box from either stored shape; ``KeyError``, ``TypeError`` or ``ValueError`` when it is neither."""
        if "box" in value:
            x1, y1, x2, y2 = (float(v) for v in value["box"])
            return cls(str(value["label"]), x1, y1, x2, y2, float(value["confidence"]))
        score = value.get("confidence")
        return cls(
            str(value["label"]),
            float(value["x1"]),
            float(value["y1"]),
            float(value["x2"]),
            float(value["y2"]),
            None if score is None else float(score),
        )
