"""Doctors' reviewed studies, as exported by ``python -m core corrections export``, read back for retraining.

An export folder holds ``manifest.json`` (format 1, the sha256 of every file), ``labels.csv`` (one row per
reviewed study: ``image``, ``patient_key`` and the 14 findings as 1 present, 0 absent, empty uncertain),
``images/<sha256>.png`` and a YOLO copy under ``yolo/`` (``images/``, ``labels/``, ``classes.txt``).
Since issue 12 ``labels.csv`` also says per finding who set the label (``<finding>_source``: ``doctor``,
``accepted`` = the model's suggestion accepted unchanged, ``model`` = unset and exported empty, ``unknown``);
:meth:`ReviewedSet.weight_matrix` turns that into per-label loss weights (``accepted`` labels weigh
``accepted_weight``, default :data:`DEFAULT_ACCEPTED_WEIGHT`; older exports without the columns weigh 1).

Reading checks what retraining relies on, and refuses with a message that says what is wrong:

- every file the manifest lists is there with its hash (a half-copied or edited export is not trained on);
- the findings and detector classes are the ones the models being fine-tuned were trained on;
- **no test leakage**: a reviewed study whose image is one of the fixed test split's images (a demo or
  teaching upload of an NIH image, say) is dropped and counted, because training on it would inflate the
  very measurement that decides promotion. Images are compared as 32 x 32 thumbnails (mean absolute
  difference below 2 grey levels), which survives the re-encoding an upload and an export go through.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

FORMAT_VERSION = 1
#: Loss weight of a label the doctor accepted unchanged from the model's suggestion (a set label weighs 1):
#: a deliberate act, but not a finding-by-finding reading, so it counts half by default.
DEFAULT_ACCEPTED_WEIGHT = 0.5
#: Two grey levels of mean absolute difference between 32 x 32 thumbnails: the same radiograph re-encoded.
SAME_IMAGE_MAD = 2.0
THUMB = 32


class ExportError(ValueError):
    """An export folder that retraining cannot use; the message says why."""


@dataclass(frozen=True)
class ReviewedSet:
    """The usable reviewed studies of one export."""

    root: Path
    manifest: dict
    table: pd.DataFrame  # the labels.csv rows kept (leaked rows removed)
    findings: tuple[str, ...]
    dropped_as_test_images: tuple[str, ...]  # image paths (relative to root) equal to a test image

    def __len__(self) -> int:
        return len(self.table)

    def label_matrix(self) -> np.ndarray:
        """(N, 14) float32: 1 present, 0 absent, NaN uncertain (masked out of the loss)."""
        return self.table[list(self.findings)].to_numpy(dtype=np.float32)

    def weight_matrix(self, accepted_weight: float = DEFAULT_ACCEPTED_WEIGHT) -> np.ndarray:
        """(N, 14) float32 loss weights: 1 for a label the doctor set (or of unknown provenance),
        ``accepted_weight`` for one accepted unchanged, 0 where there is no label."""
        if not 0.0 <= accepted_weight <= 1.0:
            raise ValueError(f"accepted_weight must be within [0, 1], got {accepted_weight}")
        weights = np.ones((len(self.table), len(self.findings)), np.float32)
        for j, finding in enumerate(self.findings):
            column = f"{finding}_source"
            if column in self.table.columns:
                weights[(self.table[column] == "accepted").to_numpy(), j] = accepted_weight
        weights[np.isnan(self.label_matrix())] = 0.0
        return weights

    def source_counts(self) -> dict[str, int]:
        """How many labels of each source the kept rows carry (empty for exports before issue 12)."""
        columns = [f"{f}_source" for f in self.findings if f"{f}_source" in self.table.columns]
        if not columns:
            return {}
        values = self.table[columns].to_numpy().ravel()
        return {
            str(k): int(v) for k, v in zip(*np.unique(values.astype(str), return_counts=True), strict=True)
        }

    def images(self, size: int) -> np.ndarray:
        """(N, size, size) uint8, resized the way the NIH images are (Lanczos, no padding)."""
        return (
            np.stack([_grey(self.root / rel, size) for rel in self.table["image"]])
            if len(self)
            else (np.zeros((0, size, size), np.uint8))
        )

    def yolo_pairs(self) -> list[tuple[Path, Path]]:
        """(image, label file) of every kept study in the YOLO copy."""
        pairs = []
        for rel in self.table["image"]:
            stem = Path(rel).stem
            pairs.append(
                (self.root / "yolo" / "images" / f"{stem}.png", self.root / "yolo" / "labels" / f"{stem}.txt")
            )
        return pairs


def _grey(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 -> (N, 32, 32) float32 thumbnails for the leakage check."""
    return (
        np.stack(
            [
                np.asarray(Image.fromarray(im).resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32)
                for im in images
            ]
        )
        if len(images)
        else np.zeros((0, THUMB, THUMB), np.float32)
    )


def same_image_as(candidates: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each candidate thumbnail, whether some reference thumbnail is the same radiograph."""
    if not len(candidates) or not len(reference):
        return np.zeros(len(candidates), bool)
    ref = reference.reshape(len(reference), -1)
    out = np.zeros(len(candidates), bool)
    for i, c in enumerate(candidates.reshape(len(candidates), -1)):
        out[i] = float(np.abs(ref - c).mean(axis=1).min()) < SAME_IMAGE_MAD
    return out


def read_export(
    root: Path,
    findings: tuple[str, ...],
    detector_classes: tuple[str, ...] | None = None,
    test_images: np.ndarray | None = None,
) -> ReviewedSet:
    """Read and check an export; ``test_images`` (N, S, S uint8) are the fixed test split's images."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise ExportError(f"{root} is not a corrections export (no manifest.json).")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{root}: export format {manifest.get('format_version')!r}, this version reads {FORMAT_VERSION}."
        )
    bad = [
        rel
        for rel, digest in manifest.get("files", {}).items()
        if not (root / rel).is_file() or _sha256(root / rel) != digest
    ]
    if bad:
        raise ExportError(f"{root}: {len(bad)} file(s) missing or changed since export, e.g. {bad[0]}.")
    exported = tuple(manifest.get("classifier_findings", ()))
    if exported != tuple(findings):
        raise ExportError(
            f"{root}: the export's findings {list(exported)} are not the model's {list(findings)}."
        )
    if detector_classes is not None and tuple(manifest.get("detector_classes", ())) != tuple(
        detector_classes
    ):
        raise ExportError(
            f"{root}: the export's box classes {manifest.get('detector_classes')} are not the detector's "
            f"{list(detector_classes)}."
        )
    table = pd.read_csv(root / "labels.csv", dtype={"image": str, "patient_key": str})
    missing = [c for c in ("image", "patient_key", *findings) if c not in table.columns]
    if missing:
        raise ExportError(f"{root}/labels.csv lacks columns {missing}.")
    values = table[list(findings)]
    if not values.isin([0, 1]).where(values.notna(), True).all().all():
        raise ExportError(f"{root}/labels.csv: finding values must be 1, 0 or empty.")
    dropped: tuple[str, ...] = ()
    if test_images is not None and len(table):
        size = test_images.shape[1]
        mine = thumbnails(np.stack([_grey(root / rel, size) for rel in table["image"]]))
        leaked = same_image_as(mine, thumbnails(test_images))
        dropped = tuple(table.loc[leaked, "image"])
        table = table.loc[~leaked].reset_index(drop=True)
    return ReviewedSet(root, manifest, table, tuple(findings), dropped)


def default_version(parent: str) -> str:
    """A retrained candidate's name: its lineage's base name and the UTC minute, e.g. ``...-v1-ft202611240130``."""
    return f"{parent.split('-ft')[0]}-ft{datetime.now(UTC):%Y%m%d%H%M}"


def retraining_record(export: Path, reviewed: ReviewedSet, repeat: int, started: float) -> dict:
    """What a retrained card says about the corrections it learned from (``started``: a perf_counter)."""
    return {
        "export": str(Path(export).resolve()),
        "export_created_at": reviewed.manifest.get("created_at"),
        "reviewed_studies_used": len(reviewed),
        "repeat": repeat,
        "dropped_as_val_or_test_image": list(reviewed.dropped_as_test_images),
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
