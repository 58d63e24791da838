"""Render a detector version's ``card.json`` as the MODEL_CARD.md that sits beside its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROVENANCE = [
    "Images: NIH ChestX-ray14 (https://nihcc.app.box.com/v/ChestXray-NIHCC). Wang X, Peng Y, Lu L, Lu Z, "
    "Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on "
    "Weakly-Supervised Classification and Localization of Common Thorax Diseases. IEEE CVPR 2017, pp. "
    "3462-3471. The images are provided by the NIH Clinical Center.",
    "Boxes: NIH BBox_List_2017 (8 findings; NIH data, taken from the torchxrayvision 1.5.7 wheel); "
    "ChestX-Det (Deepwise-AILab/ChestX-Det-Dataset @ d82eb07e, 3 radiologists, licence Apache-2.0), mapped "
    "to NIH image names through ChestX-Det10 (Deepwise-AILab/ChestX-Det10-Dataset, no licence stated; "
    "arXiv:2006.10550); RSNA Pneumonia Detection Challenge 2018 'Lung Opacity' boxes (Shih et al., "
    "Radiology: AI 2019), attached to NIH images through torchxrayvision's pixel-matched RSNA->NIH map "
    "(Apache-2.0 repository). The RSNA annotations come with the challenge's terms of use.",
    "Details: ../shared/data/nih_boxes/PROVENANCE.txt and ../shared/data/nih14/PROVENANCE.txt.",
]


def _f(x: float | None, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if x is not None else "n/a"


def _recall(r: dict[str, float]) -> str:
    return " / ".join(_f(r.get(k)) for k in ("0.05", "0.1", "0.2"))


def _box_range(split: dict[str, Any]) -> str:
    counts = [c["boxes"] for c in split["per_class"].values()]
    return f"{min(counts)}-{max(counts)}" if counts else "no"


def _ci(split: dict[str, Any], *keys: str) -> str:
    """`` (lo-hi)`` of the bootstrap interval at ``split['ci'][keys...]``, or nothing for an older card."""
    node: Any = split.get("ci")
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return f" ({node[0]:.3f}-{node[1]:.3f})" if node else ""


def write_detector_card(card: dict[str, Any], path: Path) -> None:
    t = card["training"]
    test, val = card["metrics"]["test"], card["metrics"]["val"]
    ut = test["ultralytics"]
    rt = card["runtime"]
    th = card["thresholds"]
    minutes = (t.get("fit_seconds") or 0) / 60
    lines = [
        f"# Model card: chest X-ray finding detector `{card['version']}`",
        "",
        "Draws boxes around regions of one frontal chest radiograph that look like one of the findings "
        "below. It points a doctor's eyes at candidate regions; it is **not a diagnosis** and a missing "
        "box does not mean a normal film. Every output must be reviewed by a clinician.",
        "",
        "## Model",
        f"- {card['architecture']}; input {card['input']['size']} x {card['input']['size']} px.",
        f"- Preprocessing: {card['input']['preprocessing']}.",
        f"- Serving runtime: {rt['serving']}. ONNX Runtime vs PyTorch on {rt['checked_images']} validation "
        f"images, largest difference of the raw output: boxes {rt['max_abs_diff_boxes_px']:.1e} px, scores "
        f"{rt['max_abs_diff_scores']:.1e} (tolerance {rt['tolerance']['boxes_px']} px / "
        f"{rt['tolerance']['scores']}).",
        f"- Operating point: confidence >= {th['confidence']:.3f}, per-class NMS at IoU {th['nms_iou']}, "
        f"at most {th['max_detections']} boxes; threshold rule: {th.get('rule', 'n/a')}.",
        "",
        "## Classes",
        "| class | source labels gathered | test boxes |",
        "|---|---|---|",
    ]
    for c in card["classes"]:
        boxes = test["per_class"].get(c["name"], {}).get("boxes", 0)
        lines.append(f"| {c['name']} | {', '.join(c['members'])} | {boxes} |")
    lines += [
        "",
        "Why these classes (core/training/nih_boxes.py): findings with at least ~50 boxes are kept; "
        "ChestX-Det Consolidation, RSNA Lung Opacity, NIH Pneumonia and NIH Infiltrate are the same "
        "airspace opacities named by three vocabularies (their boxes overlap at IoU > 0.3 in about half of "
        "co-occurring pairs), so they form one class, Lung Opacity; Nodule and Mass differ only by size "
        "and form Nodule/Mass; Fibrosis, Pleural Thickening, Emphysema, Calcification and Diffuse Nodule "
        "(13-34 boxes each) are not detected. Boxes of one class overlapping at IoU >= 0.5 on an image are "
        "fused into their mean box.",
        "",
        "## Data",
        *(f"- {p}" for p in PROVENANCE),
        f"- {sum(card['data']['images'].values()):,} images at 512 px, patient-disjoint split: train "
        f"{card['data']['images']['train']}, validation "
        f"{card['data']['images']['val']}, test {card['data']['images']['test']} images "
        f"({test.get('negatives')} test images with no box of these classes).",
        f"- Data hash (sha256 over both tables and every image): `{card['data']['sha256']}`.",
        "- This is small by the field's standards (VinDr-CXR has 18,000 images with boxes; NIH's own box "
        f"list 984 boxes): per-class figures rest on {_box_range(test)} test boxes and move by several "
        "points with a few boxes.",
        "",
        "## Training",
        f"- {card['architecture']}; {t['epochs']} epochs "
        f"planned, {t.get('epochs_run')} run{' (early stop)' if t.get('stopped_early') else ''}, best "
        f"validation epoch {t.get('best_epoch')}; image size {t['imgsz']}, batch {t['batch']}, seed "
        f"{t['seed']}, device {t['device']}, {t.get('threads')} threads; {minutes:.1f} min.",
        f"- Augmentation: {', '.join(f'{k}={v:g}' for k, v in (t.get('augment') or {}).items())} "
        "(no flips: a mirrored film puts the heart on the wrong side).",
        f"- Reproduce: `{t.get('command')}` then `{card.get('evaluation', {}).get('command', '')}`.",
        "",
        "## Results on the test split (never used for any choice)",
        f"Ultralytics validator (conf 0.001, NMS IoU 0.7): **mAP50 {ut['map50']:.3f}**, mAP50-95 "
        f"{ut['map50_95']:.3f} over the classes present; validation mAP50 "
        f"{val['ultralytics']['map50']:.3f}.",
        f"Recall at 0.05 / 0.1 / 0.2 false positives per image (IoU >= {card['metrics']['iou']}, all "
        f"{test['images']} test images counted, pooled over classes): "
        f"**{_recall(test['recall_at_fppi'])}**; mean over classes "
        f"{_recall(test['recall_at_fppi_mean_over_classes'])}.",
        *(
            [
                f"Serving path, 95 % intervals from {test['ci']['method']}: AP50 mean over classes "
                f"{test['ap50_mean']:.3f}{_ci(test, 'ap50_mean')}; class-agnostic AP50 (a box of any class "
                f"on any finding) {_f(test.get('agnostic_ap50'))}{_ci(test, 'agnostic_ap50')}; recall at "
                + ", ".join(
                    f"{k} FPs/image {test['recall_at_fppi'][k]:.3f}{_ci(test, 'recall_at_fppi', k)}"
                    for k in ("0.05", "0.1", "0.2")
                )
                + "."
            ]
            if test.get("ci")
            else []
        ),
        f"At the operating threshold: recall {test['at_operating_threshold']['recall']:.3f}, precision "
        f"{test['at_operating_threshold']['precision']:.3f}, "
        f"{test['at_operating_threshold']['fp_per_image']:.2f} false boxes per image.",
        "",
        "| class | test boxes | AP50 | AP50-95 | AP50 (serving path, 95 % CI) | recall at 0.05 / 0.1 / 0.2 "
        "FPs per image |",
        "|---|---|---|---|---|---|",
    ]
    for c in card["classes"]:
        name = c["name"]
        u = ut["per_class"].get(name)
        s = test["per_class"].get(name)
        if u is None and s is None:
            lines.append(f"| {name} | 0 | n/a | n/a | n/a | n/a |")
            continue
        lines.append(
            f"| {name} | {(s or u or {}).get('boxes', 0)} | {_f(u and u['ap50'])} | "
            f"{_f(u and u['ap50_95'])} | {_f(s and s['ap50'])}{_ci(test, 'per_class_ap50', name)} | "
            f"{_recall(s['recall_at_fppi']) if s else 'n/a'} |"
        )
    lines += [
        "",
        "AP50 (serving path) runs the shipped runtime with this project's letterbox and NMS (IoU "
        f"{th['nms_iou']}) and all-point interpolation; it checks that serving sees what Ultralytics "
        "measured.",
        "",
        "## Limits",
        "- Trained on about 730 images (from scratch, or from a COCO backbone of everyday objects): far below "
        "what detectors usually need; expect misses, especially for small findings (nodules, fractures).",
        f"- Boxes are drawn only for {', '.join(th.get('drawn_classes') or [c['name'] for c in card['classes']])}"
        f" ({th.get('drawn_rule', 'every class')}).",
        "- The boxes come from three sources with different habits (NIH boxes are loose, ChestX-Det boxes "
        "tight, RSNA boxes mark pneumonia-like opacity only), and most images were boxed for one or two "
        "findings only: an unboxed finding on a training image was taught as background.",
        "- Frontal (PA/AP) adult films only; not assessed on lateral views, children or devices.",
        "- Not a medical device; not cleared for clinical use.",
        "",
    ]
    path.write_text("\n".join(lines))
