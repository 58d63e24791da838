"""The conditional GAN of chest films (core.training.cgan) and the synthetic-image ablation built on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.config import get_settings
from core.errors import ValidationError
from core.ml import registry
from core.training import cgan
from core.training.nih14 import FINDINGS, Split

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "models" / "gan" / "cgan-64-v1"


@pytest.fixture(scope="module")
def generator() -> cgan.Generator:
    return cgan.load_generator(PUBLISHED / "generator.pt")


def _labels(n: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(FINDINGS))) < 0.15).astype(np.float32)
    labels[:3, FINDINGS.index("Hernia")] = 1.0  # a rare finding with a few positives
    labels[3:, FINDINGS.index("Hernia")] = 0.0
    return labels


def test_published_generator_makes_64px_grey_films_deterministically(generator):
    labels = cgan.condition_vectors(_labels(), FINDINGS.index("Effusion"), 6, seed=1)
    films = cgan.generate(generator, labels, seed=7)
    assert films.shape == (6, 64, 64) and films.dtype == np.uint8
    assert films.std() > 10  # a trained generator draws structure, not a flat grey square
    assert np.array_equal(films, cgan.generate(generator, labels, seed=7))
    assert not np.array_equal(films, cgan.generate(generator, labels, seed=8))


def test_the_condition_changes_the_film(generator):
    none = np.zeros((4, len(FINDINGS)), np.float32)
    some = none.copy()
    some[:, [FINDINGS.index("Effusion"), FINDINGS.index("Cardiomegaly")]] = 1.0
    a = cgan.generate(generator, none, seed=3).astype(float)
    b = cgan.generate(generator, some, seed=3).astype(float)  # same noise, other labels
    assert np.abs(a - b).mean() > 1.0


def test_generator_round_trips_through_the_tensor_only_file(tmp_path):
    g = cgan.Generator(z_dim=8, width=8)
    cgan.save_generator(g, tmp_path / "g.pt")
    loaded = cgan.load_generator(tmp_path / "g.pt")
    labels = np.eye(len(FINDINGS), dtype=np.float32)[:3]
    # fp16 storage: the films agree to a grey level or so
    diff = np.abs(cgan.generate(g, labels, 0).astype(int) - cgan.generate(loaded, labels, 0).astype(int))
    assert diff.max() <= 2


def test_card_pins_data_and_recipe_and_the_registry_ignores_gans(generator):
    card = json.loads((PUBLISHED / "card.json").read_text())
    assert card["kind"] == "gan" and card["served"] is False
    assert card["findings"] == list(FINDINGS)
    assert len(card["data"]["data_sha256"]) == 64
    assert card["recipe"]["z_dim"] == generator.z_dim and card["recipe"]["width"] == generator.width
    # the GAN is no servable kind: the registry neither lists nor accepts it
    with pytest.raises(ValidationError):
        registry.list_versions("gan", ROOT / "models")
    for kind in registry.KINDS:
        versions = registry.list_versions(kind, ROOT / "models")
        assert versions and all(v.path.parent == ROOT / "models" / kind for v in versions)
    assert (PUBLISHED / "samples.png").is_file() and "samples.png" in (
        PUBLISHED / "MODEL_CARD.md"
    ).read_text()


def test_condition_vectors_follow_the_requested_finding():
    labels = _labels()
    hernia = FINDINGS.index("Hernia")
    vectors = cgan.condition_vectors(labels, hernia, 50, seed=0)
    assert vectors.shape == (50, len(FINDINGS)) and (vectors[:, hernia] == 1).all()
    # each vector is a real row's, co-occurring findings included
    assert all(any(np.array_equal(v, row) for row in labels[:3]) for v in vectors)
    assert not cgan.condition_vectors(labels, None, 5, seed=0).any()
    with pytest.raises(ValueError):
        cgan.condition_vectors(np.zeros_like(labels), hernia, 5, seed=0)
    assert cgan.rarest(labels, 1) == [hernia]


def test_ablation_arms_add_the_same_rows_as_synthetic_films_or_repeats(generator):
    from core.training import gan_ablation as ab

    labels = _labels()
    n = len(labels)
    train = Split(
        np.zeros((n, 64, 64), np.uint8),
        labels,
        np.arange(n),
        np.array([f"{i}.png" for i in range(n)], object),
    )
    rare = cgan.rarest(labels, 2)
    rows = ab.extra_rows(train, rare, per_finding=5)
    assert len(rows) == 10
    for j, k in enumerate(rare):
        assert (labels[rows[5 * j : 5 * j + 5], k] == 1).all()
    films, synth_labels = ab.synthetic_set(generator, train, rows)
    real = ab.arm_split("real", train, rows, (films, synth_labels))
    synthetic = ab.arm_split("synthetic", train, rows, (films, synth_labels))
    repeat = ab.arm_split("repeat", train, rows, (films, synth_labels))
    assert len(real) == n and len(synthetic) == len(repeat) == n + 10
    assert np.array_equal(synthetic.labels[n:], labels[rows]) and np.array_equal(
        repeat.labels, synthetic.labels
    )
    assert synthetic.images[n:].std() > 0 and np.array_equal(synthetic.images[n:], films)


def test_fast_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from core.training.gan_ablation import fast_auc

    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.2).astype(float)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # rounded: many ties
    assert fast_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert fast_auc(np.array([1, 1, 0, 0.0]), np.arange(4.0)) is None  # fewer than 3 positives


# ------------------------------------------------------------------------------------------ slow


def _shared_data() -> Path:
    data = get_settings().shared_data_dir
    if not (data / "nih14" / "labels.csv").exists():
        pytest.skip("shared NIH data not here")
    return data


@pytest.mark.slow
def test_a_few_gan_iterations_write_a_loadable_generator_and_grid(tmp_path):
    _shared_data()
    out = tmp_path / "cgan"
    cgan.main(["--out", str(out), "--iterations", "3", "--limit", "64", "--log-every", "1", "--width", "8"])
    record = json.loads((out / "train.json").read_text())
    assert record["iterations"] == 3 and record["train_images"] == 64 and record["data_sha256"] is None
    assert [h["iteration"] for h in record["history"]] == [1, 2, 3]
    assert all(np.isfinite(h["loss_d"]) and np.isfinite(h["loss_g"]) for h in record["history"])
    g = cgan.load_generator(out / "generator.pt")
    assert cgan.generate(g, np.zeros((2, len(FINDINGS)), np.float32), 0).shape == (2, 64, 64)
    assert (out / "samples.png").stat().st_size > 0
    with pytest.raises(SystemExit):  # a --limit run is never published
        cgan.publish(out, tmp_path / "models" / "gan" / "x")


@pytest.mark.slow
def test_ablation_smoke_run_measures_both_arms(tmp_path):
    from core.training import gan_ablation

    _shared_data()
    out = tmp_path / "ablation.json"
    result = gan_ablation.main(
        [
            "--generator", str(PUBLISHED), "--limit", "150", "--epochs", "1", "--seeds", "0",
            "--rare", "2", "--per-finding", "4", "--arms", "real", "synthetic",
            "--work", str(tmp_path / "work"), "--json", str(out),
        ]
    )  # fmt: skip
    assert json.loads(out.read_text())["measured"]["arms"] == ["real", "synthetic"]
    assert len(result["rare_findings"]) == 2
    runs = result["measured"]["runs"]
    assert runs["real"][0]["train_images"] + 8 == runs["synthetic"][0]["train_images"]
    table = result["measured"]["table"]
    assert "mean AUC, all 14 findings" in table and "synthetic - real" in table["mean AUC, all 14 findings"]
    assert "| finding (test positives)" in result["markdown"]
