"""core.training.ensemble: classifier runs joined into one network that serves, evaluates and promotes like one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from core.training import ensemble  # noqa: E402
from core.training.train_classifier import build_classifier  # noqa: E402


def _run(folder: Path, size: int, seed: int, data: str = "same-data") -> Path:
    keras.utils.set_random_seed(seed)
    _, inference = build_classifier("lite0", size, pretrained=False)
    folder.mkdir()
    inference.save(folder / "model.keras")
    record = {
        "variant": "lite0",
        "input_size": size,
        "pretrained": None,
        "best_epoch": 1,
        "best_val_mean_auc": 0.5,
        "fit_seconds": 60.0,
        "data_sha256": data,
        "command": f"train {size}",
    }
    (folder / "train.json").write_text(json.dumps(record))
    return folder


def test_the_joined_network_averages_the_members_and_shows_the_largest_members_features(
    tmp_path: Path,
) -> None:
    small, large = _run(tmp_path / "small", 32, 1), _run(tmp_path / "large", 48, 2)
    assert ensemble.main([str(small), str(large), "--out", str(tmp_path / "ens")]) == 0
    joined = keras.saving.load_model(tmp_path / "ens" / "model.keras", compile=False)
    image = np.random.default_rng(0).random((2, 48, 48, 1)).astype(np.float32)
    probs, fmap = joined.predict(image, verbose=0)

    a = keras.saving.load_model(small / "model.keras", compile=False)
    b = keras.saving.load_model(large / "model.keras", compile=False)
    resized = keras.layers.Resizing(32, 32, interpolation="bilinear")(image)
    pa, _ = a.predict(np.asarray(resized), verbose=0)
    pb, fb = b.predict(image, verbose=0)
    np.testing.assert_allclose(probs, (pa + pb) / 2, atol=1e-5)
    np.testing.assert_allclose(fmap, fb, atol=1e-5)  # the heat map's features: the 48-px member's
    np.testing.assert_allclose(
        ensemble.logits_layer(joined).get_weights()[0], b.get_layer("logits").get_weights()[0]
    )
    record = json.loads((tmp_path / "ens" / "train.json").read_text())
    assert (
        record["input_size"] == 48 and record["variant"] == "lite0+lite0" and record["fit_seconds"] == 120.0
    )
    assert [m["input_size"] for m in record["members"]] == [32, 48]


def test_runs_trained_on_different_data_are_not_joined(tmp_path: Path) -> None:
    a, b = _run(tmp_path / "a", 32, 1), _run(tmp_path / "b", 32, 2, data="other-data")
    with pytest.raises(SystemExit):
        ensemble.main([str(a), str(b), "--out", str(tmp_path / "ens")])
    assert not (tmp_path / "ens").exists()
