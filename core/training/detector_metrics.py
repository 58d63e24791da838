"""Detection metrics computed from predictions and ground truth, independent of any framework.

- :func:`match`: greedy matching per image and class, most confident prediction first; a prediction is a
  true positive when its IoU with a not-yet-matched ground-truth box of the same class is >= ``iou``.
- :func:`froc`: recall at given false positives per image (the ChestX-Det10 metric). The curve sweeps the
  confidence threshold; false positives are divided by the number of images scored, every image counted,
  those without any box included. Recall at ``f`` is the highest recall reached while FPs/image <= ``f``.
- :func:`average_precision`: area under the precision envelope (all points), a cross-check of the
  Ultralytics mAP50 that goes through the serving pre- and post-processing instead of Ultralytics'.
- :func:`agnostic`: the same matching with every class as one ("is there something here?").
- :func:`bootstrap`: 95 % intervals of all of the above, resampling patients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FPPI_POINTS = (0.05, 0.1, 0.2)


@dataclass(frozen=True)
class Scored:
    """All predictions of a data set after matching: one row per prediction."""

    scores: np.ndarray  # (P,)
    classes: np.ndarray  # (P,)
    true_positive: np.ndarray  # (P,) bool
    gt_per_class: np.ndarray  # (C,) ground-truth boxes per class
    images: int


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of ``a`` (N, 4) and ``b`` (M, 4), x1 y1 x2 y2."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def match_image(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    iou: float = 0.5,
) -> np.ndarray:
    """True-positive flag per prediction of one image."""
    tp = np.zeros(len(pred_scores), dtype=bool)
    for c in np.unique(pred_classes):
        p_idx = np.flatnonzero(pred_classes == c)
        g_idx = np.flatnonzero(gt_classes == c)
        if not len(g_idx):
            continue
        p_idx = p_idx[np.argsort(-pred_scores[p_idx], kind="stable")]
        overlaps = iou_matrix(pred_boxes[p_idx], gt_boxes[g_idx])
        taken = np.zeros(len(g_idx), dtype=bool)
        for row, p in enumerate(p_idx):
            candidates = np.where(taken, -1.0, overlaps[row])
            best = int(candidates.argmax())
            if candidates[best] >= iou:
                taken[best] = True
                tp[p] = True
    return tp


def match(
    predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    truths: list[tuple[np.ndarray, np.ndarray]],
    n_classes: int,
    iou: float = 0.5,
) -> Scored:
    """Match per image: ``predictions[i]`` = (boxes, scores, classes), ``truths[i]`` = (boxes, classes)."""
    scores, classes, tps = [], [], []
    gt_per_class = np.zeros(n_classes, dtype=int)
    for (pb, ps, pc), (gb, gc) in zip(predictions, truths, strict=True):
        tps.append(match_image(pb, ps, pc, gb, gc, iou))
        scores.append(ps)
        classes.append(pc)
        gt_per_class += np.bincount(gc.astype(int), minlength=n_classes)
    return Scored(
        scores=np.concatenate(scores) if scores else np.zeros(0),
        classes=np.concatenate(classes).astype(int) if classes else np.zeros(0, int),
        true_positive=np.concatenate(tps) if tps else np.zeros(0, bool),
        gt_per_class=gt_per_class,
        images=len(truths),
    )


def _curve(scores: np.ndarray, tp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    return scores[order], np.cumsum(tp[order]), np.cumsum(~tp[order])


def froc(scored: Scored, points: tuple[float, ...] = FPPI_POINTS, cls: int | None = None) -> dict[str, float]:
    """Recall at each false-positives-per-image point, for one class or pooled over all classes."""
    keep = np.ones(len(scored.scores), bool) if cls is None else scored.classes == cls
    n_gt = int(scored.gt_per_class.sum() if cls is None else scored.gt_per_class[cls])
    _, tp, fp = _curve(scored.scores[keep], scored.true_positive[keep])
    fppi = fp / max(scored.images, 1)
    out = {}
    for f in points:
        within = fppi <= f
        out[f"{f:g}"] = float(tp[within].max() / n_gt) if n_gt and within.any() else 0.0
    return out


def threshold_at_fppi(scored: Scored, fppi: float) -> float:
    """Lowest confidence whose pooled false positives per image stay <= ``fppi`` (1.0 if none does)."""
    s, _, fp = _curve(scored.scores, scored.true_positive)
    within = fp / max(scored.images, 1) <= fppi
    if not within.any():
        return 1.0
    last = int(np.flatnonzero(within).max())
    # stop before a run of equal scores that would push past the budget
    return (
        float(s[last]) if last + 1 == len(s) or s[last + 1] < s[last] else float(np.nextafter(s[last], 1.0))
    )


def at_threshold(scored: Scored, threshold: float) -> dict[str, float]:
    """Pooled recall, precision and false positives per image of the predictions scoring >= ``threshold``."""
    keep = scored.scores >= threshold
    tp = int(scored.true_positive[keep].sum())
    fp = int(keep.sum() - tp)
    n_gt = int(scored.gt_per_class.sum())
    return {
        "recall": tp / n_gt if n_gt else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "fp_per_image": fp / max(scored.images, 1),
    }


def average_precision(scored: Scored, cls: int) -> float | None:
    """AP of one class: area under the monotone precision envelope over recall (all points)."""
    n_gt = int(scored.gt_per_class[cls])
    if not n_gt:
        return None
    keep = scored.classes == cls
    _, tp, fp = _curve(scored.scores[keep], scored.true_positive[keep])
    if not len(tp):
        return 0.0
    recall = np.concatenate([[0.0], tp / n_gt])
    precision = np.concatenate([[1.0], tp / (tp + fp)])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def agnostic(scored_truths: tuple[list, list], iou: float = 0.5) -> Scored:
    """Class-agnostic matching: every prediction and box counted as one class ("is there something here?")."""
    predictions, truths = scored_truths
    flat_p = [(b, s, np.zeros(len(s), int)) for b, s, _ in predictions]
    flat_t = [(b, np.zeros(len(c), int)) for b, c in truths]
    return match(flat_p, flat_t, 1, iou)


def bootstrap(
    predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    truths: list[tuple[np.ndarray, np.ndarray]],
    n_classes: int,
    groups: list[str],
    iou: float = 0.5,
    n: int = 1000,
    seed: int = 0,
) -> dict[str, object]:
    """95 % percentile intervals of per-class AP50, their mean, class-agnostic AP50 and pooled recall at each
    FPPI point, resampling ``groups`` (patients: films of one patient go together) with replacement.

    Each image is matched once; a replicate only concatenates the matched rows of the images it drew, so 1,000
    replicates take seconds. A class absent from a replicate's ground truth is left out of that replicate.
    """
    per_image = [match([p], [t], n_classes, iou) for p, t in zip(predictions, truths, strict=True)]
    per_image_agnostic = [agnostic(([p], [t]), iou) for p, t in zip(predictions, truths, strict=True)]
    names = sorted(set(groups))
    members = {g: [i for i, x in enumerate(groups) if x == g] for g in names}
    rng = np.random.default_rng(seed)

    def combine(parts: list[Scored]) -> Scored:
        return Scored(
            scores=np.concatenate([p.scores for p in parts]),
            classes=np.concatenate([p.classes for p in parts]),
            true_positive=np.concatenate([p.true_positive for p in parts]),
            gt_per_class=np.sum([p.gt_per_class for p in parts], axis=0),
            images=len(parts),
        )

    draws: dict[str, list[float]] = {"ap50_mean": [], "agnostic_ap50": []}
    per_class: dict[int, list[float]] = {c: [] for c in range(n_classes)}
    recall: dict[str, list[float]] = {f"{f:g}": [] for f in FPPI_POINTS}
    for _ in range(n):
        picked = [i for g in rng.choice(len(names), len(names)) for i in members[names[g]]]
        scored = combine([per_image[i] for i in picked])
        aps = []
        for c in range(n_classes):
            ap = average_precision(scored, c)
            if ap is not None:
                per_class[c].append(ap)
                aps.append(ap)
        if aps:
            draws["ap50_mean"].append(float(np.mean(aps)))
        draws["agnostic_ap50"].append(
            average_precision(combine([per_image_agnostic[i] for i in picked]), 0) or 0.0
        )
        for k, v in froc(scored).items():
            recall[k].append(v)

    def interval(values: list[float]) -> list[float] | None:
        return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else None

    return {
        "method": f"{n} bootstrap replicates over {len(names)} patients (seed {seed}), 2.5-97.5 percentiles",
        "ap50_mean": interval(draws["ap50_mean"]),
        "agnostic_ap50": interval(draws["agnostic_ap50"]),
        "per_class_ap50": {c: interval(v) for c, v in per_class.items()},
        "recall_at_fppi": {k: interval(v) for k, v in recall.items()},
    }
