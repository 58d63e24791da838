"""The committed classifier: loads, reproduces its recorded outputs, heat maps are Grad-CAM, scope check works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.imaging import read_image
from core.ml import inference
from core.ml.classifier import Classifier, colorize, overlay_heatmap
from core.ml.registry import active_model_dir

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "assets" / "samples"


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(active_model_dir("classifier", ROOT / "models"))


@pytest.fixture(scope="module")
def sample_pixels() -> np.ndarray:
    return read_image((SAMPLES / "00000310_001.png").read_bytes()).pixels


def test_card_names_fourteen_findings_with_thresholds(classifier):
    assert len(classifier.findings) == 14
    assert all(0.0 < f.threshold < 1.0 for f in classifier.findings)
    assert {"Pneumothorax", "Effusion"} <= {f.name for f in classifier.findings if f.urgent}
    assert classifier.card["metrics"]["test"]["mean_auc"] > 0.6


@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_committed_model_reproduces_recorded_probabilities(classifier, runtime):
    model = classifier if runtime == "litert" else Classifier(classifier.model_dir, runtime="keras")
    assert model.runtime == runtime
    for name, expected in classifier.card["reference_outputs"].items():
        got = model.classify(read_image((SAMPLES / name).read_bytes()).pixels).probabilities
        assert got.keys() == expected.keys()
        np.testing.assert_allclose(list(got.values()), list(expected.values()), atol=1e-3)


def test_top3_and_flags_follow_probabilities_and_thresholds(classifier, sample_pixels):
    result = classifier.classify(sample_pixels)
    ranked = sorted(result.probabilities.items(), key=lambda kv: -kv[1])
    assert [n for n, _ in result.top3] == [n for n, _ in ranked[:3]]
    thresholds = {f.name: f.threshold for f in classifier.findings}
    assert set(result.flagged) == {n for n, p in result.probabilities.items() if p >= thresholds[n]}
    assert result.in_scope


def test_heatmap_is_grad_cam(classifier, sample_pixels):
    """The cheap heat map equals Grad-CAM computed with gradients through the Keras model (for an ensemble,
    through the member whose feature map it shows: core.training.ensemble)."""
    import keras
    import tensorflow as tf

    from core.ml.classifier import to_model_input
    from core.training.ensemble import FEATURES_MEMBER

    model = keras.saving.load_model(classifier.model_dir / "model.keras", compile=False)
    if FEATURES_MEMBER in [layer.name for layer in model.layers]:
        model = model.get_layer(FEATURES_MEMBER)  # fed the served input as it is (the largest member)
    finding = "Cardiomegaly"
    index = classifier.finding_names.index(finding)
    logits_model = keras.Model(model.input, [model.get_layer("logits").output, model.output[1]])
    x = tf.constant(to_model_input(sample_pixels, classifier.input_size))
    with tf.GradientTape() as tape:
        logits, fmap = logits_model(x, training=False)
        target = logits[:, index]
    grads = tape.gradient(target, fmap)[0].numpy()
    alphas = grads.mean(axis=(0, 1))
    grad_cam = np.maximum((fmap[0].numpy() * alphas).sum(axis=-1), 0)
    grad_cam /= grad_cam.max()
    ours = classifier.heatmap(classifier.classify(sample_pixels), finding)
    np.testing.assert_allclose(ours, grad_cam, atol=2e-3)


def test_overlay_keeps_aspect_and_colours_hot_regions(sample_pixels):
    heat = np.zeros((7, 7), np.float32)
    heat[3, 3] = 1.0
    image = overlay_heatmap(sample_pixels[:, :800], heat)
    assert image.mode == "RGB" and image.size == (800, 1024)
    arr = np.asarray(image).astype(int)
    centre, corner = arr[512, 400], arr[20, 20]
    assert centre[0] - centre[2] > 20  # warm colour blended in the middle
    assert corner[0] == corner[1] == corner[2]  # cold corner stays plain grey
    assert tuple(colorize(np.array([0.0]))[0]) == (0, 0, 4)


def test_a_grey_photograph_is_refused_as_out_of_scope(classifier):
    skimage_data = pytest.importorskip("skimage.data")
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage_data.camera()).save(buf, format="PNG")
    with pytest.raises(inference.OutOfScope) as info:
        inference.analyze(buf.getvalue(), "camera.png", classifier=classifier)
    assert info.value.code == "not_chest_xray"
    assert "chest X-ray" in info.value.user_message


def test_cli_reports_each_file_and_never_stops_on_a_bad_one(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes((SAMPLES / "00000310_001.png").read_bytes()[:4000])
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    paths = [
        str(broken),
        str(SAMPLES / "00000310_001.png"),
        str(empty),
        str(SAMPLES / "nih_dx_chest_nofinding_1024.dcm"),
    ]
    env = {**os.environ, "CXR_MODELS_DIR": str(ROOT / "models")}
    proc = subprocess.run(
        [sys.executable, "-m", "core", "diagnose", *paths, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in rows] == paths
    assert [r["accepted"] for r in rows] == [False, True, False, True]
    assert rows[0]["code"] == "corrupt_image" and rows[2]["code"] == "empty_file"
    good = rows[1]
    assert len(good["findings"]) == 14 and len(good["top3"]) == 3
    assert good["models"]["classifier"]
    assert good["timing_ms"]["total"] > 0
    assert proc.returncode == 1  # some files were refused
