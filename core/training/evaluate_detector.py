"""Evaluate a detector run on the test split, export it to ONNX, and publish it as a model version.

    python -m core.training.evaluate_detector var/runs/det-yolo11n-320 --publish det-yolo11n-320-v1

1. Packages the run's ``weights/best.pt`` as ``model.pt`` and exports ``model.onnx`` (static input, no NMS
   in the graph: NMS runs in numpy, identically for both runtimes).
2. Checks ONNX Runtime against PyTorch on validation images (largest absolute difference of the raw head
   output, boxes in input pixels and class scores apart); serving uses ONNX Runtime only when they match.
3. Ultralytics' validator on the test split (``split='test'``): mAP50 and mAP50-95, per class and overall;
   the validation split too, for reference.
4. The serving path (:class:`core.ml.detector.Detector`: our letterbox, the chosen runtime, numpy NMS) on
   every validation and test image: recall at 0.05, 0.1 and 0.2 false positives per image at IoU >= 0.5
   (pooled over classes and per class), and an AP50 cross-check.
5. The operating confidence threshold is chosen on the validation split (the lowest whose pooled false
   positives per image stay <= ``--fppi``), never on the test split.
6. Writes card.json and MODEL_CARD.md beside the weights in ``<run>/package``; ``--publish VERSION`` copies
   the folder to ``models/detector/VERSION`` and makes it the active detector (unless ``--no-activate``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import core.ml.yolo_env  # before ultralytics: offline settings
from core import imaging
from core.config import get_settings
from core.ml.detector import (
    DRAWN_MIN_VAL_AP50,
    Detector,
    OnnxRuntime,
    TorchRuntime,
    choose_drawn_classes,
    to_model_input,
)
from core.training import detector_metrics as dm
from core.training.coco_init import COCO_SHA256

log = logging.getLogger("evaluate_detector")

ONNX_TOLERANCE = {"boxes_px": 0.05, "scores": 1e-3}  # in input pixels / on the sigmoid score


def _data_config(data_yaml: Path) -> dict[str, Any]:
    from ultralytics.data.utils import check_det_dataset

    return check_det_dataset(str(data_yaml))


def split_images(data_yaml: Path, split: str) -> list[Path]:
    """The images of ``split``; a split may list several folders (a retraining adds reviewed studies)."""
    folders = _data_config(data_yaml)[split]
    folders = folders if isinstance(folders, list) else [folders]
    return sorted(
        p for f in folders for p in Path(f).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
    )


def read_labels(image: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """YOLO label file of ``image`` -> boxes (N, 4) in its pixels and classes (N,)."""
    parts = list(image.parts)
    parts[len(parts) - 1 - parts[::-1].index("images")] = "labels"
    label = Path(*parts).with_suffix(".txt")
    rows = np.loadtxt(label, ndmin=2) if label.exists() and label.stat().st_size else np.zeros((0, 5))
    cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes, rows[:, 0].astype(int)


def ultralytics_metrics(
    weights: Path, data_yaml: Path, split: str, imgsz: int, out: Path, threads: int
) -> dict:
    """Ultralytics' mAP50 / mAP50-95 on ``split``, overall and per class (classes present in the split)."""
    from ultralytics import YOLO

    yolo = YOLO(str(weights), task="detect")
    core.ml.yolo_env.use_threads(yolo, threads)
    m = yolo.val(
        data=str(data_yaml),
        split=split,
        imgsz=imgsz,
        batch=8,
        device="cpu",
        workers=0,
        conf=0.001,
        iou=0.7,
        plots=False,
        verbose=False,
        project=str(out),
        name=f"val-{split}",
        exist_ok=True,
    )
    names = m.names
    per_class = {}
    for i, c in enumerate(m.box.ap_class_index):
        per_class[names[int(c)]] = {
            "ap50": float(m.box.ap50[i]),
            "ap50_95": float(m.box.ap[i]),
            "boxes": int(m.nt_per_class[int(c)]),
        }
    return {
        "map50": float(m.box.map50),
        "map50_95": float(m.box.map),
        "precision": float(m.box.mp),
        "recall": float(m.box.mr),
        "per_class": per_class,
    }


def compare_runtimes(package: Path, images: list[Path], imgsz: int, threads: int) -> dict[str, Any]:
    """Largest differences between ONNX Runtime and PyTorch raw outputs on the same inputs."""
    torch_run = TorchRuntime(package / "model.pt", threads)
    onnx_run = OnnxRuntime(package / "model.onnx", threads)
    d_boxes = d_scores = 0.0
    for path in images:
        x, _ = to_model_input(imaging.read_image(path.read_bytes(), path.name).pixels, imgsz)
        a, b = torch_run(x)[0], onnx_run(x)[0]
        d_boxes = max(d_boxes, float(np.abs(a[:4] - b[:4]).max()))
        d_scores = max(d_scores, float(np.abs(a[4:] - b[4:]).max()))
    matched = d_boxes <= ONNX_TOLERANCE["boxes_px"] and d_scores <= ONNX_TOLERANCE["scores"]
    return {
        "serving": "onnxruntime" if matched else "pytorch",
        "checked_images": len(images),
        "max_abs_diff_boxes_px": d_boxes,
        "max_abs_diff_scores": d_scores,
        "tolerance": ONNX_TOLERANCE,
    }


def serving_predictions(detector: Detector, images: list[Path]) -> tuple[list, list, float]:
    """Every image through the serving path at a low threshold; returns predictions, truths, ms/image."""
    preds, truths = [], []
    t0 = time.perf_counter()
    for path in images:
        xray = imaging.read_image(path.read_bytes(), path.name)
        result = detector.detect(xray.pixels, confidence=0.001, max_det=100)
        d = result.detections
        preds.append(
            (
                np.array([x.box for x in d], dtype=np.float64).reshape(-1, 4),
                np.array([x.confidence for x in d]),
                np.array([detector.classes.index(x.label) for x in d], dtype=int),
            )
        )
        h, w = xray.shape
        truths.append(read_labels(path, w, h))
    return preds, truths, (time.perf_counter() - t0) * 1e3 / max(len(images), 1)


def serving_metrics(scored: dm.Scored, classes: tuple[str, ...]) -> dict[str, Any]:
    per_class: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(classes):
        if scored.gt_per_class[i]:
            per_class[name] = {
                "boxes": int(scored.gt_per_class[i]),
                "ap50": dm.average_precision(scored, i),
                "recall_at_fppi": dm.froc(scored, cls=i),
            }
    mean = {
        k: float(np.mean([c["recall_at_fppi"][k] for c in per_class.values()])) if per_class else 0.0
        for k in (f"{f:g}" for f in dm.FPPI_POINTS)
    }
    aps = [c["ap50"] for c in per_class.values() if c["ap50"] is not None]
    return {
        "images": scored.images,
        "negatives": None,
        "boxes": int(scored.gt_per_class.sum()),
        "recall_at_fppi": dm.froc(scored),
        "recall_at_fppi_mean_over_classes": mean,
        "ap50_mean": float(np.mean(aps)) if aps else 0.0,
        "per_class": per_class,
    }


def _architecture(train: dict[str, Any]) -> str:
    """How the trained network started, in words for the card."""
    model, version = Path(train["model"]), train["versions"]["ultralytics"]
    if model.suffix == ".pt" and "coco" in model.name:
        return (
            f"YOLOv5nu (Ultralytics {version}); backbone and neck initialised from the official COCO YOLOv5n "
            f"checkpoint (sha256 {COCO_SHA256[:16]}..., read as tensors only: core/training/coco_init.py), "
            "detection head trained from scratch"
        )
    return f"{model.stem} (Ultralytics {version}), built from its architecture yaml: no pretrained weights"


def evaluate(
    run: Path,
    data_yaml: Path | None = None,
    fppi: float = 0.2,
    nms_iou: float = 0.5,
    max_det: int = 20,
    iou: float = 0.5,
    threads: int = 2,
    check_images: int = 20,
    version: str | None = None,
    command: str = "",
) -> Path:
    """Evaluate ``run`` and write its package folder (weights, card.json, MODEL_CARD.md); returns it."""
    from ultralytics import YOLO

    from core.training.detector_card import write_detector_card
    from core.training.nih_boxes import class_members

    run = Path(run).resolve()
    train = json.loads((run / "train.json").read_text())
    data_yaml = Path(data_yaml or train["data_yaml"]).resolve()
    imgsz = int(train["args"]["imgsz"])
    package = run / "package"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir()
    shutil.copyfile(run / "weights" / "best.pt", package / "model.pt")

    t0 = time.perf_counter()
    yolo = YOLO(str(package / "model.pt"), task="detect")
    core.ml.yolo_env.use_threads(yolo, threads)
    exported = Path(
        yolo.export(
            format="onnx", imgsz=imgsz, dynamic=False, simplify=True, nms=False, half=False, device="cpu"
        )
    )
    if exported != package / "model.onnx":
        shutil.move(exported, package / "model.onnx")
    export_seconds = time.perf_counter() - t0
    classes = tuple(yolo.names[i] for i in sorted(yolo.names))
    print(f"exported {package / 'model.onnx'} in {export_seconds:.0f} s", flush=True)

    val_images, test_images = split_images(data_yaml, "val"), split_images(data_yaml, "test")
    runtime = compare_runtimes(package, val_images[:check_images], imgsz, threads)
    print(
        f"ONNX vs PyTorch on {runtime['checked_images']} images: boxes "
        f"{runtime['max_abs_diff_boxes_px']:.2e} px, scores {runtime['max_abs_diff_scores']:.2e} -> serve "
        f"with {runtime['serving']}",
        flush=True,
    )

    ultra = {
        s: ultralytics_metrics(package / "model.pt", data_yaml, s, imgsz, run / "eval", threads)
        for s in ("test", "val")
    }
    print(
        f"test mAP50 {ultra['test']['map50']:.3f} mAP50-95 {ultra['test']['map50_95']:.3f} (Ultralytics)",
        flush=True,
    )

    members = class_members()
    card: dict[str, Any] = {
        "kind": "detector",
        "version": version or run.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": _architecture(train),
        "classes": [{"name": c, "members": members.get(c, [c])} for c in classes],
        "input": {
            "size": imgsz,
            "channels": 3,
            "preprocessing": "grey [0,1] -> 8-bit; letterbox: long side "
            "resized bilinearly to the input size, centred on grey 114 padding; grey copied to 3 channels; "
            "/255",
        },
        "thresholds": {"confidence": 0.25, "nms_iou": nms_iou, "max_detections": max_det},
        "files": {"onnx": "model.onnx", "pytorch": "model.pt"},
        "runtime": runtime,
    }
    (package / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    detector = Detector(package, runtime=runtime["serving"], threads=threads)

    scored, ms, raw = {}, {}, {}
    for split, images in (("val", val_images), ("test", test_images)):
        preds, truths, ms[split] = serving_predictions(detector, images)
        scored[split] = dm.match(preds, truths, len(classes), iou=iou)
        raw[split] = (preds, truths, images)
    threshold = max(dm.threshold_at_fppi(scored["val"], fppi), 0.05)
    serving = {s: serving_metrics(scored[s], classes) for s in scored}
    for s, images in (("val", val_images), ("test", test_images)):
        serving[s]["negatives"] = sum(not len(read_labels(p, 1, 1)[1]) for p in images)
        serving[s]["at_operating_threshold"] = dm.at_threshold(scored[s], threshold)
        serving[s]["ms_per_image"] = ms[s]
    card["thresholds"] = {
        "confidence": threshold,
        "nms_iou": nms_iou,
        "max_detections": max_det,
        "rule": f"lowest confidence whose pooled false positives per image on the validation split stay <= "
        f"{fppi:g} (floor 0.05)",
        "drawn_classes": choose_drawn_classes(serving["val"]["per_class"]),
        "drawn_rule": f"classes whose validation AP50 is at least {DRAWN_MIN_VAL_AP50:g}; the others are "
        "detected but never drawn (their boxes would mostly be wrong)",
    }
    for s, (preds, truths, images) in raw.items():
        serving[s].update(intervals(preds, truths, images, classes, iou))
    card["metrics"] = {
        "iou": iou,
        "test": {**serving["test"], "ultralytics": ultra["test"]},
        "val": {**serving["val"], "ultralytics": ultra["val"]},
    }
    card["training"] = {
        k: train.get(k)
        for k in (
            "model",
            "command",
            "threads",
            "fit_seconds",
            "epochs_run",
            "stopped_early",
            "best_epoch",
            "best_val",
            "augment",
            "data_sha256",
            "versions",
        )
    }
    card["training"].update({k: train["args"][k] for k in ("imgsz", "epochs", "batch", "seed", "device")})
    card["evaluation"] = {"command": command, "export_seconds": round(export_seconds, 1)}
    card["data"] = {
        "sha256": train.get("data_sha256"),
        "yaml": str(data_yaml),
        "images": {
            "train": len(split_images(data_yaml, "train")),
            "val": len(val_images),
            "test": len(test_images),
        },
    }
    (package / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    write_detector_card(card, package / "MODEL_CARD.md")
    t = serving["test"]["recall_at_fppi"]
    print(
        f"test recall at 0.05/0.1/0.2 FPs per image (IoU {iou:g}): {t['0.05']:.3f} / {t['0.1']:.3f} / "
        f"{t['0.2']:.3f}; operating confidence {threshold:.3f} (from val)",
        flush=True,
    )
    return package


def patient_of(image: Path) -> str:
    """NIH file names start with the patient's number (``00000150_002`` -> ``00000150``)."""
    return image.stem.split("_")[0]


def intervals(
    preds: list, truths: list, images: list[Path], classes: tuple[str, ...], iou: float, n: int = 1000
) -> dict[str, Any]:
    """Class-agnostic AP50 and the patient-bootstrap 95 % intervals of the split's detection figures."""
    boot = dm.bootstrap(preds, truths, len(classes), [patient_of(p) for p in images], iou=iou, n=n)
    per_class = boot.pop("per_class_ap50")
    assert isinstance(per_class, dict)
    boot["per_class_ap50"] = {classes[c]: ci for c, ci in per_class.items() if ci is not None}
    return {"agnostic_ap50": dm.average_precision(dm.agnostic((preds, truths), iou), 0), "ci": boot}


def add_intervals(package: Path, data_yaml: Path, threads: int = 2) -> dict[str, Any]:
    """Add the agnostic AP50 and bootstrap intervals to a published detector's card (and its MODEL_CARD.md),
    running the serving path again on validation and test; the point figures must come out as in the card."""
    from core.training.detector_card import write_detector_card

    card = json.loads((package / "card.json").read_text())
    detector = Detector(package, runtime=card["runtime"]["serving"], threads=threads)
    classes = detector.classes
    iou = float(card["metrics"]["iou"])
    for split in ("val", "test"):
        images = split_images(data_yaml, split)
        preds, truths, _ = serving_predictions(detector, images)
        scored = dm.match(preds, truths, len(classes), iou=iou)
        again = serving_metrics(scored, classes)
        stored = card["metrics"][split]
        if abs(again["ap50_mean"] - stored["ap50_mean"]) > 1e-6:
            raise ValueError(
                f"{split}: serving AP50 mean {again['ap50_mean']:.4f} differs from the card's "
                f"{stored['ap50_mean']:.4f}; is {data_yaml} the data set it was evaluated on?"
            )
        stored.update(intervals(preds, truths, images, classes, iou))
    (package / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    write_detector_card(card, package / "MODEL_CARD.md")
    return card


def publish(package: Path, version: str, activate: bool = True, models_dir: Path | None = None) -> Path:
    """Copy ``package`` to ``models/detector/<version>`` and (optionally) make it the active detector."""
    from core.ml.registry import set_active
    from core.training.detector_card import write_detector_card

    base = models_dir or get_settings().models_dir
    target = base / "detector" / version
    if target.exists():
        raise FileExistsError(f"{target} exists; versions are never overwritten, choose a new one")
    card = json.loads((package / "card.json").read_text())
    card["version"] = version
    target.mkdir(parents=True)
    for name in ("model.onnx", "model.pt"):
        shutil.copyfile(package / name, target / name)
    (target / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    write_detector_card(card, target / "MODEL_CARD.md")  # its title names the version
    if activate:
        set_active("detector", version, base)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "run", type=Path, help="a train_detector run folder (with --intervals: a published one)"
    )
    parser.add_argument(
        "--intervals",
        action="store_true",
        help="add the class-agnostic AP50 and bootstrap 95%% intervals to the published detector RUN's card",
    )
    parser.add_argument("--data", type=Path, default=None, help="data.yaml (default: the one it trained on)")
    parser.add_argument("--publish", metavar="VERSION", default=None, help="copy to models/detector/VERSION")
    parser.add_argument("--no-activate", action="store_true", help="publish without making it active")
    parser.add_argument(
        "--fppi", type=float, default=0.2, help="false positives per image at the operating point"
    )
    parser.add_argument("--nms-iou", type=float, default=0.5)
    parser.add_argument("--max-det", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("core.imaging").setLevel(logging.WARNING)  # one line per image read otherwise
    command = "python -m core.training.evaluate_detector " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    if args.intervals:
        data_yaml = args.data or get_settings().var_dir / "datasets" / "nih_boxes" / "data.yaml"
        card = add_intervals(args.run, data_yaml, threads=args.threads)
        test = card["metrics"]["test"]
        print(
            f"test AP50 mean {test['ap50_mean']:.3f} {test['ci']['ap50_mean']}, agnostic "
            f"{test['agnostic_ap50']:.3f} {test['ci']['agnostic_ap50']}; card updated: {args.run}"
        )
        return 0
    package = evaluate(
        args.run,
        args.data,
        fppi=args.fppi,
        nms_iou=args.nms_iou,
        max_det=args.max_det,
        threads=args.threads,
        version=args.publish,
        command=command,
    )
    print(f"package: {package}")
    if args.publish:
        target = publish(package, args.publish, activate=not args.no_activate)
        print(f"published {target}" + ("" if args.no_activate else " (active detector)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
