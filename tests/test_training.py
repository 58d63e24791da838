"""Training and evaluation mechanics: a one-epoch run on a tiny set, and the metrics the model card reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import get_settings
from core.training import evaluate_classifier as ev
from core.training.nih14 import FINDINGS

SAMPLES = Path(__file__).resolve().parent.parent / "assets" / "samples"


@pytest.fixture
def tiny_nih14(tmp_path, monkeypatch) -> Path:
    """A labels.csv + images folder shaped like shared/data/nih14, made from the shipped samples."""
    images = tmp_path / "data" / "nih14" / "images_256"
    images.mkdir(parents=True)
    rows = []
    pngs = sorted(SAMPLES.glob("*.png"))
    for i in range(12):
        src = pngs[i % len(pngs)]
        name = f"{i:08d}_000.png"
        shutil.copy(src, images / name)
        labels = {f: int((i + k) % 3 == 0) for k, f in enumerate(FINDINGS)}
        split = "train" if i < 8 else ("val" if i < 10 else "test")
        rows.append(
            {
                "path": f"images_256/{name}",
                "image_index": name,
                "resolution": 1024,
                "finding_labels": "",
                **labels,
                "patient_id": i,
                "age": 50,
                "sex": "F",
                "view": "PA",
                "split": split,
                "source": "test",
                "duplicate_of_other_row": 0,
            }
        )
    rows.append({**rows[0], "duplicate_of_other_row": 1})  # must be dropped
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "nih14" / "labels.csv", index=False)
    monkeypatch.setenv("CXR_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.mark.slow
def test_one_epoch_training_run_produces_a_loadable_model(tiny_nih14, tmp_path):
    import keras

    from core.training.train_classifier import parse_args, train

    out = tmp_path / "run"
    record = train(
        parse_args(
            [
                "--data-dir",
                str(tiny_nih14),
                "--size",
                "64",
                "--epochs",
                "1",
                "--batch",
                "4",
                "--out",
                str(out),
            ]
        )
    )
    assert record["train_images"] == 8 and record["val_images"] == 2
    assert record["data_sha256"] and len(record["data_sha256"]) == 64
    assert json.loads((out / "train.json").read_text())["findings"] == list(FINDINGS)
    model = keras.saving.load_model(out / "model.keras", compile=False)
    probs, fmap = model.predict_on_batch(np.zeros((1, 64, 64, 1), np.float32))
    assert probs.shape == (1, 14) and fmap.shape == (1, 2, 2, 1280)
    assert np.all((np.asarray(probs) > 0) & (np.asarray(probs) < 1))


def test_bootstrap_ci_brackets_the_auc_and_skips_findings_without_positives():
    rng = np.random.default_rng(1)
    n = 300
    y = (rng.random((n, 14)) < 0.2).astype(float)
    y[:, 13] = 0  # no positives: AUC undefined
    p = np.clip(y * 0.3 + rng.random((n, 14)) * 0.7, 0, 1)
    out = ev.bootstrap_auc(y, p, patients=np.arange(n) // 2)
    first = out["per_finding"][FINDINGS[0]]
    assert first["ci95"][0] < first["auc"] < first["ci95"][1]
    assert out["per_finding"][FINDINGS[13]]["auc"] is None
    assert out["findings_with_auc"] == 13
    assert out["mean_auc_ci95"][0] < out["mean_auc"] < out["mean_auc_ci95"][1]


def test_urgent_threshold_reaches_the_sensitivity_target_on_validation():
    rng = np.random.default_rng(2)
    y = (rng.random(400) < 0.15).astype(float)
    p = np.clip(0.25 * y + rng.random(400) * 0.75, 0, 1)
    thr, rule = ev.choose_threshold(y, p, urgent=True)
    assert ((p >= thr) & (y == 1)).sum() / y.sum() >= ev.URGENT_SENSITIVITY
    assert "sensitivity" in rule
    loose, _ = ev.choose_threshold(y, p, urgent=False)
    assert loose >= thr - 0.2  # Youden's point is not forced down to 90% sensitivity


def test_calibration_undoes_the_balanced_loss_prior():
    """A network trained with balanced weights says ~0.5 on average; calibration brings it back to prevalence."""
    rng = np.random.default_rng(3)
    prevalence = np.full(14, 0.05)
    y = (rng.random((2000, 14)) < prevalence).astype(float)
    balanced = np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.05, y.shape)
    cal = ev.fit_calibration(np.clip(balanced, 0.01, 0.99), y, prevalence)
    from core.ml.classifier import calibrate

    calibrated = calibrate(np.clip(balanced, 0.01, 0.99), cal)
    assert abs(calibrated.mean() - y.mean()) < 0.01
    assert ev.expected_calibration_error(y, calibrated) < ev.expected_calibration_error(y, balanced)
