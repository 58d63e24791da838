"""Fine-tune the active detector on the radiologist boxes plus doctors' reviewed boxes; publish a candidate.

    python -m core.training.retrain_detector EXPORT_DIR [--epochs 10] [--version NAME]

1. Starts from the active detector's ``model.pt`` (``--parent`` names another version).
2. Builds a YOLO data set whose train split is the NIH radiologist boxes' train split plus the export's
   reviewed studies (``yolo/images`` + ``yolo/labels``, each linked ``--repeat`` times), and whose val and
   test splits are the original ones, so the candidate is measured on the very images its parent was.
   Reviewed studies that are an NIH val/test image are dropped (``core.training.corrections_data``).
3. Trains ``--epochs`` epochs at the parent's image size (Ultralytics, offline settings of
   ``core.ml.yolo_env``), evaluates on the test split (``core.training.evaluate_detector``: mAP50, mAP50-95,
   recall at 0.05/0.1/0.2 false positives per image, ONNX export checked against PyTorch) and publishes
   ``models/detector/<version>/`` **without** making it active: promotion is an admin's decision.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

import core.ml.yolo_env  # noqa: F401  (before ultralytics: offline settings)
from core.config import get_settings
from core.ml.registry import read_registry
from core.training.corrections_data import ReviewedSet, default_version, read_export, retraining_record
from core.training.nih_boxes import CLASSES, build_yolo_dataset

log = logging.getLogger("retrain_detector")


def _split_images(data_yaml: Path, split: str) -> list[Path]:
    from core.training.evaluate_detector import split_images

    return split_images(data_yaml, split)


def _grey(path: Path, size: int = 256) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def merged_dataset(base_yaml: Path, reviewed: ReviewedSet, out_dir: Path, repeat: int) -> Path:
    """A data.yaml training on base train + reviewed (linked ``repeat`` times), validating/testing as base."""
    base_root = base_yaml.parent
    extra_images, extra_labels = out_dir / "reviewed" / "images", out_dir / "reviewed" / "labels"
    for folder in (extra_images, extra_labels):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
    for image, label in reviewed.yolo_pairs():
        for r in range(repeat):
            name = f"{image.stem}_r{r}"
            os.symlink(image.resolve(), extra_images / f"{name}{image.suffix}")
            (extra_labels / f"{name}.txt").write_text(label.read_text() if label.exists() else "")
    (out_dir / "reviewed" / "labels.cache").unlink(missing_ok=True)
    base = yaml.safe_load(base_yaml.read_text())
    root = Path(base.get("path") or base_root)
    lines = [
        f"path: {out_dir}",
        f"train: [{root / base['train']}, {extra_images}]",
        f"val: {root / base['val']}",
        f"test: {root / base.get('test', base['val'])}",
        "names:",
        *(f"  {i}: {json.dumps(name)}" for i, name in enumerate(CLASSES)),
    ]
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text("\n".join(lines) + "\n")
    # train_detector hashes the source named in summary.json: the base data set's
    (out_dir / "summary.json").write_text((base_root / "summary.json").read_text())
    return data_yaml


def retrain(
    export: Path,
    out: Path,
    *,
    parent: str | None = None,
    base_yaml: Path | None = None,
    epochs: int = 10,
    batch: int = 16,
    repeat: int = 3,
    threads: int = 2,
    version: str | None = None,
    command: str = "",
) -> Path:
    """Fine-tune, evaluate and publish (not activate); returns the new version's folder."""
    from core.training import evaluate_detector
    from core.training.train_detector import train

    settings = get_settings()
    parent = parent or read_registry().get("detector")
    if not parent:
        raise SystemExit("no active detector to fine-tune; name one with --parent")
    parent_dir = settings.models_dir / "detector" / parent
    version = version or default_version(parent)
    if (settings.models_dir / "detector" / version).exists():
        raise SystemExit(f"model version {version!r} exists; versions are never overwritten")
    card = json.loads((parent_dir / "card.json").read_text())
    if tuple(c["name"] if isinstance(c, dict) else c for c in card["classes"]) != CLASSES:
        raise SystemExit(f"{parent}'s classes differ from this code's {CLASSES}")
    imgsz = int(card["input"]["size"])
    t_start = time.perf_counter()
    if base_yaml is None:  # reuse the built set (a training may be reading it); build it once otherwise
        built = settings.var_dir / "datasets" / "nih_boxes" / "data.yaml"
        base_yaml = built if built.exists() else build_yolo_dataset(built.parent)
    held_out = [*_split_images(base_yaml, "val"), *_split_images(base_yaml, "test")]
    held = np.stack([_grey(p) for p in held_out]) if held_out else None
    reviewed = read_export(
        export,
        tuple(json.loads((Path(export) / "manifest.json").read_text())["classifier_findings"]),
        CLASSES,
        held,
    )
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_yaml = merged_dataset(base_yaml, reviewed, out / "data", repeat)
    print(
        f"parent {parent}; radiologist train {len(_split_images(base_yaml, 'train'))} + reviewed {len(reviewed)} "
        f"x{repeat} ({len(reviewed.dropped_as_test_images)} dropped: same image as a val/test image); "
        f"{imgsz} px, {epochs} epoch(s)",
        flush=True,
    )
    train(
        out / "run",
        data_yaml,
        model=str(parent_dir / "model.pt"),
        imgsz=imgsz,
        epochs=epochs,
        batch=batch,
        patience=epochs,
        threads=threads,
        close_mosaic=max(1, epochs // 2),
        command=command,
    )
    package = evaluate_detector.evaluate(
        out / "run", data_yaml, threads=threads, version=version, command=command
    )
    new = json.loads((package / "card.json").read_text())
    new["parent"] = parent
    new["retraining"] = retraining_record(export, reviewed, repeat, t_start)
    (package / "card.json").write_text(json.dumps(new, indent=2) + "\n")
    target = evaluate_detector.publish(package, version, activate=False)
    old_map = card["metrics"]["test"]["ultralytics"]["map50"]
    new_map = new["metrics"]["test"]["ultralytics"]["map50"]
    print(
        f"candidate {version}: test mAP50 {new_map:.3f} vs parent {parent} {old_map:.3f} ({new_map - old_map:+.3f}); "
        f"{(time.perf_counter() - t_start) / 60:.1f} min; not active until promoted",
        flush=True,
    )
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export", type=Path, help="a folder written by `python -m core corrections export`")
    p.add_argument("--parent", help="version to fine-tune (default: the active detector)")
    p.add_argument("--data", type=Path, help="base data.yaml (default: built from the NIH boxes)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3, help="times each reviewed study is seen per epoch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--version", help="name of the new version (default: <parent>-ft<UTC time>)")
    p.add_argument("--out", type=Path, help="run folder (default: var/runs/retrain-<version>)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("core.imaging").setLevel(logging.WARNING)
    settings = get_settings()
    parent = args.parent or read_registry().get("detector") or ""
    version = args.version or default_version(parent)
    out = args.out or settings.var_dir / "runs" / f"retrain-{version}"
    command = "python -m core.training.retrain_detector " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    retrain(
        args.export,
        out,
        parent=args.parent,
        base_yaml=args.data,
        epochs=args.epochs,
        batch=args.batch,
        repeat=args.repeat,
        threads=args.threads,
        version=version,
        command=command,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
