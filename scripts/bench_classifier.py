"""Benchmark the classifier: warm single-image latency and batch throughput, Keras vs LiteRT.

    .venv/bin/python scripts/bench_classifier.py [--runs 50] [--image assets/samples/00000310_001.png]

"classify + heat map" is what the product does per upload: resize the 1024-px film, run the network,
calibrate, score the out-of-scope check, and render the Grad-CAM overlay of the top finding. Decoding the
file is excluded (it is the same for every runtime; the diagnose benchmark includes it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from core.imaging import read_image
from core.ml.classifier import Classifier, overlay_heatmap, to_model_input
from core.ml.registry import active_model_dir


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench(model: Classifier, pixels: np.ndarray, runs: int) -> dict[str, float]:
    def once() -> None:
        result = model.classify(pixels)
        overlay_heatmap(pixels, model.heatmap(result, result.top3[0][0]))

    for _ in range(5):  # warm-up: first calls allocate and JIT
        once()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1e3)
    x = to_model_input(pixels, model.input_size)
    batch_runs = max(10, runs // 2)
    t0 = time.perf_counter()
    for _ in range(batch_runs):
        model.predict_raw(x)
    network_only = (time.perf_counter() - t0) / batch_runs * 1e3
    # batch throughput of the network on preprocessed inputs: Keras takes a batch of 16 at once; the LiteRT
    # export has a fixed batch of one, so it runs 16 invocations back to back
    batch = np.repeat(x, 16, axis=0)
    t0 = time.perf_counter()
    for _ in range(3):
        if model.runtime == "keras":
            model._run(batch)
        else:
            for i in range(16):
                model.predict_raw(batch[i : i + 1])
    batch_rate = 3 * 16 / (time.perf_counter() - t0)
    return {
        "batch_images_per_s": batch_rate,
        "p50": statistics.median(times),
        "p95": percentile(times, 95),
        "network_ms": network_only,
        "images_per_s": 1e3 / statistics.median(times),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--image", type=Path, default=Path("assets/samples/00000310_001.png"))
    p.add_argument("--model-dir", type=Path, default=None)
    args = p.parse_args()
    folder = args.model_dir or active_model_dir("classifier")
    pixels = read_image(args.image.read_bytes()).pixels
    print(
        f"model {folder.name}; image {args.image.name} {pixels.shape[1]}x{pixels.shape[0]}; {os.cpu_count()} cores; "
        f"{args.runs} warm runs"
    )
    results = {}
    for runtime in ("keras", "litert"):
        model = Classifier(folder, runtime=runtime)
        results[runtime] = (model, bench(model, pixels, args.runs))
        r = results[runtime][1]
        print(
            f"{runtime:7s} classify + heat map: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms "
            f"({r['images_per_s']:.1f} images/s sequential); network alone {r['network_ms']:.1f} ms, "
            f"batch of 16: {r['batch_images_per_s']:.0f} images/s"
        )
    a = results["keras"][0].classify(pixels).probabilities
    b = results["litert"][0].classify(pixels).probabilities
    print(f"largest probability difference LiteRT vs Keras: {max(abs(a[k] - b[k]) for k in a):.2e}")


if __name__ == "__main__":
    main()
