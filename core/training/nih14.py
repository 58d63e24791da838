"""The NIH ChestX-ray14 subset in ``<shared data>/nih14``: labels, patient-disjoint splits and pixel arrays."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

log = logging.getLogger(__name__)

# Column order of labels.csv; the model card copies it, so inference never hard-codes it.
FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)


@dataclass(frozen=True)
class Split:
    """One split at one size: grey uint8 images (N, S, S), 0/1 labels (N, 14) and who they belong to."""

    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    image_index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def read_patient_list(path: Path) -> set[str]:
    """Patient ids, one a line (blank lines and ``#`` comments ignored), as strings."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return {line for line in lines if line}


def without_patients(split: Split, patients: set[str]) -> Split:
    """``split`` less every image of the given patients (ids compared as strings)."""
    keep = ~np.isin(split.patient_ids.astype(str), sorted(patients))
    return Split(split.images[keep], split.labels[keep], split.patient_ids[keep], split.image_index[keep])


def read_table(data_dir: Path) -> pd.DataFrame:
    """labels.csv without the rows that duplicate another row's image."""
    table = pd.read_csv(data_dir / "nih14" / "labels.csv")
    table = table[table["duplicate_of_other_row"] == 0].reset_index(drop=True)
    missing = [f for f in FINDINGS if f not in table.columns]
    if missing:
        raise ValueError(f"labels.csv lacks columns {missing}")
    return table


def dataset_hash(data_dir: Path) -> str:
    """sha256 over labels.csv and every image file, so a model card pins exactly what it was trained on."""
    digest = hashlib.sha256((data_dir / "nih14" / "labels.csv").read_bytes())
    for rel in sorted(read_table(data_dir)["path"]):
        digest.update(rel.encode())
        digest.update(hashlib.sha256((data_dir / "nih14" / rel).read_bytes()).digest())
    return digest.hexdigest()


def _load_grey(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        grey = im.convert("L")
        # LANCZOS when shrinking matches how inference shrinks 1024-px originals; 64-px rows are upsampled.
        return np.asarray(grey.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def load_splits(data_dir: Path, size: int, cache_dir: Path | None = None) -> dict[str, Split]:
    """Train/val/test splits at ``size`` px, cached as .npz because decoding 3,400 PNGs takes a while."""
    cache = cache_dir / f"nih14_{size}.npz" if cache_dir else None
    table = read_table(data_dir)
    if cache and cache.exists():
        arrays = np.load(cache, allow_pickle=False)
        images = arrays["images"]
        if len(images) != len(table):
            log.warning("cache %s is stale (%d != %d rows); rebuilding", cache, len(images), len(table))
            images = None
    else:
        images = None
    if images is None:
        log.info("decoding %d images at %d px", len(table), size)
        images = np.stack([_load_grey(data_dir / "nih14" / p, size) for p in table["path"]])
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, images=images)
    labels = table[list(FINDINGS)].to_numpy(dtype=np.float32)
    out = {}
    for name in ("train", "val", "test"):
        mask = (table["split"] == name).to_numpy()
        out[name] = Split(
            images[mask],
            labels[mask],
            table["patient_id"].to_numpy()[mask],
            table["image_index"].to_numpy()[mask],
        )
    return out
