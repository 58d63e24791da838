"""Measure a trained classifier run honestly, calibrate it, choose thresholds, and publish it as a model version.

    python -m core.training.evaluate_classifier var/runs/cls-lite0-224-imagenet            # writes eval.json
    python -m core.training.evaluate_classifier RUN --publish cxr14-lite0-224-v1 \
        --compare var/runs/cls-*                                                          # + models/classifier/..

Everything that is chosen (calibration, thresholds, the out-of-scope cut-off) is chosen on the validation
split; the test split is only measured. AUCs get 95% confidence intervals from a bootstrap over *patients*
(images of one patient are not independent). Plain accuracy is never reported: predicting "no finding"
everywhere scores 94% on ChestX-ray14.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

from core.config import get_settings
from core.ml.classifier import ScopeModel, _logit, calibrate
from core.training.nih14 import FINDINGS, Split, load_splits

log = logging.getLogger("evaluate_classifier")

# Acute findings an emergency doctor must not miss: their thresholds favour sensitivity (>= 0.90 on validation).
URGENT = ("Pneumothorax", "Effusion", "Edema", "Pneumonia", "Consolidation")
URGENT_SENSITIVITY = 0.90
RULE_IN_SPECIFICITY = 0.95
MIN_POSITIVES = 5  # below this many validation positives a fitted threshold or calibration is noise
BOOTSTRAP = 1000
SCOPE_COMPONENTS = 32
SCOPE_PERCENTILE = 99.5
REFERENCE_SAMPLES = ("00000310_001.png", "nih_dx_chest_nofinding_1024.dcm")


def predict(model, split: Split, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Raw probabilities (N, F) and pooled features (N, C) of a Keras inference model."""
    probs, pooled = [], []
    for start in range(0, len(split), batch):
        x = split.images[start : start + batch, :, :, None].astype(np.float32) / 255.0
        p, fmap = model.predict_on_batch(x)
        probs.append(np.asarray(p))
        pooled.append(np.asarray(fmap).mean(axis=(1, 2)))
    return np.concatenate(probs), np.concatenate(pooled)


def fit_calibration(raw_val: np.ndarray, y_val: np.ndarray, prevalence: np.ndarray) -> np.ndarray:
    """(F, 2) Platt parameters (a, b) per finding: calibrated logit = a * logit + b.

    The weighted loss trains the network as if every finding had 50% prevalence; shifting the logit by the
    training log-odds undoes that exactly. Where validation has enough positives, a Platt fit on top corrects
    the remaining over- or under-confidence.
    """
    out = np.zeros((raw_val.shape[1], 2))
    for k in range(raw_val.shape[1]):
        shift = float(np.log(prevalence[k] / (1 - prevalence[k])))
        logit = _logit(raw_val[:, k]) + shift
        if y_val[:, k].sum() >= MIN_POSITIVES:
            lr = LogisticRegression(C=10.0).fit(logit[:, None], y_val[:, k])
            a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
            out[k] = (a, a * shift + b)
        else:
            out[k] = (1.0, shift)
    return out


def choose_threshold(y: np.ndarray, p: np.ndarray, urgent: bool) -> tuple[float, str]:
    """Threshold on calibrated probability, and the rule that produced it (written into the card)."""
    if y.sum() < MIN_POSITIVES or y.sum() == len(y):
        return float(
            np.quantile(p, 0.95)
        ), f"top 5% of validation scores (fewer than {MIN_POSITIVES} positives)"
    fpr, tpr, thr = roc_curve(y, p)
    thr = np.minimum(thr, 1.0)
    if urgent:
        ok = np.where(tpr >= URGENT_SENSITIVITY)[0]
        i = ok[0]  # highest threshold reaching the sensitivity target
        return float(thr[i]), f"highest threshold with validation sensitivity >= {URGENT_SENSITIVITY:.2f}"
    i = int(np.argmax(tpr - fpr))
    return float(thr[i]), "maximum Youden J (sensitivity + specificity - 1) on validation"


def rule_in_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """Lowest threshold whose validation specificity is at least RULE_IN_SPECIFICITY.

    The flag thresholds favour sensitivity, so on this abnormal-enriched data many films cross some of them;
    a second, high-specificity cut tells "suspected" from "likely", which triage can use to rank.
    """
    negatives = np.sort(p[y == 0])
    if len(negatives) == 0:
        return 1.0
    return float(negatives[min(len(negatives) - 1, int(np.ceil(RULE_IN_SPECIFICITY * len(negatives))))])


def sens_spec(y: np.ndarray, flag: np.ndarray) -> dict:
    """Sensitivity and specificity with Wilson 95% intervals and the confusion counts."""
    yk = y.astype(bool)
    tp, fn = int((flag & yk).sum()), int((~flag & yk).sum())
    tn, fp = int((~flag & ~yk).sum()), int((flag & ~yk).sum())
    return {
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "sensitivity_ci95": wilson(tp, tp + fn),
        "specificity": tn / (tn + fp) if tn + fp else None,
        "specificity_ci95": wilson(tn, tn + fp),
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
    }


def bootstrap_auc(y: np.ndarray, p: np.ndarray, patients: np.ndarray, seed: int = 0) -> dict:
    """Per-finding and mean AUC with 95% CIs from a bootstrap over patients."""
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(patients, return_inverse=True)
    members = [np.where(inverse == i)[0] for i in range(len(ids))]
    point = [
        roc_auc_score(y[:, k], p[:, k]) if 0 < y[:, k].sum() < len(y) else np.nan for k in range(y.shape[1])
    ]
    reps = np.full((BOOTSTRAP, y.shape[1]), np.nan)
    for b in range(BOOTSTRAP):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
        for k in range(y.shape[1]):
            yk = y[idx, k]
            if 0 < yk.sum() < len(yk) and not np.isnan(point[k]):
                reps[b, k] = roc_auc_score(yk, p[idx, k])
    valid = ~np.isnan(point)
    mean_reps = np.nanmean(reps[:, valid], axis=1)
    per: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(FINDINGS):
        if np.isnan(point[k]):
            per[name] = {"auc": None, "ci95": None, "positives": int(y[:, k].sum())}
        else:
            lo, hi = np.nanpercentile(reps[:, k], [2.5, 97.5])
            per[name] = {
                "auc": float(point[k]),
                "ci95": [float(lo), float(hi)],
                "positives": int(y[:, k].sum()),
            }
    lo, hi = np.percentile(mean_reps, [2.5, 97.5])
    return {
        "per_finding": per,
        "mean_auc": float(np.nanmean(point)),
        "mean_auc_ci95": [float(lo), float(hi)],
        "findings_with_auc": int(valid.sum()),
    }


def wilson(successes: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    z = 1.96
    phat = successes / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(centre - half), float(centre + half)]


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE over all (image, finding) pairs pooled, equal-width bins."""
    y, p = y.ravel(), p.ravel()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


def reliability_plot(y: np.ndarray, before: np.ndarray, after: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
    edges = np.linspace(0, 1, 11)
    for probs, label in ((before, "uncalibrated"), (after, "calibrated")):
        pf, yf = probs.ravel(), y.ravel()
        which = np.clip(np.digitize(pf, edges[1:-1]), 0, 9)
        xs = [pf[which == b].mean() for b in range(10) if (which == b).any()]
        ys = [yf[which == b].mean() for b in range(10) if (which == b).any()]
        ax.plot(xs, ys, marker="o", label=label)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability, test split, 14 findings pooled", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fit_scope(train_pooled: np.ndarray, val_pooled: np.ndarray) -> tuple[ScopeModel, dict]:
    mean = train_pooled.mean(axis=0)
    centred = train_pooled - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    eig = s**2 / (len(train_pooled) - 1)
    k = SCOPE_COMPONENTS
    residual = float(eig[k:].sum() / (train_pooled.shape[1] - k))
    provisional = ScopeModel(mean, vt[:k], eig[:k], residual, np.inf)
    val_scores = provisional.score(val_pooled)
    threshold = float(np.percentile(val_scores, SCOPE_PERCENTILE))
    model = ScopeModel(
        mean.astype(np.float32), vt[:k].astype(np.float32), eig[:k].astype(np.float32), residual, threshold
    )
    return model, {
        "threshold": threshold,
        "rule": f"{SCOPE_PERCENTILE} percentile of validation chest X-ray scores",
        "components": k,
        "val_median": float(np.median(val_scores)),
    }


def export_tflite(model, path: Path) -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path.write_bytes(converter.convert())


def evaluate(run: Path) -> dict:
    import keras

    settings = get_settings()
    train_record = json.loads((run / "train.json").read_text())
    size = int(train_record["input_size"])
    model = keras.saving.load_model(run / "model.keras", compile=False)
    splits = load_splits(settings.shared_data_dir, size, cache_dir=settings.var_dir / "cache")
    t0 = time.perf_counter()
    raw = {name: predict(model, split) for name, split in splits.items()}
    log.info("predicted %d images in %.0f s", sum(len(s) for s in splits.values()), time.perf_counter() - t0)
    y_train, y_val, y_test = (splits[s].labels for s in ("train", "val", "test"))
    prevalence = y_train.mean(axis=0).clip(1e-3, 1 - 1e-3)
    cal = fit_calibration(raw["val"][0], y_val, prevalence)
    p_val = calibrate(raw["val"][0], cal)
    p_test = calibrate(raw["test"][0], cal)
    findings = []
    for k, name in enumerate(FINDINGS):
        urgent = name in URGENT
        thr, rule = choose_threshold(y_val[:, k], p_val[:, k], urgent)
        rule_in = rule_in_threshold(y_val[:, k], p_val[:, k])
        findings.append(
            {
                "name": name,
                "urgent": urgent,
                "threshold": thr,
                "threshold_rule": rule,
                "rule_in_threshold": rule_in,
                "calibration": [float(cal[k, 0]), float(cal[k, 1])],
                "train_positives": int(y_train[:, k].sum()),
                "val_positives": int(y_val[:, k].sum()),
                "test": sens_spec(y_test[:, k], p_test[:, k] >= thr),
                "test_rule_in": sens_spec(y_test[:, k], p_test[:, k] >= rule_in),
            }
        )
    test_auc = bootstrap_auc(y_test, p_test, splits["test"].patient_ids)
    val_auc = bootstrap_auc(y_val, p_val, splits["val"].patient_ids)
    scope, scope_info = fit_scope(raw["train"][1], raw["val"][1])
    test_scope = scope.score(raw["test"][1])
    scope_info["test_false_rejections"] = int((test_scope > scope.threshold).sum())
    scope_info["test_images"] = len(test_scope)
    result = {
        "run": str(run),
        "train": train_record,
        "findings": findings,
        "test": test_auc,
        "val_mean_auc": val_auc["mean_auc"],
        "val_mean_auc_ci95": val_auc["mean_auc_ci95"],
        "calibration": {
            "ece_test_uncalibrated": expected_calibration_error(y_test, raw["test"][0]),
            "ece_test_calibrated": expected_calibration_error(y_test, p_test),
            "bins": 10,
        },
        "scope": scope_info,
        "test_images": len(y_test),
        "test_patients": int(len(np.unique(splits["test"].patient_ids))),
    }
    (run / "eval.json").write_text(json.dumps(result, indent=2))
    np.savez(
        run / "scope.npz",
        mean=scope.mean,
        components=scope.components,
        variances=scope.variances,
        residual_variance=np.float32(scope.residual_variance),
    )
    from core.training.ensemble import logits_layer  # imports Keras: only when evaluating

    np.save(run / "cam_weights.npy", logits_layer(model).get_weights()[0].astype(np.float32))
    reliability_plot(y_test, raw["test"][0], p_test, run / "reliability.png")
    print(
        f"{run.name}: val mean AUC {val_auc['mean_auc']:.3f}; test mean AUC {test_auc['mean_auc']:.3f} "
        f"[{test_auc['mean_auc_ci95'][0]:.3f}, {test_auc['mean_auc_ci95'][1]:.3f}]; "
        f"ECE {result['calibration']['ece_test_uncalibrated']:.3f} -> {result['calibration']['ece_test_calibrated']:.3f}",
        flush=True,
    )
    return result


def publish(run: Path, version: str, compare: list[Path]) -> Path:
    """Copy a measured run into models/classifier/<version>/ with its LiteRT export and model card."""
    import keras

    from core.training.model_card import write_classifier_card

    settings = get_settings()
    result = json.loads((run / "eval.json").read_text())
    target = settings.models_dir / "classifier" / version
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.keras", "scope.npz", "cam_weights.npy", "reliability.png"):
        shutil.copy2(run / name, target / name)
    model = keras.saving.load_model(run / "model.keras", compile=False)
    export_tflite(model, target / "model.tflite")
    card = {
        "version": version,
        "kind": "classifier",
        "architecture": f"EfficientNet-{result['train']['variant']}",
        "input": {
            "size": result["train"]["input_size"],
            "channels": 1,
            "range": [0.0, 1.0],
            "preprocessing": "grey, 8-bit, Lanczos resize to size x size without padding, /255",
        },
        "findings": result["findings"],
        "scope": result["scope"],
        "metrics": {
            "test": result["test"],
            "val_mean_auc": result["val_mean_auc"],
            "calibration": result["calibration"],
            "test_images": result["test_images"],
            "test_patients": result["test_patients"],
        },
        "training": result["train"],
    }
    # the exported runtime must agree with Keras before it is allowed to serve
    from core.ml.classifier import Classifier

    (target / "card.json").write_text(json.dumps(card, indent=2))
    splits = load_splits(
        settings.shared_data_dir, card["input"]["size"], cache_dir=settings.var_dir / "cache"
    )
    sample = splits["val"].images[:32, :, :, None].astype(np.float32) / 255.0
    lite = Classifier(target, runtime="litert")
    diffs = [
        np.abs(
            lite.predict_raw(sample[i : i + 1])[0]
            - np.asarray(model.predict_on_batch(sample[i : i + 1])[0])[0]
        ).max()
        for i in range(len(sample))
    ]
    card["runtime"] = {
        "serving": "LiteRT (model.tflite)",
        "max_abs_diff_vs_keras": float(max(diffs)),
        "checked_images": len(diffs),
    }
    comparison = []
    for other in compare:
        if (other / "eval.json").exists():
            o = json.loads((other / "eval.json").read_text())
            comparison.append(
                {
                    "run": other.name,
                    "variant": o["train"]["variant"],
                    "size": o["train"]["input_size"],
                    "pretrained": bool(o["train"]["pretrained"]),
                    "epochs": o["train"]["epochs"],
                    "fit_minutes": o["train"]["fit_seconds"] / 60,
                    "val_mean_auc": o["val_mean_auc"],
                    "test_mean_auc": o["test"]["mean_auc"],
                    "test_mean_auc_ci95": o["test"]["mean_auc_ci95"],
                }
            )
    card["candidates"] = comparison
    # recorded outputs on the shipped samples: tests check every clone reproduces them
    from core.config import PROJECT_ROOT
    from core.imaging import read_image

    card["reference_outputs"] = {
        name: lite.classify(
            read_image((PROJECT_ROOT / "assets" / "samples" / name).read_bytes()).pixels
        ).probabilities
        for name in REFERENCE_SAMPLES
    }
    (target / "card.json").write_text(json.dumps(card, indent=2))
    write_classifier_card(card, target / "MODEL_CARD.md")
    print(f"published {target} (LiteRT vs Keras max |diff| {max(diffs):.2e})")
    return target


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--publish", metavar="VERSION")
    p.add_argument("--compare", nargs="*", type=Path, default=[])
    p.add_argument("--skip-eval", action="store_true", help="reuse the run's eval.json")
    p.add_argument("--activate", action="store_true", help="make the published version the active one")
    args = p.parse_args(argv)
    if not args.skip_eval:
        evaluate(args.run)
    if args.publish:
        publish(args.run, args.publish, args.compare or [args.run])
        if args.activate:
            from core.ml.registry import set_active

            set_active("classifier", args.publish)
            print(f"active classifier: {args.publish}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
