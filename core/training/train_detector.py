"""Train the finding detector (Ultralytics YOLO, built from its architecture yaml: no downloaded weights).

    python -m core.training.train_detector --out var/runs/det-yolo11n-320 --imgsz 320 --epochs 60 --batch 16

Builds the YOLO data set from ``<shared data>/nih_boxes`` (``core.training.nih_boxes``) unless ``--data``
names one, trains on the train split with validation on the val split after each epoch, and keeps
Ultralytics' run folder in ``--out`` (``weights/best.pt`` is the best validation fitness, 0.1 mAP50 +
0.9 mAP50-95). Prints one line per epoch (losses, validation mAP, seconds). ``train.json`` records the
recipe, the command, timings, the data hash and versions. Evaluation on the test split, ONNX export and
publishing are a separate step (``core.training.evaluate_detector``).

Augmentation: no horizontal flip (a mirrored film puts the heart on the wrong side), no hue or saturation
jitter (grey images), brightness +-40%, small rotations, shifts and zoom, mosaic until the last 10 epochs.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import core.ml.yolo_env  # before ultralytics: offline settings

log = logging.getLogger("train_detector")

AUGMENT: dict[str, float] = {
    "fliplr": 0.0,
    "flipud": 0.0,
    "hsv_h": 0.0,
    "hsv_s": 0.0,
    "hsv_v": 0.4,
    "degrees": 5.0,
    "translate": 0.1,
    "scale": 0.3,
    "mosaic": 1.0,
    "mixup": 0.0,
}


def _source_dir(data_yaml: Path) -> Path | None:
    """The data folder the YOLO set was built from (its summary.json names it), so the hash pins that data."""
    summary = Path(data_yaml).parent / "summary.json"
    if not summary.exists():
        return None
    return Path(json.loads(summary.read_text())["source"]).parent


def train(
    out: Path,
    data: Path,
    model: str = "yolo11n.yaml",
    imgsz: int = 320,
    epochs: int = 60,
    batch: int = 16,
    workers: int = 1,
    device: str = "cpu",
    seed: int = 0,
    patience: int = 30,
    threads: int = 2,
    close_mosaic: int = 10,
    cache: str = "none",
    plots: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Train one detector into ``out``; returns (and writes) ``train.json``."""
    import torch
    import ultralytics
    from ultralytics import YOLO

    from core.training.nih_boxes import CLASSES, dataset_hash

    if model.endswith(".pt") and not Path(model).is_file():
        # a bare name such as 'yolo11n.pt' is a hub asset Ultralytics would try to download
        raise ValueError(
            "build from an architecture yaml (e.g. yolo11n.yaml) or fine-tune a local .pt file; "
            f"{model!r} is not a file here"
        )
    out, data = Path(out).resolve(), Path(data).resolve()
    yolo = YOLO(model, task="detect")
    core.ml.yolo_env.use_threads(yolo, threads)
    epoch_times: list[float] = []
    threads_seen: set[int] = set()
    t_start = time.perf_counter()

    def on_epoch_start(trainer: Any) -> None:
        trainer._epoch_t0 = time.perf_counter()
        threads_seen.add(torch.get_num_threads())  # proof that select_device's reset was undone

    def on_fit_epoch_end(trainer: Any) -> None:
        if getattr(trainer, "_epoch_t0", None) is None:  # Ultralytics' final validation of best.pt
            m = trainer.metrics
            print(
                f"best.pt on val: mAP50 {m.get('metrics/mAP50(B)', 0):.3f} "
                f"mAP50-95 {m.get('metrics/mAP50-95(B)', 0):.3f}",
                flush=True,
            )
            return
        seconds = time.perf_counter() - trainer._epoch_t0
        trainer._epoch_t0 = None
        epoch_times.append(seconds)
        m = trainer.metrics
        loss = {k.split("/")[-1]: float(v) for k, v in trainer.label_loss_items(trainer.tloss).items()}
        left = (trainer.epochs - trainer.epoch - 1) * (sum(epoch_times) / len(epoch_times))
        print(
            f"epoch {trainer.epoch + 1}/{trainer.epochs}  loss box {loss.get('box_loss', 0):.3f} "
            f"cls {loss.get('cls_loss', 0):.3f} dfl {loss.get('dfl_loss', 0):.3f}  "
            f"val mAP50 {m.get('metrics/mAP50(B)', 0):.3f} mAP50-95 {m.get('metrics/mAP50-95(B)', 0):.3f}  "
            f"{seconds:.0f} s  (~{left / 60:.0f} min left)",
            flush=True,
        )

    yolo.add_callback("on_train_epoch_start", on_epoch_start)
    yolo.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    args = {
        "data": str(data),
        "imgsz": imgsz,
        "epochs": epochs,
        "batch": batch,
        "workers": workers,
        "device": device,
        "seed": seed,
        "deterministic": True,
        "patience": patience,
        "amp": False,
        "close_mosaic": close_mosaic,
        "cache": False if cache == "none" else cache,
        "plots": plots,
        "project": str(out.parent),
        "name": out.name,
        "exist_ok": True,
        "verbose": False,
        **AUGMENT,
    }
    yolo.train(**args)
    fit_seconds = time.perf_counter() - t_start
    best = out / "weights" / "best.pt"
    if not best.exists():
        raise RuntimeError(f"training finished without {best}")
    results = _read_results(out / "results.csv")
    best_row = max(results, key=lambda r: 0.1 * r["mAP50"] + 0.9 * r["mAP50-95"]) if results else {}
    record = {
        "model": model,
        "classes": list(CLASSES),
        "args": args,
        "augment": AUGMENT,
        "threads": threads,
        "torch_threads_seen": sorted(threads_seen),
        "command": command,
        "data_yaml": str(data),
        "data_sha256": dataset_hash(_source_dir(data)),
        "fit_seconds": round(fit_seconds, 1),
        "epochs_run": len(epoch_times),
        "epoch_seconds": [round(s, 1) for s in epoch_times],
        "stopped_early": len(epoch_times) < epochs,
        "best_epoch": best_row.get("epoch"),
        "best_val": {k: best_row[k] for k in ("mAP50", "mAP50-95") if k in best_row},
        "history": results,
        "versions": {
            "ultralytics": ultralytics.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    (out / "train.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"done in {fit_seconds / 60:.1f} min; best epoch {record['best_epoch']} {record['best_val']}; {out}"
    )
    return record


def _read_results(path: Path) -> list[dict[str, float]]:
    """Ultralytics' results.csv as a list of {epoch, losses, mAP50, mAP50-95} rows."""
    if not path.exists():
        return []
    import csv

    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            row = {k.strip(): v for k, v in row.items()}
            rows.append(
                {
                    "epoch": int(float(row["epoch"])),
                    "box_loss": float(row["train/box_loss"]),
                    "cls_loss": float(row["train/cls_loss"]),
                    "mAP50": float(row["metrics/mAP50(B)"]),
                    "mAP50-95": float(row["metrics/mAP50-95(B)"]),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    from core.config import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (created)")
    parser.add_argument("--data", type=Path, default=None, help="data.yaml (default: build from nih_boxes)")
    parser.add_argument("--model", default="yolo11n.yaml", help="architecture yaml shipped with ultralytics")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="data-loader processes (1 suits 2 cores)")
    parser.add_argument("--device", default="cpu", help="'cpu', or '0' for a GPU")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--patience", type=int, default=30, help="stop after this many epochs without gain")
    parser.add_argument("--close-mosaic", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache",
        choices=("none", "disk", "ram"),
        default="none",
        help="decoded images: 'disk' (.npy beside the linked images, deterministic) or 'ram' (not deterministic)",
    )
    parser.add_argument("--plots", action="store_true", help="let Ultralytics draw its plots")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = args.data
    if data is None:
        from core.training.nih_boxes import build_yolo_dataset

        data = build_yolo_dataset(get_settings().var_dir / "datasets" / "nih_boxes")
    command = "python -m core.training.train_detector " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    train(
        args.out,
        data,
        model=args.model,
        imgsz=args.imgsz,
        epochs=args.epochs,
        batch=args.batch,
        workers=args.workers,
        device=args.device,
        seed=args.seed,
        patience=args.patience,
        threads=args.threads,
        close_mosaic=args.close_mosaic,
        cache=args.cache,
        plots=args.plots,
        command=command,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
