"""Fit and measure the film check (``core.ml.film_check``) of a classifier version.

    python -m core.training.fit_film_check                 # active classifier: fit, measure, print
    python -m core.training.fit_film_check --write         # ... and store film_check.npz + the card section

Data, all read through the product's own reader (``core.imaging.read_image``) and the served classifier:

* chest films: the nih14 **train** split (fit) and **validation** split (cuts, and the measurements of
  turned and inverted films), each film upright, rotated by 90/180/270 degrees and inverted;
* images that are not chest films, split by *source picture* into a fit half and a held-out half (a picture
  and every crop of it fall on one side): the photographs, micrographs and scans shipped inside scikit-image,
  scikit-learn, matplotlib and Ultralytics, and pydicom's bundled non-chest DICOM images. Each fit picture
  gives several crops, grey and turned versions; the held-out pictures are measured as uploaded, byte for
  byte, through the whole refusal path (header rules, pixel rules, out-of-scope statistics, this check).
  The moon photograph (scikit-image) is always held out: it is the one a trial found accepted.

Cuts, on validation only: ``not_chest_cut`` refuses at most 0.2 % of the validation chest films (upright or
turned); ``orientation_cut`` turns back at most 0.5 % of the upright validation films.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from PIL import Image

from core import imaging
from core.config import PROJECT_ROOT, get_settings
from core.ml import film_check as fc
from core.ml.classifier import Classifier
from core.ml.registry import active_model_dir

log = logging.getLogger("fit_film_check")

FIT_CHEST_FILMS = 900  # train-split films used (x 5 kinds); more buys little and costs minutes
FALSE_REFUSAL = 0.002
FALSE_TURN = 0.005
ALWAYS_HELD_OUT = ("moon.png",)
CROPS_PER_PICTURE = 12


def _pooled(classifier: Classifier, pixels: np.ndarray) -> np.ndarray:
    return classifier.classify(pixels).feature_map.mean(axis=(0, 1))


def _read(data: bytes, name: str) -> imaging.XrayImage | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return imaging.read_image(data, name)
    except imaging.ImageRejected:
        return None


def chest_features(
    classifier: Classifier, paths: list[Path], kinds: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Pooled features of every film in every kind: {kind: (N, D)}."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    for i, path in enumerate(paths):
        image = _read(path.read_bytes(), path.name)
        if image is None:
            continue
        for kind in kinds:
            out[kind].append(_pooled(classifier, fc.make(image.pixels, kind)))
        if (i + 1) % 200 == 0:
            log.info("  %d/%d chest films", i + 1, len(paths))
    return {k: np.stack(v) for k, v in out.items()}


def _package_dir(name: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def non_chest_pictures() -> Iterator[tuple[str, bytes]]:
    """(name, file bytes) of every non-chest picture shipped in the installed packages."""
    for package, sub, patterns in (
        ("skimage", "data", ("*.png", "*.jpg")),
        ("sklearn", "datasets/images", ("*.jpg",)),
        ("ultralytics", "assets", ("*.jpg",)),
        ("matplotlib", "mpl-data/sample_data", ("*.jpg", "*.png")),
    ):
        root = _package_dir(package)
        if root is None:
            continue
        for pattern in patterns:
            for path in sorted((root / sub).glob(pattern)):
                yield f"{package}/{path.name}", path.read_bytes()
    from pydicom.data import get_testdata_file

    for path in sorted(Path(str(get_testdata_file("CT_small.dcm"))).parent.glob("*.dcm")):
        yield f"pydicom/{path.name}", path.read_bytes()


def held_out(name: str) -> bool:
    """Deterministic half of the pictures, by name; the moon always."""
    if name.split("/")[-1] in ALWAYS_HELD_OUT:
        return True
    return hashlib.sha256(name.encode()).digest()[0] % 2 == 1


def _pixels_of_any(data: bytes, name: str) -> np.ndarray | None:
    """Grey [0, 1] pixels of a picture even when the product refuses it (colour photos): for fitting only."""
    image = _read(data, name)
    if image is not None:
        return image.pixels
    if name.endswith(".dcm"):
        import pydicom

        try:
            arr = pydicom.dcmread(io.BytesIO(data)).pixel_array.astype(np.float32)
        except Exception:  # pydicom's test files fail in many ways: they are simply not used
            return None
        if arr.ndim != 2 or arr.max() <= arr.min():
            return None
        return (arr - arr.min()) / (arr.max() - arr.min())
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except Exception:
        return None


def augmented(pixels: np.ndarray, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Crops, turns and negatives of one non-chest picture."""
    h, w = pixels.shape
    yield pixels
    for _ in range(CROPS_PER_PICTURE):
        frac = rng.uniform(0.45, 1.0)
        ch, cw = max(16, int(h * frac)), max(16, int(w * frac * rng.uniform(0.8, 1.25)))
        ch, cw = min(ch, h), min(cw, w)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = pixels[y : y + ch, x : x + cw]
        crop = np.rot90(crop, int(rng.integers(0, 4)))
        if rng.random() < 0.3:
            crop = 1.0 - crop
        yield np.ascontiguousarray(crop)


def non_chest_fit_features(classifier: Classifier) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    feats, names = [], []
    for name, data in non_chest_pictures():
        if held_out(name):
            continue
        pixels = _pixels_of_any(data, name)
        if pixels is None or min(pixels.shape) < 32:
            continue
        names.append(name)
        feats += [_pooled(classifier, p) for p in augmented(pixels, rng)]
    return np.stack(feats), names


def refusal_on_held_out(classifier: Classifier, check: fc.FilmCheck) -> dict[str, Any]:
    """The whole refusal path on each held-out picture, as uploaded."""
    from core.ml.inference import OutOfScope, _refuse_out_of_scope

    rows = []
    for name, data in non_chest_pictures():
        if not held_out(name):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = imaging.read_chest_xray(data, name)
            result = classifier.classify(image.pixels)
            try:
                _refuse_out_of_scope(classifier, result)
                verdict = check.check(result.feature_map.mean(axis=(0, 1)))
                by = "film check" if verdict.refuse else None
            except OutOfScope:
                by = "out-of-scope statistics"
        except imaging.ImageRejected as exc:
            by = f"rules ({exc.code})"
        rows.append({"name": name, "refused_by": by})
    refused = [r for r in rows if r["refused_by"]]
    return {
        "pictures": len(rows),
        "refused": len(refused),
        "accepted": [r["name"] for r in rows if not r["refused_by"]],
        "by_film_check_only": [r["name"] for r in rows if r["refused_by"] == "film check"],
        "rows": rows,
    }


def fit(classifier: Classifier, data_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    table = pd.read_csv(data_dir / "nih14" / "labels.csv")
    table = table[table["duplicate_of_other_row"] == 0]
    train = table[table["split"] == "train"].sample(frac=1.0, random_state=0).head(FIT_CHEST_FILMS)
    val = table[table["split"] == "val"]
    chest_kinds = fc.KINDS[:-1]
    log.info("features of %d train films x %d kinds", len(train), len(chest_kinds))
    fit_chest = chest_features(classifier, [data_dir / "nih14" / p for p in train["path"]], chest_kinds)
    log.info("features of the fit half of the non-chest pictures")
    fit_other, fit_names = non_chest_fit_features(classifier)
    x = np.concatenate([*(fit_chest[k] for k in chest_kinds), fit_other])
    y = np.concatenate(
        [np.full(len(fit_chest[k]), i) for i, k in enumerate(chest_kinds)] + [np.full(len(fit_other), 5)]
    )
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(max_iter=3000, C=0.05, class_weight="balanced").fit(scaler.transform(x), y)
    arrays: dict[str, Any] = {
        "kinds": np.array(fc.KINDS),
        "coef": model.coef_,
        "intercept": model.intercept_,
        "mean": scaler.mean_,
        "scale": scaler.scale_,
    }
    # cuts on validation
    log.info("features of %d validation films x %d kinds", len(val), len(chest_kinds))
    val_chest = chest_features(classifier, [data_dir / "nih14" / p for p in val["path"]], chest_kinds)
    probe = fc.FilmCheck.__new__(fc.FilmCheck)
    probe.weights = model.coef_ / scaler.scale_
    probe.bias = model.intercept_ - (model.coef_ * scaler.mean_ / scaler.scale_).sum(axis=1)
    probs = {k: probe.probabilities(v) for k, v in val_chest.items()}
    nc = fc.KINDS.index(fc.NOT_CHEST)
    all_chest_nc = np.concatenate([p[:, nc] for p in probs.values()])
    not_chest_cut = float(np.quantile(all_chest_nc, 1 - FALSE_REFUSAL)) + 1e-9
    upright_turn = probs[fc.UPRIGHT][:, 1:5].max(axis=1)
    orientation_cut = max(0.5, float(np.quantile(upright_turn, 1 - FALSE_TURN)) + 1e-9)
    arrays["not_chest_cut"] = np.array(not_chest_cut)
    arrays["orientation_cut"] = np.array(orientation_cut)
    probe.not_chest_cut, probe.orientation_cut = not_chest_cut, orientation_cut
    val_measure = {}
    for kind, p in probs.items():
        decided = [probe.decide(row) for row in p]
        val_measure[kind] = {
            "films": len(decided),
            "recognised": float(np.mean([d == kind for d in decided])),
            "refused_as_not_chest": float(np.mean([d == fc.NOT_CHEST for d in decided])),
            "left_as_is": float(np.mean([d == fc.UPRIGHT for d in decided])),
        }
    measured = {
        "fit": {
            "chest_films": len(train),
            "chest_kinds": list(chest_kinds),
            "non_chest_pictures": len(fit_names),
            "non_chest_images_with_crops": len(fit_other),
        },
        "cuts": {"not_chest": not_chest_cut, "orientation": orientation_cut},
        "validation": val_measure,
    }
    return arrays, measured


def false_refusals_on_all_chest(
    classifier: Classifier, check: fc.FilmCheck, data_dir: Path
) -> dict[str, Any]:
    """The check's refusals and turns on every real chest film here (upright as stored)."""
    paths = sorted((data_dir / "nih14" / "images_256").glob("*.png")) + sorted(
        (data_dir / "nih14" / "images_64").glob("*.png")
    )
    paths += sorted((data_dir / "nih_boxes" / "images_512").glob("*.jpg"))
    paths += sorted((data_dir / "samples" / "png_1024").glob("*.png"))
    paths += [
        p
        for p in sorted((PROJECT_ROOT / "assets" / "samples").glob("*"))
        if p.suffix in (".png", ".dcm") and "NOT_CHEST" not in p.name
    ]
    refused, turned, n = [], [], 0
    for path in paths:
        image = _read(path.read_bytes(), path.name)
        if image is None:
            continue
        n += 1
        verdict = check.check(_pooled(classifier, image.pixels))
        if verdict.refuse:
            refused.append(path.name)
        elif verdict.turn_back:
            turned.append(f"{path.name}: {verdict.kind}")
    return {
        "films": n,
        "refused": len(refused),
        "turned": len(turned),
        "refused_names": refused[:20],
        "turned_names": turned[:20],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="classifier version folder (default: active)"
    )
    parser.add_argument("--write", action="store_true", help="store film_check.npz and the card section")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("core.imaging", "core.imaging.read", "core.imaging.dicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = get_settings()
    model_dir = args.model or active_model_dir("classifier")
    classifier = Classifier(model_dir)
    arrays, measured = fit(classifier, settings.shared_data_dir)
    staging = settings.var_dir / "eval" / f"{classifier.version}-film-check"
    staging.mkdir(parents=True, exist_ok=True)
    np.savez(staging / fc.FILE, **arrays)
    check = fc.FilmCheck.load(staging)
    assert check is not None
    measured["held_out_non_chest"] = refusal_on_held_out(classifier, check)
    measured["all_chest_films"] = false_refusals_on_all_chest(classifier, check, settings.shared_data_dir)
    printable = dict(measured)
    printable["held_out_non_chest"] = {k: v for k, v in measured["held_out_non_chest"].items() if k != "rows"}
    print(json.dumps(printable, indent=2))
    if args.write:
        np.savez(model_dir / fc.FILE, **arrays)
        card_path = model_dir / "card.json"
        card = json.loads(card_path.read_text())
        card["film_check"] = {
            "file": fc.FILE,
            "method": "multinomial logistic regression on pooled features",
            **measured,
        }
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"wrote {model_dir / fc.FILE} and the film_check section of {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
