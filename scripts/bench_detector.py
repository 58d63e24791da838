"""Warm detector latency, PyTorch vs ONNX Runtime, on one film: median and p95 over --runs calls.

    .venv/bin/python scripts/bench_detector.py                      # the active detector version
    .venv/bin/python scripts/bench_detector.py --model-dir models/detector/<version>
    .venv/bin/python scripts/bench_detector.py --untrained 320      # an untrained yolo11n exported at 320 px

Latency does not depend on the weights, so ``--untrained SIZE`` (built from yolo11n.yaml, exported to ONNX
in var/bench/) measures an input size before any training. Each runtime gets --threads intra-op threads;
"end to end" is :meth:`Detector.detect` on the 1024-px sample (letterbox, network, NMS, mapping back),
"network" is the runtime call alone. Run it on an otherwise idle machine: a busy core doubles the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.imaging import read_image  # noqa: E402
from core.ml.detector import Detector, to_model_input  # noqa: E402


def untrained_package(size: int, architecture: str = "yolo11n.yaml") -> Path:
    """A package folder with untrained weights exported at ``size`` (for latency only)."""
    import core.ml.yolo_env

    core.ml.yolo_env.configure()
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from core.config import get_settings
    from core.training.nih_boxes import CLASSES

    folder = get_settings().var_dir / "bench" / f"{Path(architecture).stem}-{size}"
    if (folder / "card.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    yolo = YOLO(architecture, task="detect")
    yolo.model = DetectionModel(architecture, nc=len(CLASSES), verbose=False)  # the detector's 7 classes
    yolo.model.names = dict(enumerate(CLASSES))
    yolo.save(folder / "model.pt")
    saved = YOLO(str(folder / "model.pt"), task="detect")
    core.ml.yolo_env.use_threads(saved)
    Path(saved.export(format="onnx", imgsz=size, device="cpu")).replace(folder / "model.onnx")
    card = {
        "version": f"untrained-{Path(architecture).stem}-{size}",
        "classes": [{"name": c} for c in CLASSES],
        "input": {"size": size},
        "thresholds": {"confidence": 0.25, "nms_iou": 0.5, "max_detections": 20},
        "files": {"onnx": "model.onnx", "pytorch": "model.pt"},
        "runtime": {"serving": "onnxruntime"},
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return folder


def percentiles(ms: list[float]) -> tuple[float, float]:
    return statistics.median(ms), float(np.percentile(ms, 95))


def bench(detector: Detector, pixels: np.ndarray, runs: int, warmup: int) -> dict[str, tuple[float, float]]:
    x, _ = to_model_input(pixels, detector.input_size)
    for _ in range(warmup):
        detector.detect(pixels)
    network, end_to_end = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        detector.predict_raw(x)
        t1 = time.perf_counter()
        detector.detect(pixels)
        t2 = time.perf_counter()
        network.append((t1 - t0) * 1e3)
        end_to_end.append((t2 - t1) * 1e3)
    return {"network": percentiles(network), "end to end": percentiles(end_to_end)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model-dir", type=Path, help="a detector version folder (default: the active one)")
    group.add_argument("--untrained", type=int, metavar="SIZE", help="an untrained yolo11n at SIZE px")
    parser.add_argument("--image", type=Path, default=ROOT / "assets" / "samples" / "00000310_001.png")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.runs < 50:
        parser.error("--runs must be at least 50 for a p95")
    if args.untrained:
        folder = untrained_package(args.untrained)
    else:
        from core.ml.registry import active_model_dir

        folder = args.model_dir or active_model_dir("detector")
    pixels = read_image(args.image.read_bytes(), args.image.name).pixels
    print(
        f"{folder.name}: {args.image.name} {pixels.shape[1]}x{pixels.shape[0]}, {args.threads} threads, "
        f"{args.runs} warm runs, {platform.processor() or platform.machine()}"
    )
    for runtime in ("pytorch", "onnxruntime"):
        detector = Detector(folder, runtime=runtime, threads=args.threads)
        result = bench(detector, pixels, args.runs, args.warmup)
        for what, (p50, p95) in result.items():
            print(
                f"  {runtime:12s} {what:10s} @{detector.input_size}px: p50 {p50:6.1f} ms  p95 {p95:6.1f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
