"""Retraining from doctors' reviewed studies: reading an export, the masked loss, and a tiny fine-tune of each
model that publishes a loadable candidate version without making it active.

The exports here are written in the format of ``python -m core corrections export`` (format 1) from the
project's own sample images; the NIH folders are tiny copies shaped like ../shared/data (no ../shared needed).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.config import get_settings
from core.ml.registry import read_registry, set_active
from core.training.corrections_data import ExportError, read_export, same_image_as, thumbnails
from core.training.nih14 import FINDINGS
from core.training.nih_boxes import CLASSES
from tests.support.nih_samples import mini_nih_boxes

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "assets" / "samples"
CLASSIFIER = ROOT / "models" / "classifier" / read_registry(ROOT / "models")["classifier"]


def _sample_rows() -> list[dict[str, str]]:
    with (SAMPLES / "labels.csv").open() as f:
        return list(csv.DictReader(f))


def _shifted(image: Image.Image, dx: int) -> Image.Image:
    """Another radiograph as far as the leakage check is concerned: the sample rolled sideways."""
    return Image.fromarray(np.roll(np.asarray(image.convert("L")), dx, axis=1))


def write_export(root: Path, *, leak: bool = True, sources: bool = False) -> Path:
    """A format-1 export: each sample shifted (a new image) with boxes, plus (``leak``) one unshifted copy;
    with ``sources`` the issue-12 provenance columns (Pneumonia accepted, the rest set by the doctor)."""
    (root / "images").mkdir(parents=True)
    (root / "yolo" / "images").mkdir(parents=True)
    (root / "yolo" / "labels").mkdir(parents=True)
    rows, boxes_total = [], 0
    items = [(r, 300) for r in _sample_rows()] + ([(_sample_rows()[0], 0)] if leak else [])
    for i, (row, dx) in enumerate(items):
        with Image.open(SAMPLES / row["file"]) as im:
            image = _shifted(im, dx).resize((512, 512))
        sha = hashlib.sha256(f"{row['file']}-{dx}".encode()).hexdigest()
        image.save(root / "images" / f"{sha}.png")
        shutil.copy(root / "images" / f"{sha}.png", root / "yolo" / "images" / f"{sha}.png")
        lines = []
        for part in filter(None, row["boxes_1024px(class:x1,y1,x2,y2;...)"].split(";")):
            label, coords = part.split(":")
            if label not in CLASSES:
                continue
            x1, y1, x2, y2 = (float(c) / 1024 for c in coords.split(","))
            lines.append(
                f"{CLASSES.index(label)} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}"
            )
        boxes_total += len(lines)
        (root / "yolo" / "labels" / f"{sha}.txt").write_text("".join(f"{x}\n" for x in lines))
        present = set(row["finding_labels"].split("|"))
        labels = {f: (1 if f in present else 0) for f in FINDINGS}
        labels["Hernia"] = ""  # the doctor was unsure
        rows.append(
            {
                "image": f"images/{sha}.png",
                "study_id": i + 1,
                "correction_id": i + 1,
                "patient_key": hashlib.sha256(f"P{i}".encode()).hexdigest(),
                "reviewed_at": "2026-11-24T00:00:00+00:00",
                "reviewed_by": "dr.test",
                **labels,
                **(
                    {f"{f}_source": "accepted" if f == "Pneumonia" else "doctor" for f in FINDINGS}
                    if sources
                    else {}
                ),
            }
        )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    (root / "yolo" / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    files = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    manifest = {
        "format_version": 1,
        "created_at": "2026-11-24T00:00:00+00:00",
        "created_by": "admin.test",
        "counts": {"studies": len(rows), "boxes": boxes_total},
        "classifier_findings": list(FINDINGS),
        "detector_classes": list(CLASSES),
        "files": files,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def _test_images(size: int) -> np.ndarray:
    """The 'test split' of these tests: the four samples as they are."""
    out = []
    for row in _sample_rows():
        with Image.open(SAMPLES / row["file"]) as im:
            out.append(np.asarray(im.convert("L").resize((size, size), Image.Resampling.LANCZOS)))
    return np.stack(out)


def test_an_export_is_read_with_uncertain_labels_masked_and_test_images_dropped(tmp_path):
    export = write_export(tmp_path / "export")
    reviewed = read_export(export, FINDINGS, CLASSES, test_images=_test_images(224))
    assert len(reviewed) == 4  # the unshifted copy of a test image is dropped, the shifted ones kept
    assert len(reviewed.dropped_as_test_images) == 1
    labels = reviewed.label_matrix()
    assert labels.shape == (4, 14)
    assert np.isnan(labels[:, FINDINGS.index("Hernia")]).all()
    assert labels[:, FINDINGS.index("Pneumonia")].sum() == 3  # three of the samples are labelled Pneumonia
    assert reviewed.images(64).shape == (4, 64, 64)
    assert all(img.exists() and lab.exists() for img, lab in reviewed.yolo_pairs())


def test_the_leakage_check_tells_a_re_encoded_image_from_another_one():
    base = _test_images(256)
    jpeg_like = np.clip(base.astype(int) + np.random.default_rng(0).integers(-2, 3, base.shape), 0, 255)
    assert same_image_as(thumbnails(jpeg_like.astype(np.uint8)), thumbnails(base)).all()
    rolled = np.roll(base, 60, axis=2)
    assert not same_image_as(thumbnails(rolled), thumbnails(base)).any()


def test_a_changed_file_or_other_findings_refuse_the_export(tmp_path):
    export = write_export(tmp_path / "export", leak=False)
    with pytest.raises(ExportError, match="findings"):
        read_export(export, tuple(reversed(FINDINGS)))
    with pytest.raises(ExportError, match="box classes"):
        read_export(export, FINDINGS, ("Nodule",))
    victim = next((export / "images").iterdir())
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(ExportError, match="missing or changed"):
        read_export(export, FINDINGS)
    with pytest.raises(ExportError, match="not a corrections export"):
        read_export(tmp_path, FINDINGS)


def test_the_masked_loss_ignores_what_the_doctor_left_uncertain():
    from core.training.retrain_classifier import masked_weighted_bce

    labels = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, np.nan]], np.float32)
    loss = masked_weighted_bce(labels)
    logits = np.array([[2.0, -1.0], [0.5, 0.3], [1.0, 5.0]], np.float32)
    with_nan = float(np.asarray(loss(labels, logits))[2])
    # row 3 is its first finding's term alone: positive weight 3 known / (2 x 2 positives) = 0.75,
    # times -log(sigmoid(1)), averaged over the one known label
    assert with_nan == pytest.approx(0.75 * np.log1p(np.exp(-1.0)), rel=1e-5)
    changed = logits.copy()
    changed[2, 1] = -7.0  # whatever the model says about an uncertain label changes nothing
    assert float(np.asarray(loss(labels, changed))[2]) == pytest.approx(with_nan, rel=1e-6)


def test_accepted_labels_weigh_less_and_unlabelled_nothing(tmp_path):
    """Issue 12: a label the doctor accepted unchanged from the model weighs ``accepted_weight``."""
    old_style = read_export(write_export(tmp_path / "old", leak=False), FINDINGS)
    assert (old_style.weight_matrix(0.3)[:, FINDINGS.index("Pneumonia")] == 1.0).all()  # no provenance: 1
    assert old_style.source_counts() == {}
    reviewed = read_export(write_export(tmp_path / "new", leak=False, sources=True), FINDINGS)
    weights = reviewed.weight_matrix(0.3)
    assert np.allclose(weights[:, FINDINGS.index("Pneumonia")], 0.3)
    assert (weights[:, FINDINGS.index("Hernia")] == 0).all()  # no label, no weight
    assert (weights[:, FINDINGS.index("Mass")] == 1).all()
    assert reviewed.source_counts() == {"accepted": 4, "doctor": 4 * 13}
    with pytest.raises(ValueError):
        reviewed.weight_matrix(1.5)


def test_the_loss_weighs_each_label_by_its_weight():
    from core.training.retrain_classifier import masked_weighted_bce

    labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    logits = np.array([[0.5, 0.2], [-0.3, 0.1]], np.float32)
    loss = masked_weighted_bce(labels)
    plain = np.asarray(loss(labels, logits))
    full = np.asarray(loss(np.concatenate([labels, np.ones_like(labels)], axis=1), logits))
    assert np.allclose(plain, full)  # weight 1 everywhere is the unweighted loss
    half = np.asarray(loss(np.concatenate([labels, [[1.0, 0.5], [1.0, 1.0]]], axis=1), logits))
    zero = np.asarray(loss(np.concatenate([labels, [[1.0, 0.0], [1.0, 1.0]]], axis=1), logits))
    assert zero[0] < half[0] < plain[0] and half[0] == pytest.approx((plain[0] + zero[0]) / 2, rel=1e-5)
    assert half[1] == pytest.approx(plain[1])


@pytest.fixture
def tiny_nih14(tmp_path, monkeypatch) -> Path:
    """shared/data/nih14 in miniature: 24 train, 8 val, 8 test rows from the samples, both classes present."""
    images = tmp_path / "data" / "nih14" / "images_256"
    images.mkdir(parents=True)
    rows = []
    pngs = sorted(SAMPLES.glob("*.png"))
    for i in range(40):
        name = f"{i:08d}_000.png"
        shutil.copy(pngs[i % len(pngs)], images / name)
        split = "train" if i < 24 else ("val" if i < 32 else "test")
        rows.append(
            {
                "path": f"images_256/{name}",
                "image_index": name,
                "patient_id": i,
                "split": split,
                "duplicate_of_other_row": 0,
                **{f: int((i + k) % 2 == 0) for k, f in enumerate(FINDINGS)},
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "nih14" / "labels.csv", index=False)
    models = tmp_path / "models"
    shutil.copytree(CLASSIFIER, models / "classifier" / CLASSIFIER.name)
    set_active("classifier", CLASSIFIER.name, models)
    monkeypatch.setenv("CXR_SHARED_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CXR_MODELS_DIR", str(models))
    monkeypatch.setenv("CXR_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.mark.usefixtures("tiny_nih14")
@pytest.mark.slow
def test_classifier_retrain_publishes_a_loadable_candidate_that_is_not_active(tmp_path):
    from core.imaging import read_image
    from core.ml.classifier import Classifier
    from core.training.retrain_classifier import retrain

    models = get_settings().models_dir
    export = write_export(tmp_path / "export")
    target = retrain(export, tmp_path / "run", epochs=1, batch=8, version="cand-1")
    card = json.loads((target / "card.json").read_text())
    assert card["version"] == "cand-1" and card["parent"] == CLASSIFIER.name
    # the shifted samples differ from every val/test row; the unshifted copy is one of them
    assert card["retraining"]["reviewed_studies_used"] == 4
    assert len(card["retraining"]["dropped_as_val_or_test_image"]) == 1
    assert card["training"]["train_images"] == 24 + 4 * 4
    assert len(card["test_split_sha256"]) == 64
    assert np.isfinite(card["metrics"]["test"]["mean_auc"])
    assert (target / "MODEL_CARD.md").exists() and (target / "model.tflite").exists()
    assert read_registry(models)["classifier"] == CLASSIFIER.name  # promotion is a separate act

    training = card["training"]
    assert training["best_epoch"] in (0, 1) and np.isfinite(training["parent_val_mean_auc"])
    assert training["best_val_mean_auc"] >= training["parent_val_mean_auc"]

    import keras

    def weights(folder: Path) -> list[np.ndarray]:
        return keras.saving.load_model(folder / "model.keras", compile=False).get_weights()

    moved = [not np.array_equal(a, b) for a, b in zip(weights(CLASSIFIER), weights(target), strict=True)]
    # epoch 0 is the parent itself: its weights are kept unless the fine-tuned epoch beat it on validation
    assert any(moved) == (training["best_epoch"] == 1)
    pixels = read_image((SAMPLES / "00000310_001.png").read_bytes()).pixels
    assert set(Classifier(target).classify(pixels).probabilities) == set(FINDINGS)

    with pytest.raises(SystemExit, match="never overwritten"):
        retrain(export, tmp_path / "run2", epochs=1, batch=8, version="cand-1")


@pytest.mark.slow
def test_detector_retrain_publishes_a_candidate_measured_on_the_parents_test_split(tmp_path, monkeypatch):
    from core.ml.detector import Detector
    from core.training.evaluate_detector import evaluate, publish
    from core.training.nih_boxes import build_yolo_dataset
    from core.training.retrain_detector import retrain
    from core.training.train_detector import train

    models = tmp_path / "models"
    monkeypatch.setenv("CXR_MODELS_DIR", str(models))
    monkeypatch.setenv("CXR_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    try:
        base = build_yolo_dataset(tmp_path / "data", data_dir=mini_nih_boxes(tmp_path / "source"))
        train(tmp_path / "parent-run", base, imgsz=64, epochs=1, batch=2, workers=0, patience=5)
        publish(
            evaluate(tmp_path / "parent-run", check_images=2), "det-parent", activate=True, models_dir=models
        )

        export = write_export(tmp_path / "export", leak=False)
        target = retrain(export, tmp_path / "run", base_yaml=base, epochs=1, batch=2, version="det-cand")
        card = json.loads((target / "card.json").read_text())
        parent = json.loads((models / "detector" / "det-parent" / "card.json").read_text())
        assert card["parent"] == "det-parent"
        assert card["retraining"]["reviewed_studies_used"] == 4
        assert card["data"]["images"]["test"] == parent["data"]["images"]["test"]
        assert card["data"]["images"]["train"] == parent["data"]["images"]["train"] + 4 * 3
        assert read_registry(models)["detector"] == "det-parent"
        with Image.open(SAMPLES / "00000310_001.png") as im:
            result = Detector(target).detect(np.asarray(im.convert("L"), np.float32) / 255.0)
        assert result.model_version == "det-cand"
    finally:
        get_settings.cache_clear()


def test_retrain_command_refuses_a_folder_that_is_not_an_export(tmp_path, capsys):
    from core.__main__ import main

    assert main(["retrain", str(tmp_path)]) == 1
    assert "not a corrections export" in capsys.readouterr().err


def test_retrain_command_skips_a_kind_without_an_active_model(tmp_path, monkeypatch, capsys):
    from core.__main__ import main

    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("CXR_MODELS_DIR", str(models))
    get_settings.cache_clear()
    try:
        export = write_export(tmp_path / "export", leak=False)
        assert main(["retrain", str(export), "--only", "detector"]) == 1
    finally:
        get_settings.cache_clear()
    assert "detector: no active version to fine-tune" in capsys.readouterr().out
