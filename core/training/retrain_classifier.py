"""Fine-tune the active classifier on its NIH training split plus doctors' reviewed studies; publish a candidate.

    python -m core.training.retrain_classifier EXPORT_DIR [--epochs 2] [--version NAME] [--exclude-patients FILE]

1. Starts from the weights of the active classifier (``--parent`` names another version).
2. Trains on the NIH train split plus the export's reviewed studies (``core.training.corrections_data``),
   the reviewed ones repeated ``--repeat`` times so a few hundred doctor labels are not drowned by 2,350
   NIH rows. A finding the doctor marked *uncertain* (or left unset) is masked out of the loss rather than
   guessed; a label the doctor accepted unchanged from the model's suggestion weighs ``--accepted-weight``
   (default 0.5; 1 treats it as set, 0 ignores it), a label the doctor set weighs 1.
   Studies whose image is an NIH validation or test image are dropped and counted (leakage).
   ``--exclude-patients FILE`` leaves those patients' films out of the NIH rows (the parent never saw them:
   ``core.training.learning_loop``'s hold-out, which reaches the retraining only as reviewed studies).
3. Keeps the epoch with the best validation mean AUC (the parent itself counts as epoch 0, so a fine-tune
   that does not help on validation keeps the parent's weights; ``--no-parent-epoch`` leaves it out, to measure
   what the fine-tune learned), then runs the same evaluation as the first model
   (``core.training.evaluate_classifier``: calibration and thresholds on val, AUC with bootstrap CIs on the
   fixed test split) and publishes ``models/classifier/<version>/`` with its card. It is **not** made active:
   promotion is an admin's decision on the Models page (``core.ml.registry.promote``), which refuses a
   candidate that measures worse.

Learning rate 2e-5 (a fiftieth of the first training's peak) with BatchNormalization frozen, two epochs:
fine-tuning, not retraining from ImageNet, so it takes minutes on two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from core.config import get_settings
from core.ml.registry import read_registry
from core.training import evaluate_classifier
from core.training.corrections_data import (
    DEFAULT_ACCEPTED_WEIGHT,
    ReviewedSet,
    default_version,
    read_export,
    retraining_record,
)
from core.training.ensemble import training_logits
from core.training.nih14 import (
    FINDINGS,
    Split,
    dataset_hash,
    load_splits,
    read_patient_list,
    without_patients,
)
from core.training.train_classifier import BestValAUC, augmenter, mean_auc

log = logging.getLogger("retrain_classifier")


def test_split_hash(split: Split) -> str:
    """sha256 over the test split's image names and labels: two cards with the same hash were measured alike."""
    digest = hashlib.sha256()
    for name, labels in zip(split.image_index, split.labels, strict=True):
        digest.update(str(name).encode())
        digest.update(np.asarray(labels, np.uint8).tobytes())
    return digest.hexdigest()


def freeze_batchnorm(layer: keras.layers.Layer) -> None:
    """Keep every BatchNormalization layer in inference mode with the parent's statistics.

    A few thousand images in batches of 32 re-estimate the statistics noisily; measured here, fine-tuning with
    them trainable at lr 1e-4 dropped validation mean AUC from 0.737 to 0.691 after one epoch.
    """
    for sub in getattr(layer, "layers", []):
        freeze_batchnorm(sub)
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False


def masked_weighted_bce(labels: np.ndarray):
    """The first training's class-balanced BCE, with NaN labels (doctor: uncertain) contributing nothing.

    ``y_true`` is either the (N, k) labels or (N, 2k): the labels then a per-label weight (issue 12: an
    accepted label weighs less than a set one); a row's loss is its weighted sum over its known labels."""
    k = labels.shape[1]
    known = ~np.isnan(labels)
    filled = np.nan_to_num(labels)
    pos = filled.sum(axis=0).clip(min=1.0)
    neg = (known.sum(axis=0) - filled.sum(axis=0)).clip(min=1.0)
    n = known.sum(axis=0).clip(min=1.0)
    pos_w = tf.constant(n / (2.0 * pos), tf.float32)
    neg_w = tf.constant(n / (2.0 * neg), tf.float32)

    def loss(y_true, logits):
        y_true = tf.cast(y_true, tf.float32)
        if y_true.shape[-1] == 2 * k:
            y_true, weight = y_true[:, :k], y_true[:, k:]
        else:
            weight = tf.ones_like(y_true)
        mask = tf.cast(tf.logical_not(tf.math.is_nan(y_true)), tf.float32)
        y = tf.where(mask > 0, y_true, tf.zeros_like(y_true))
        per = -(pos_w * y * tf.math.log_sigmoid(logits) + neg_w * (1.0 - y) * tf.math.log_sigmoid(-logits))
        return tf.reduce_sum(per * mask * weight, axis=-1) / tf.maximum(tf.reduce_sum(mask, axis=-1), 1.0)

    return loss


def training_arrays(
    train: Split,
    reviewed: ReviewedSet,
    size: int,
    repeat: int,
    accepted_weight: float = DEFAULT_ACCEPTED_WEIGHT,
) -> tuple[np.ndarray, np.ndarray]:
    """NIH train images followed by the reviewed studies ``repeat`` times; y is (N, 2 x 14): the labels, then
    each label's loss weight (NIH 1; reviewed: :meth:`ReviewedSet.weight_matrix`)."""
    nih_y = np.concatenate([train.labels, np.ones_like(train.labels)], axis=1)
    if not len(reviewed):
        return train.images, nih_y.astype(np.float32)
    extra_x = reviewed.images(size)
    extra_y = np.concatenate([reviewed.label_matrix(), reviewed.weight_matrix(accepted_weight)], axis=1)
    x = np.concatenate([train.images, *([extra_x] * repeat)])
    y = np.concatenate([nih_y, *([extra_y] * repeat)])
    return x, y.astype(np.float32)


def _dataset(x: np.ndarray, y: np.ndarray, batch: int, seed: int) -> tf.data.Dataset:
    aug = augmenter(seed)
    ds = tf.data.Dataset.from_tensor_slices((x[..., None], y)).shuffle(len(x), seed=seed)
    ds = ds.batch(batch).map(
        lambda a, b: (tf.cast(a, tf.float32) / 255.0, b), num_parallel_calls=tf.data.AUTOTUNE
    )
    ds = ds.map(
        lambda a, b: (tf.clip_by_value(aug(a, training=True), 0.0, 1.0), b),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def retrain(
    export: Path,
    out: Path,
    *,
    parent: str | None = None,
    epochs: int = 2,
    batch: int = 32,
    lr: float = 2e-5,
    repeat: int = 4,
    accepted_weight: float = DEFAULT_ACCEPTED_WEIGHT,
    seed: int = 2026,
    limit: int = 0,
    version: str | None = None,
    command: str = "",
    exclude_patients: Path | None = None,
    keep_parent: bool = True,
) -> Path:
    """Fine-tune, evaluate and publish; returns the new version's folder."""
    settings = get_settings()
    parent = parent or read_registry().get("classifier")
    if not parent:
        raise SystemExit("no active classifier to fine-tune; name one with --parent")
    parent_dir = settings.models_dir / "classifier" / parent
    version = version or default_version(parent)
    if (settings.models_dir / "classifier" / version).exists():
        raise SystemExit(f"model version {version!r} exists; versions are never overwritten")
    card = json.loads((parent_dir / "card.json").read_text())
    findings = tuple(f["name"] for f in card["findings"])
    if findings != FINDINGS:
        raise SystemExit(f"{parent} predicts {findings}, the NIH table has {FINDINGS}")
    size = int(card["input"]["size"])
    keras.utils.set_random_seed(seed)
    t_start = time.perf_counter()
    splits = load_splits(settings.shared_data_dir, size, cache_dir=settings.var_dir / "cache")
    train_split, val_split = splits["train"], splits["val"]
    excluded = read_patient_list(exclude_patients) if exclude_patients else set()
    if excluded:  # films the parent never saw (the learning loop's hold-out) stay out of the NIH rows
        train_split = without_patients(train_split, excluded)
    if limit:
        train_split = Split(
            *(
                a[:limit]
                for a in (
                    train_split.images,
                    train_split.labels,
                    train_split.patient_ids,
                    train_split.image_index,
                )
            )
        )
        val_split = Split(
            *(
                a[:limit]
                for a in (val_split.images, val_split.labels, val_split.patient_ids, val_split.image_index)
            )
        )
    held_out = np.concatenate([splits["val"].images, splits["test"].images])
    reviewed = read_export(export, FINDINGS, test_images=held_out)
    print(
        f"parent {parent}; NIH train {len(train_split)} + reviewed {len(reviewed)} x{repeat} "
        f"({len(reviewed.dropped_as_test_images)} dropped: same image as a val/test image); val {len(val_split)}; "
        f"{size} px, {epochs} epoch(s), lr {lr:g}",
        flush=True,
    )
    x, y = training_arrays(train_split, reviewed, size, repeat, accepted_weight)

    inference_model = keras.saving.load_model(parent_dir / "model.keras", compile=False)
    train_model = keras.Model(inference_model.input, training_logits(inference_model), name="train")
    freeze_batchnorm(train_model)
    steps = int(np.ceil(len(x) / batch))
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps * epochs), alpha=0.1)
    train_model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-4),
        loss=masked_weighted_bce(y[:, : len(FINDINGS)]),
    )
    tracker = BestValAUC(val_split, batch, epochs)
    # the parent is epoch 0: a fine-tune that never beats it on validation keeps the parent's weights
    x_val = val_split.images[..., None].astype(np.float32) / 255.0
    baseline, _ = mean_auc(val_split.labels, train_model.predict(x_val, batch_size=batch, verbose=0))
    if keep_parent:
        tracker.best, tracker.best_epoch, tracker.best_weights = baseline, 0, train_model.get_weights()
    print(
        f"epoch 0/{epochs} (the parent{'' if keep_parent else ', not a candidate'}) val mean AUC {baseline:.4f}",
        flush=True,
    )
    t_fit = time.perf_counter()
    train_model.fit(_dataset(x, y, batch, seed), epochs=epochs, callbacks=[tracker], verbose=0)
    fit_seconds = time.perf_counter() - t_fit
    train_model.set_weights(tracker.best_weights)
    out.mkdir(parents=True, exist_ok=True)
    inference_model.save(out / "model.keras")
    parent_training = card.get("training", {})
    record = {
        "variant": parent_training.get("variant", "lite0"),
        "input_size": size,
        "pretrained": f"fine-tuned from {parent}",
        "epochs": epochs,
        "batch": batch,
        "learning_rate": lr,
        "weight_decay": 1e-4,
        "seed": seed,
        "best_epoch": tracker.best_epoch,
        "best_val_mean_auc": tracker.best,
        "parent_val_mean_auc": baseline,
        "parent_is_a_candidate": keep_parent,
        "batchnorm": "frozen (running statistics of the parent)",
        "history": tracker.history,
        "train_images": int(len(x)),
        "val_images": len(val_split),
        "fit_seconds": fit_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "threads": os.cpu_count(),
        "findings": list(FINDINGS),
        "data_sha256": None if limit else dataset_hash(settings.shared_data_dir),
        "command": command,
    }
    (out / "train.json").write_text(json.dumps(record, indent=2))
    evaluate_classifier.evaluate(out)
    target = evaluate_classifier.publish(out, version, [out])
    published = json.loads((target / "card.json").read_text())
    published["parent"] = parent
    published["test_split_sha256"] = test_split_hash(splits["test"])
    published["retraining"] = retraining_record(export, reviewed, repeat, t_start)
    published["retraining"]["accepted_weight"] = accepted_weight
    published["retraining"]["label_sources"] = reviewed.source_counts()
    if excluded:
        published["retraining"]["excluded_patients"] = {
            "file": str(exclude_patients),
            "patients": len(excluded),
        }
    (target / "card.json").write_text(json.dumps(published, indent=2))
    from core.training.model_card import write_classifier_card

    write_classifier_card(published, target / "MODEL_CARD.md")
    old, new = card["metrics"]["test"]["mean_auc"], published["metrics"]["test"]["mean_auc"]
    print(
        f"candidate {version}: test mean AUC {new:.3f} vs parent {parent} {old:.3f} ({new - old:+.3f}); "
        f"{(time.perf_counter() - t_start) / 60:.1f} min; not active until promoted",
        flush=True,
    )
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export", type=Path, help="a folder written by `python -m core corrections export`")
    p.add_argument("--parent", help="version to fine-tune (default: the active classifier)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--repeat", type=int, default=4, help="times each reviewed study is seen per epoch")
    p.add_argument(
        "--accepted-weight",
        type=float,
        default=DEFAULT_ACCEPTED_WEIGHT,
        help="loss weight of a label the doctor accepted unchanged from the model (a set label weighs 1)",
    )
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--limit", type=int, default=0, help="only the first N NIH train/val images (smoke tests)")
    p.add_argument("--version", help="name of the new version (default: <parent>-ft<UTC time>)")
    p.add_argument(
        "--exclude-patients",
        type=Path,
        help="file of patient ids (one a line) whose NIH train films are left out of the NIH rows",
    )
    p.add_argument(
        "--no-parent-epoch",
        dest="keep_parent",
        action="store_false",
        help="the best fine-tuned epoch on validation even if the parent scored higher (a measurement of what "
        "the fine-tune learned; by default the parent is epoch 0 and kept when no epoch beats it)",
    )
    p.add_argument("--out", type=Path, help="run folder (default: var/runs/retrain-<version>)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = get_settings()
    parent = args.parent or read_registry().get("classifier") or ""
    version = args.version or default_version(parent)
    out = args.out or settings.var_dir / "runs" / f"retrain-{version}"
    command = "python -m core.training.retrain_classifier " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    retrain(
        args.export,
        out,
        parent=args.parent,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        repeat=args.repeat,
        accepted_weight=args.accepted_weight,
        seed=args.seed,
        limit=args.limit,
        version=version,
        command=command,
        exclude_patients=args.exclude_patients,
        keep_parent=args.keep_parent,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
