"""Test-time augmentation and small ensembles, chosen on validation, measured on test, per image source.

    python -m core.training.evaluate_tta                          # the active classifier, rotations only
    python -m core.training.evaluate_tta --model A --model B      # ... and the ensemble of A and B
    python -m core.training.evaluate_tta --json var/eval/tta.json

Each validation and test film goes through the product's reader (``core.imaging.read_image``) and the
served classifier (LiteRT), once per small rotation of the model input (no flips: a chest film is not
left-right symmetric, the heart and the aortic knob say which side is which). Candidates are sets of
angles (averaged on the logit, then the card's calibration) and, with several ``--model``, the mean of the
models' calibrated probabilities. The candidate kept is the one with the best **validation** mean AUC; the
test split is only measured: mean AUC overall, per source and source-balanced (``evaluate_triage``'s
figures), and the paired difference to the plain read (bootstrap over patients, 95 % CI). A gain that shows
only in the pooled figure and not within the sources is the source shortcut, not a better reader.
The per-film cost of each candidate is measured too (classify p50 on this machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from scipy import ndimage

from core import imaging
from core.config import get_settings
from core.ml.classifier import Classifier, calibrate, to_model_input
from core.ml.probability import logit, sigmoid
from core.ml.registry import active_model_dir
from core.training.evaluate_triage import MIN_SOURCE_FILMS, Reads, mean_auc, per_finding_auc
from core.training.model_card import put_section

log = logging.getLogger("evaluate_tta")

ANGLES = (-6.0, -3.0, 0.0, 3.0, 6.0)
CANDIDATES: dict[str, tuple[float, ...]] = {
    "plain": (0.0,),
    "rot3": (-3.0, 0.0, 3.0),
    "rot6": (-6.0, 0.0, 6.0),
    "rot3+6": ANGLES,
}
BOOTSTRAP = 1000  # resamples of patients for the paired gain
VERDICT = (
    "Forward ms: LiteRT forward passes per film (p50 of the plain pass x the number of angles, 2 cores, "
    "measured while a training shared them). The dashboard serves a candidate only when the one chosen on "
    "validation also gains on test within every source with a CI above zero and fits the 60 ms budget; "
    "otherwise it serves the plain read."
)


def rotated(x: np.ndarray, angle: float) -> np.ndarray:
    """The (1, s, s, 1) model input turned by ``angle`` degrees about its centre, edges repeated."""
    if angle == 0.0:
        return x
    plane = ndimage.rotate(x[0, :, :, 0], angle, reshape=False, order=1, mode="nearest")
    return plane[None, :, :, None].astype(np.float32)


def raw_logits(classifier: Classifier, table: pd.DataFrame, root: Path) -> tuple[np.ndarray, float]:
    """(N, len(ANGLES), F) uncalibrated logits, and the p50 ms of one plain forward pass."""
    out, ms = [], []
    for i, rel in enumerate(table["path"]):
        pixels = imaging.read_image((root / rel).read_bytes(), rel).pixels
        x = to_model_input(pixels, classifier.input_size)
        per_angle = []
        for angle in ANGLES:
            t0 = time.perf_counter()
            raw, _ = classifier.predict_raw(rotated(x, angle))
            if angle == 0.0:
                ms.append((time.perf_counter() - t0) * 1e3)
            per_angle.append(logit(raw))
        out.append(per_angle)
        if (i + 1) % 200 == 0:
            log.info("  %d/%d films", i + 1, len(table))
    return np.asarray(out, dtype=np.float64), float(np.median(ms))


def load_logits(classifier: Classifier, data_dir: Path, cache_dir: Path) -> dict[str, Any]:
    table = pd.read_csv(data_dir / "nih14" / "labels.csv")
    table = table[table["duplicate_of_other_row"] == 0].reset_index(drop=True)
    names = list(classifier.finding_names)
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        rows = table[table["split"] == split].reset_index(drop=True)
        cache = cache_dir / f"tta-{classifier.version}-{split}.npz"
        if cache.exists() and len(np.load(cache)["logits"]) == len(rows):
            z = np.load(cache, allow_pickle=True)
            logits, ms = z["logits"], float(z["ms"])
        else:
            log.info(
                "%s: reading the %s split (%d films) at %d angles",
                classifier.version,
                split,
                len(rows),
                len(ANGLES),
            )
            logits, ms = raw_logits(classifier, rows, data_dir / "nih14")
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, logits=logits, ms=ms)
        out[split] = {
            "logits": logits,
            "ms": ms,
            "labels": rows[names].to_numpy(dtype=np.int8),
            "patients": rows["patient_id"].to_numpy(),
            "sources": rows["source"].to_numpy(),
        }
    return out


def probabilities(classifier: Classifier, logits: np.ndarray, angles: Sequence[float]) -> np.ndarray:
    """Mean logit over ``angles``, then the card's Platt calibration: (N, F)."""
    idx = [ANGLES.index(a) for a in angles]
    mean = logits[:, idx, :].mean(axis=1)
    platt = np.array([f.calibration for f in classifier.findings], dtype=np.float64)
    return calibrate(sigmoid(mean), platt)


def _reads(split: dict[str, Any], probs: np.ndarray) -> Reads:
    n = len(probs)
    return Reads(
        probs,
        np.zeros((n, 1), np.float32),
        split["labels"],
        split["patients"],
        split["sources"],
        np.zeros(n, bool),
    )


def _mean_auc_fast(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(y[:, k], p[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    return float(np.mean(aucs))


def paired_gain(
    y: np.ndarray, base: np.ndarray, cand: np.ndarray, patients: np.ndarray, seed: int = 0
) -> dict:
    """Mean-AUC difference candidate - plain, with a 95 % bootstrap CI over patients."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(patients)
    rows = {p: np.flatnonzero(patients == p) for p in uniq}
    diffs = []
    for _ in range(BOOTSTRAP):
        pick = np.concatenate([rows[p] for p in rng.choice(uniq, len(uniq))])
        diffs.append(_mean_auc_fast(y[pick], cand[pick]) - _mean_auc_fast(y[pick], base[pick]))
    value = _mean_auc_fast(y, cand) - _mean_auc_fast(y, base)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"value": value, "ci": [float(lo), float(hi)]}


def evaluate(
    model_dirs: Sequence[Path], data_dir: Path, cache_dir: Path, labels: Sequence[str] = tuple(CANDIDATES)
) -> dict[str, Any]:
    """Every candidate in ``labels`` (angle sets) for each model and, with several models, their ensemble;
    the first model's plain read is always one (the baseline of every paired gain)."""
    labels = ("plain", *(label for label in labels if label != "plain"))
    classifiers = [Classifier(d) for d in model_dirs]
    names = classifiers[0].finding_names
    if any(c.finding_names != names for c in classifiers):
        raise SystemExit("the models of an ensemble must share their findings")
    data = [load_logits(c, data_dir, cache_dir) for c in classifiers]
    val, test = data[0]["val"], data[0]["test"]
    sources = sorted(s for s in set(test["sources"]) if (test["sources"] == s).sum() >= MIN_SOURCE_FILMS)

    candidates: dict[str, dict[str, np.ndarray]] = {}
    for c, d in zip(classifiers, data, strict=True):
        for label in labels:
            key = f"{c.version}:{label}"
            candidates[key] = {
                s: probabilities(c, d[s]["logits"], CANDIDATES[label]) for s in ("val", "test")
            }
    if len(classifiers) > 1:
        for label in labels:
            keys = [f"{c.version}:{label}" for c in classifiers]
            candidates[f"ensemble:{label}"] = {
                s: np.mean([candidates[k][s] for k in keys], axis=0) for s in ("val", "test")
            }

    plain = f"{classifiers[0].version}:plain"
    rows = {}
    for key, probs in candidates.items():
        model, label = key.split(":")
        n_models = len(classifiers) if model == "ensemble" else 1
        ms = (
            sum(d["val"]["ms"] for d in data)
            if model == "ensemble"
            else next(d["val"]["ms"] for c, d in zip(classifiers, data, strict=True) if c.version == model)
        )
        test_report = per_finding_auc(classifiers[0], _reads(test, probs["test"]))
        rows[key] = {
            "angles": list(CANDIDATES[label]),
            "models": n_models,
            "val_mean_auc": _mean_auc_fast(val["labels"], probs["val"]),
            "test": mean_auc(test_report, sources),
            "per_finding": {n: test_report[n]["overall"] for n in names},
            "gain_vs_plain": None
            if key == plain
            else paired_gain(test["labels"], candidates[plain]["test"], probs["test"], test["patients"]),
            "forward_ms": ms * len(CANDIDATES[label]),
        }
        log.info("%-40s val %.4f  test %.4f", key, rows[key]["val_mean_auc"], rows[key]["test"]["overall"])
    chosen = max(rows, key=lambda k: rows[k]["val_mean_auc"])
    return {"chosen_on_val": chosen, "plain": plain, "sources": sources, "candidates": rows}


def markdown(report: dict[str, Any]) -> str:
    sources = report["sources"]
    head = (
        "| candidate | forward ms | val mean AUC | test mean AUC | "
        + " | ".join(f"test {s}" for s in sources)
        + " | source-balanced | test gain vs plain (95% CI) |"
    )
    lines = [head, "|" + "---|" * (6 + len(sources))]
    for key, r in report["candidates"].items():
        gain = r["gain_vs_plain"]
        g = "-" if gain is None else f"{gain['value']:+.4f} [{gain['ci'][0]:+.4f}, {gain['ci'][1]:+.4f}]"
        mark = " (chosen)" if key == report["chosen_on_val"] else ""
        per_source = " | ".join(f"{r['test']['per_source'].get(s, float('nan')):.3f}" for s in sources)
        lines.append(
            f"| {key}{mark} | {r['forward_ms']:.0f} | {r['val_mean_auc']:.4f} | {r['test']['overall']:.4f} | "
            f"{per_source} | {r['test']['source_balanced']:.3f} | {g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", default=None, help="classifier version folder")
    parser.add_argument(
        "--candidates",
        nargs="+",
        choices=tuple(CANDIDATES),
        default=tuple(CANDIDATES),
        help="angle sets to try (default: all; fewer is faster, each costs a paired bootstrap)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the whole report here")
    parser.add_argument("--write-card", action="store_true", help="put the table in the first model's card")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = get_settings()
    model_dirs = args.model or [active_model_dir("classifier")]
    report = evaluate(model_dirs, settings.shared_data_dir, settings.var_dir / "eval", args.candidates)
    print(markdown(report))
    print(f"chosen on validation: {report['chosen_on_val']}")
    if args.write_card:
        put_section(
            model_dirs[0] / "MODEL_CARD.md",
            "tta",
            "Test-time augmentation and ensembles (chosen on validation)",
            "python -m core.training.evaluate_tta " + " ".join(f"--model {d}" for d in args.model or []),
            markdown(report) + f"\n\nChosen on validation: {report['chosen_on_val']}. " + VERDICT,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
