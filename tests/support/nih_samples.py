"""Tiny folders shaped like ../shared/data, made from the project's own samples (no ../shared needed)."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "assets" / "samples"


def mini_nih_boxes(root: Path) -> Path:
    """A folder shaped like shared/data/nih_boxes, made from the project's own samples (no ../shared needed):
    the four PNGs as 512-px JPEGs in train, two of them again in val, with their radiologist boxes."""
    folder = root / "nih_boxes"
    (folder / "images_512").mkdir(parents=True)
    with (SAMPLES / "labels.csv").open() as f:
        samples = list(csv.DictReader(f))
    images, boxes = [], []
    for split, rows in (("train", samples), ("val", samples[:2])):
        for row in rows:
            name = f"{split}_{row['file']}"
            with Image.open(SAMPLES / row["file"]) as im:
                im.convert("L").resize((512, 512)).save(
                    folder / "images_512" / f"{name[:-4]}.jpg", quality=90
                )
            spec = row["boxes_1024px(class:x1,y1,x2,y2;...)"]
            parts = [b for b in spec.split(";") if b]
            images.append([name, f"images_512/{name[:-4]}.jpg", split, name, len(parts)])
            for part in parts:
                label, coords = part.split(":")
                boxes.append([name, label, *coords.split(","), "sample", split, name])
            if not parts:
                boxes.append([name, "", "", "", "", "", "sample", split, name])
    with (folder / "images.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["image_index", "file", "split", "patient_id", "n_boxes"], *images])
    with (folder / "boxes_1024px.csv").open("w", newline="") as f:
        header = ["image_index", "label", "x1", "y1", "x2", "y2", "box_source", "split", "patient_id"]
        csv.writer(f).writerows([header, *boxes])
    return root
