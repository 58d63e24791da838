"""Do the heat maps point at the finding? The pointing game on radiologists' boxes, against fixed maps.

    python -m core.training.evaluate_heatmaps               # active classifier; prints the table
    python -m core.training.evaluate_heatmaps --write-card  # ... and records it in card.json / MODEL_CARD.md

For every boxed film of ``<shared data>/nih_boxes`` and every classifier finding that has a box on it, the
finding's class activation map (the served classifier's own ``heatmap``, upsampled bilinearly) has its peak
either inside one of that finding's boxes (a hit) or not. Two fixed maps play the same game: the image
**centre**, and the **prior**: the peak of the mean box mask of that finding on the box *training* split
(where that finding usually is). A finding whose heat map does not beat both fixed maps on the box
**validation** split is marked ``localised: false`` in the card, and the result page does not offer its heat
map ("not localised by this model"); the test split's figures are reported beside, never used to decide.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from PIL import Image

from core import imaging
from core.config import get_settings
from core.ml.boxes import SOURCE_TO_FINDING
from core.ml.classifier import Classifier
from core.ml.registry import active_model_dir
from core.training.evaluate_classifier import wilson
from core.training.model_card import put_section

log = logging.getLogger("evaluate_heatmaps")

BOX_TO_FINDING = SOURCE_TO_FINDING
FRAME = 1024.0  # box coordinates are in NIH's 1024 px frame
GRID = 64  # the map is upsampled to this grid before its peak is taken
MIN_BOXED_FILMS = 5


def _peak(cam: np.ndarray) -> tuple[float, float]:
    """(x, y) in [0, 1] of the bilinearly upsampled map's maximum."""
    up = np.asarray(Image.fromarray(cam.astype(np.float32)).resize((GRID, GRID), Image.Resampling.BILINEAR))
    y, x = np.unravel_index(int(np.argmax(up)), up.shape)
    return (x + 0.5) / GRID, (y + 0.5) / GRID


def _inside(point: tuple[float, float], boxes: np.ndarray) -> bool:
    x, y = point
    return bool(((boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])).any())


def _prior_points(boxes: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Per finding, the peak of the mean box mask on the training split."""
    out: dict[str, tuple[float, float]] = {}
    for finding, rows in boxes[boxes["split"] == "train"].groupby("finding"):
        mask = np.zeros((GRID, GRID))
        for r in rows.itertuples():
            x1, y1 = int(r.x1 / FRAME * GRID), int(r.y1 / FRAME * GRID)
            x2, y2 = int(np.ceil(r.x2 / FRAME * GRID)), int(np.ceil(r.y2 / FRAME * GRID))
            mask[y1:y2, x1:x2] += 1
        y, x = np.unravel_index(int(np.argmax(mask)), mask.shape)
        out[str(finding)] = (float(x + 0.5) / GRID, float(y + 0.5) / GRID)
    return out


def _rate(hits: list[bool]) -> dict[str, Any]:
    k, n = int(sum(hits)), len(hits)
    return {"rate": k / n if n else None, "ci95": wilson(k, n), "hits": k, "films": n}


def evaluate(model_dir: Path, data_dir: Path) -> dict[str, Any]:
    classifier = Classifier(model_dir)
    root = data_dir / "nih_boxes"
    boxes = pd.read_csv(root / "boxes_1024px.csv")
    boxes = boxes[boxes["label"].isin(list(BOX_TO_FINDING))].copy()
    boxes["finding"] = boxes["label"].map(BOX_TO_FINDING)
    files = pd.read_csv(root / "images.csv").set_index("image_index")["file"]
    prior = _prior_points(boxes)
    report: dict[str, Any] = {"version": classifier.version, "grid": GRID, "splits": {}}
    for split in ("val", "test"):
        games: dict[str, dict[str, list[bool]]] = {}
        rows = boxes[boxes["split"] == split]
        for image_index, film_boxes in rows.groupby("image_index"):
            image = imaging.read_image((root / files[image_index]).read_bytes(), str(files[image_index]))
            result = classifier.classify(image.pixels)
            for finding, fb in film_boxes.groupby("finding"):
                norm = fb[["x1", "y1", "x2", "y2"]].to_numpy() / FRAME
                game = games.setdefault(str(finding), {"heat map": [], "centre": [], "prior": []})
                game["heat map"].append(_inside(_peak(classifier.heatmap(result, str(finding))), norm))
                game["centre"].append(_inside((0.5, 0.5), norm))
                game["prior"].append(_inside(prior.get(str(finding), (0.5, 0.5)), norm))
        report["splits"][split] = {
            finding: {name: _rate(hits) for name, hits in game.items()}
            for finding, game in sorted(games.items())
        }
    localised: dict[str, bool | None] = {}
    for finding in classifier.finding_names:
        val = report["splits"]["val"].get(finding)
        if not val or val["heat map"]["films"] < MIN_BOXED_FILMS:
            localised[finding] = None  # no boxes to judge by: the map is offered, with that caveat
            continue
        best_fixed = max(val["centre"]["rate"], val["prior"]["rate"])
        localised[finding] = bool(val["heat map"]["rate"] > best_fixed)
    report["localised"] = localised
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "Pointing game: the share of boxed films whose heat-map peak falls inside a radiologist's box of that "
        "finding, against the image centre and the prior (the peak of the finding's mean box on the box "
        "training split). Wilson 95 % intervals. *Localised* is decided on validation: the heat map must beat "
        "both fixed maps there.",
        "",
        "| finding | localised | val films | val heat map | val centre | val prior | test films | test heat map | "
        "test centre | test prior |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(entry: dict[str, Any] | None) -> str:
        if not entry or entry["rate"] is None:
            return "—"
        lo, hi = (max(0.0, v) for v in entry["ci95"])
        return f"{entry['rate']:.0%} ({lo:.0%}–{hi:.0%})"

    for finding, flag in report["localised"].items():
        val = report["splits"]["val"].get(finding, {})
        test = report["splits"]["test"].get(finding, {})
        word = {True: "yes", False: "**no**", None: "no boxes"}[flag]
        lines.append(
            f"| {finding} | {word} | {val.get('heat map', {}).get('films', 0)} | {cell(val.get('heat map'))} | "
            f"{cell(val.get('centre'))} | {cell(val.get('prior'))} | {test.get('heat map', {}).get('films', 0)} | "
            f"{cell(test.get('heat map'))} | {cell(test.get('centre'))} | {cell(test.get('prior'))} |"
        )
    return "\n".join(lines)


def write_card(model_dir: Path, report: dict[str, Any], text: str) -> None:
    card_path = model_dir / "card.json"
    card = json.loads(card_path.read_text())
    card["heatmaps"] = report
    for f in card["findings"]:
        f["localised"] = report["localised"].get(f["name"])
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    put_section(
        model_dir / "MODEL_CARD.md",
        "heatmap-evaluation",
        "Heat maps: do they point at the finding?",
        "python -m core.training.evaluate_heatmaps --write-card",
        text,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="classifier version folder (default: active)"
    )
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    model_dir = args.model or active_model_dir("classifier")
    report = evaluate(model_dir, get_settings().shared_data_dir)
    text = markdown(report)
    print(text)
    if args.write_card:
        write_card(model_dir, report, text)
        print(f"\nwrote the heat-map section of {model_dir / 'card.json'} and MODEL_CARD.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
