"""The radiologist boxes in ``<shared data>/nih_boxes`` as a YOLO data set, with the detector's class set.

    python -m core.training.nih_boxes [--out var/datasets/nih_boxes]

Source: 1,030 NIH images at 512 px (JPEG), 1,806 boxes in the original 1024-px frame from three annotation
vocabularies (NIH BBox_List_2017, ChestX-Det, RSNA pneumonia), a patient-disjoint split, and 24
radiologist-reviewed images without any box (kept as negatives: an empty label file).

Class set (the rationale the model card repeats; counts are source boxes over all splits):

- Kept as they are: Effusion 297, Atelectasis 204, Cardiomegaly 178, Pneumothorax 113, Fracture 57
  (>= 50 boxes; Fracture has only 4 validation and 8 test boxes, so its figures are rough).
- **Lung Opacity** = ChestX-Det Consolidation 207 + RSNA Lung Opacity 199 + NIH Pneumonia 120 + NIH
  Infiltrate 121 (ChestX-Det's "Infiltrate" is NIH's "Infiltration"). These are the same airspace opacities
  named by three vocabularies: on images carrying two of them, the boxes overlap at IoU > 0.3 in about half
  of the pairs (Pneumonia-Consolidation 35/56, RSNA-Infiltrate 22/40, RSNA-Pneumonia 20/39). Kept apart,
  the detector would be asked to tell annotators apart, not findings. RSNA's class was defined as "opacity
  suggestive of pneumonia", which is this umbrella.
- **Nodule/Mass** = Nodule 114 + Mass 93: one lesion type split by size (3 cm), as VinDr-CXR also merges it.
- Dropped (too few to learn or to measure, 0-2 test boxes each): Fibrosis 34, Pleural Thickening 25,
  Emphysema 17, Calcification 14, Diffuse Nodule 13. Their images stay, with their other boxes; an image
  left with no box teaches "nothing of these classes here", which is true.
- Boxes of one class on one image that overlap at IoU >= 0.5 (65 pairs, nearly all Lung Opacity named by
  two vocabularies) are fused into their mean box, so one opacity is one target rather than two
  near-duplicates that would cost recall at IoU 0.5.

The images are symlinked (not copied) and the labels written as ``class cx cy w h`` normalised to [0, 1].
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.config import get_settings
from core.training.detector_metrics import iou_matrix

log = logging.getLogger(__name__)

SOURCE_FRAME = 1024  # boxes_1024px.csv coordinates are in the NIH 1024 x 1024 frame
SPLITS = ("train", "val", "test")
FUSE_IOU = 0.5

# source label -> detector class (None: dropped). The detector's class order is CLASSES.
CLASS_MAP: dict[str, str | None] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Effusion",
    "Consolidation": "Lung Opacity",
    "Lung Opacity (RSNA pneumonia)": "Lung Opacity",
    "Pneumonia": "Lung Opacity",
    "Infiltrate": "Lung Opacity",
    "Nodule": "Nodule/Mass",
    "Mass": "Nodule/Mass",
    "Pneumothorax": "Pneumothorax",
    "Fracture": "Fracture",
    "Fibrosis": None,
    "Pleural Thickening": None,
    "Emphysema": None,
    "Calcification": None,
    "Diffuse Nodule": None,
}
CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Lung Opacity",
    "Nodule/Mass",
    "Pneumothorax",
    "Fracture",
)


@dataclass(frozen=True)
class GroundTruth:
    """One image's boxes, in the pixels of its file (``image_px`` wide), after mapping and fusion."""

    image_index: str
    file: Path
    split: str
    boxes: np.ndarray  # (N, 4) float x1, y1, x2, y2
    classes: np.ndarray  # (N,) int index into CLASSES


def data_root(data_dir: Path | None = None) -> Path:
    return (data_dir or get_settings().shared_data_dir) / "nih_boxes"


def class_members() -> dict[str, list[str]]:
    """Detector class -> the source labels it gathers (for the model card)."""
    members: dict[str, list[str]] = {c: [] for c in CLASSES}
    for source, target in CLASS_MAP.items():
        if target is not None:
            members[target].append(source)
    return members


def dataset_hash(data_dir: Path | None = None) -> str:
    """sha256 over both tables and every image file, so the model card pins exactly what it was trained on."""
    root = data_root(data_dir)
    digest = hashlib.sha256()
    for table in ("images.csv", "boxes_1024px.csv"):
        digest.update((root / table).read_bytes())
    for rel in sorted(pd.read_csv(root / "images.csv")["file"]):
        digest.update(rel.encode())
        digest.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return digest.hexdigest()


def fuse_duplicates(boxes: np.ndarray, iou: float = FUSE_IOU) -> np.ndarray:
    """Boxes (of one class on one image) overlapping at >= ``iou``, transitively, replaced by their mean."""
    n = len(boxes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    overlaps = iou_matrix(boxes, boxes)
    for i in range(n):
        for j in range(i + 1, n):
            if overlaps[i, j] >= iou:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return np.array([boxes[idx].mean(axis=0) for idx in groups.values()], dtype=np.float64).reshape(-1, 4)


def read_ground_truth(data_dir: Path | None = None) -> list[GroundTruth]:
    """Every image with its detector-class boxes in its file's pixels (negatives have none), split order."""
    root = data_root(data_dir)
    images = pd.read_csv(root / "images.csv")
    boxes = pd.read_csv(root / "boxes_1024px.csv")
    unknown = sorted(set(boxes["label"].dropna()) - set(CLASS_MAP))
    if unknown:
        raise ValueError(f"boxes_1024px.csv has labels with no class decision: {unknown}")
    boxes = boxes.dropna(subset=["label"])
    boxes = boxes.assign(cls=boxes["label"].map(CLASS_MAP)).dropna(subset=["cls"])
    by_image = dict(tuple(boxes.groupby("image_index")))
    out = []
    for row in images.itertuples(index=False):
        file = root / row.file
        with Image.open(file) as im:
            width, height = im.size
        if width != height:
            raise ValueError(f"{file} is not square; the 1024-px frame cannot be scaled to it")
        scale = width / SOURCE_FRAME
        all_boxes, all_classes = [], []
        group = by_image.get(row.image_index)
        if group is not None:
            for name, per_class in group.groupby("cls"):
                fused = fuse_duplicates(per_class[["x1", "y1", "x2", "y2"]].to_numpy(float)) * scale
                all_boxes.append(np.clip(fused, 0, width))
                all_classes.append(np.full(len(fused), CLASSES.index(str(name))))
        out.append(
            GroundTruth(
                image_index=row.image_index,
                file=file,
                split=row.split,
                boxes=np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4)),
                classes=np.concatenate(all_classes).astype(int) if all_classes else np.zeros(0, int),
            )
        )
    return out


def yolo_lines(gt: GroundTruth, size: int) -> list[str]:
    """``class cx cy w h`` lines normalised by the image side ``size``."""
    lines = []
    for (x1, y1, x2, y2), c in zip(gt.boxes, gt.classes, strict=True):
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        cx, cy, w, h = (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size
        lines.append(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def build_yolo_dataset(
    out_dir: Path, data_dir: Path | None = None, only: dict[str, int] | None = None
) -> Path:
    """Write ``out_dir`` (images symlinked, labels, data.yaml, summary.json); returns the data.yaml path.

    ``only`` keeps the first N images of each named split (``{"train": 4, "val": 2}``) for smoke runs and
    tests; a split it does not name is left out, except that val falls back to the train images.
    Rebuilding replaces the previous labels and links.
    """
    truth = read_ground_truth(data_dir)
    if only is not None:
        picked: list[GroundTruth] = []
        for split, n in only.items():
            picked += [g for g in truth if g.split == split][:n]
        truth = picked
    out_dir = Path(out_dir).resolve()
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        for kind in ("images", "labels"):
            folder = out_dir / kind / split
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.iterdir():
                old.unlink()
        (out_dir / "labels" / f"{split}.cache").unlink(missing_ok=True)
        rows = [g for g in truth if g.split == split]
        per_class = dict.fromkeys(CLASSES, 0)
        for g in rows:
            with Image.open(g.file) as im:
                size = im.size[0]
            link = out_dir / "images" / split / g.file.name
            os.symlink(g.file, link)
            lines = yolo_lines(g, size)
            (out_dir / "labels" / split / f"{g.file.stem}.txt").write_text("".join(f"{x}\n" for x in lines))
            for c in g.classes:
                per_class[CLASSES[c]] += 1
        counts[split] = {
            "images": len(rows),
            "negatives": sum(len(g.classes) == 0 for g in rows),
            **per_class,
        }
    val = "val" if counts["val"]["images"] else "train"
    yaml_lines = [
        f"path: {out_dir}",
        "train: images/train",
        f"val: images/{val}",
        f"test: images/{'test' if counts['test']['images'] else val}",
        "names:",
        *(f"  {i}: {json.dumps(name)}" for i, name in enumerate(CLASSES)),
    ]
    (out_dir / "data.yaml").write_text("\n".join(yaml_lines) + "\n")
    (out_dir / "summary.json").write_text(
        json.dumps(
            {
                "classes": list(CLASSES),
                "members": class_members(),
                "counts": counts,
                "fuse_iou": FUSE_IOU,
                "source": str(data_root(data_dir)),
            },
            indent=2,
        )
        + "\n"
    )
    log.info("YOLO data set in %s: %s", out_dir, {s: c["images"] for s, c in counts.items()})
    return out_dir / "data.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="default: <var>/datasets/nih_boxes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or get_settings().var_dir / "datasets" / "nih_boxes"
    data_yaml = build_yolo_dataset(out)
    summary = json.loads((out / "summary.json").read_text())
    for split, c in summary["counts"].items():
        print(
            f"{split:5s} {c['images']:4d} images ({c['negatives']} without box): "
            + ", ".join(f"{k} {c[k]}" for k in CLASSES)
        )
    print(f"wrote {data_yaml}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
