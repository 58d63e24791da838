"""The learning-loop measurement (``core.training.learning_loop``): the hold-out of NIH train patients M0 never
sees, the exclusion of those films from the first training and from retraining, the paired test statistic, and
(slow) a tiny end-to-end run of the whole product path in a scratch installation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.training import learning_loop
from core.training.nih14 import FINDINGS, Split, read_patient_list, without_patients

ROOT = Path(__file__).resolve().parent.parent


def _table(n_patients: int = 400) -> pd.DataFrame:
    """A labels table shaped like nih14's: 1-3 films per patient, the split by md5(patient_id) as NIH's."""
    import hashlib

    rows = []
    for pid in range(1, n_patients + 1):
        bucket = int(hashlib.md5(str(pid).encode()).hexdigest(), 16) % 100
        split = "train" if bucket < 70 else "val" if bucket < 85 else "test"
        for film in range(1 + pid % 3):
            rows.append({"patient_id": pid, "image_index": f"{pid:08d}_{film:03d}.png", "split": split})
    return pd.DataFrame(rows)


def test_the_holdout_is_train_patients_only_deterministic_and_about_the_asked_share():
    table = _table()
    held = learning_loop.holdout_patients(table)
    assert held == learning_loop.holdout_patients(table.sample(frac=1.0, random_state=1))  # order-free
    train = set(table.loc[table["split"] == "train", "patient_id"].astype(str))
    assert set(held) <= train
    assert 0.3 < len(held) / len(train) < 0.5
    # every film of a held-out patient is held out (patient-disjoint): no held-out patient has a kept film
    films = table[table["patient_id"].astype(str).isin(held)]
    assert (films["split"] == "train").all()
    # a larger share holds out a superset; another salt another set
    assert set(held) < set(learning_loop.holdout_patients(table, 60))
    assert set(held) != set(learning_loop.holdout_patients(table, salt="other"))


def test_a_patient_with_any_val_or_test_film_is_never_held_out():
    table = _table()
    held = learning_loop.holdout_patients(table)
    # make one held-out patient also have a test film (a changed table): it must drop out of the hold-out
    pid = held[0]
    extra = pd.DataFrame([{"patient_id": int(pid), "image_index": "x.png", "split": "test"}])
    assert pid not in learning_loop.holdout_patients(pd.concat([table, extra]))


def test_the_review_order_is_fixed_and_its_prefixes_are_nested():
    a, b = learning_loop.review_order(50, 7), learning_loop.review_order(50, 7)
    assert np.array_equal(a, b) and sorted(a) == list(range(50))
    assert not np.array_equal(a, learning_loop.review_order(50, 8))
    assert set(a[:10]) < set(a[:30])


def _split(patients: list[int]) -> Split:
    n = len(patients)
    return Split(
        np.zeros((n, 8, 8), np.uint8),
        np.zeros((n, len(FINDINGS)), np.float32),
        np.asarray(patients),
        np.asarray([f"{p}_{i}.png" for i, p in enumerate(patients)]),
    )


def test_without_patients_drops_every_film_of_the_listed_patients(tmp_path):
    listing = tmp_path / "holdout.txt"
    listing.write_text("# held out\n2\n\n3\n")
    assert read_patient_list(listing) == {"2", "3"}
    kept = without_patients(_split([1, 2, 2, 3, 4]), read_patient_list(listing))
    assert kept.patient_ids.tolist() == [1, 4] and len(kept.images) == 2


class _Reached(Exception):
    """Raised by a stub to stop a training run once it has what the test checks."""


def test_train_classifier_leaves_the_listed_patients_out(tmp_path, monkeypatch):
    from core.training import train_classifier

    splits = {"train": _split([1, 2, 2, 3]), "val": _split([5, 6]), "test": _split([7])}
    monkeypatch.setattr(train_classifier, "load_splits", lambda *_a, **_k: splits)
    seen = {}

    def stop(labels):
        seen["n"] = len(labels)
        raise _Reached

    monkeypatch.setattr(train_classifier, "weighted_bce", stop)
    stub = type("Stub", (), {"compile": lambda *_a, **_k: None})()  # the loss is built before compile runs
    monkeypatch.setattr(train_classifier, "build_classifier", lambda *_a, **_k: (stub, stub))
    listing = tmp_path / "holdout.txt"
    listing.write_text("2\n")
    common = ["--size", "32", "--scratch", "--out", str(tmp_path / "run")]
    with pytest.raises(_Reached):
        train_classifier.train(train_classifier.parse_args([*common, "--exclude-patients", str(listing)]))
    assert seen["n"] == 2
    with pytest.raises(_Reached):  # default: every train film
        train_classifier.train(train_classifier.parse_args(common))
    assert seen["n"] == 4


def test_retrain_classifier_leaves_the_listed_patients_out_of_the_nih_rows(tmp_path, monkeypatch):
    from core.ml.registry import read_registry
    from core.training import retrain_classifier
    from core.training.corrections_data import ReviewedSet

    splits = {"train": _split([1, 2, 2, 3]), "val": _split([5, 6]), "test": _split([7])}
    monkeypatch.setattr(retrain_classifier, "load_splits", lambda *_a, **_k: splits)
    empty = ReviewedSet(tmp_path, {}, pd.DataFrame(columns=["image", *FINDINGS]), FINDINGS, ())
    monkeypatch.setattr(retrain_classifier, "read_export", lambda *_a, **_k: empty)
    seen = {}

    def stop(train, *_a, **_k):
        seen["patients"] = sorted(train.patient_ids.tolist())
        raise _Reached

    monkeypatch.setattr(retrain_classifier, "training_arrays", stop)
    listing = tmp_path / "holdout.txt"
    listing.write_text("2\n3\n")
    parent = read_registry(ROOT / "models")["classifier"]
    with pytest.raises(_Reached):
        retrain_classifier.retrain(
            tmp_path, tmp_path / "run", parent=parent, version="t-ft1", exclude_patients=listing
        )
    assert seen["patients"] == [1]
    with pytest.raises(_Reached):
        retrain_classifier.retrain(tmp_path, tmp_path / "run", parent=parent, version="t-ft1")
    assert seen["patients"] == [1, 2, 2, 3]


def test_the_paired_gain_is_zero_for_the_same_model_and_positive_for_a_better_one():
    from core.training.evaluate_triage import Reads

    rng = np.random.default_rng(0)
    n, k = 240, 3
    labels = (rng.random((n, k)) < 0.3).astype(np.int8)
    noisy = labels + rng.normal(0, 1.0, (n, k))
    clean = labels + rng.normal(0, 0.3, (n, k))
    patients = np.arange(n) // 2
    sources = np.where(np.arange(n) < n // 2, "a", "b")

    def reads(p):
        return Reads(p, np.zeros((n, 1)), labels, patients, sources, np.zeros(n, bool))

    same = learning_loop.compare_on_test(reads(noisy), reads(noisy))
    assert same["gain"]["overall"]["value"] == 0.0
    better = learning_loop.compare_on_test(reads(clean), reads(noisy))
    gain = better["gain"]
    assert gain["overall"]["value"] > 0.1 and gain["overall"]["ci95"][0] > 0
    assert set(gain["per_source"]) == {"a", "b"} and gain["source_balanced"]["value"] > 0.1
    assert better["mean_auc"]["new"]["overall"] - better["mean_auc"]["old"]["overall"] == pytest.approx(
        gain["overall"]["value"]
    )
    from sklearn.metrics import roc_auc_score

    assert learning_loop.fast_auc(labels[:, 0], noisy[:, 0]) == pytest.approx(
        roc_auc_score(labels[:, 0], noisy[:, 0])
    )


@pytest.mark.slow
def test_a_tiny_loop_runs_the_product_path_end_to_end_in_a_scratch_installation(tmp_path):
    registry = (ROOT / "models" / "registry.json").read_bytes()
    env = {k: v for k, v in os.environ.items() if k not in ("CXR_DATABASE_URL", "DATABASE_URL")}
    env.update(OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    out = tmp_path / "loop"
    command = [sys.executable, "-m", "core.training.learning_loop", "--out", str(out), "--limit", "4"]
    command += ["--size", "64", "--m0-epochs", "1", "--sizes", "3", "--controls", "zero"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    arms = results["arms"]
    assert arms["0"]["reviewed_studies_used"] == 0 and arms["0"]["done"]
    assert arms["3"]["reviewed_studies_used"] == 3 and arms["3"]["exported_studies"] == 3
    assert arms["3"]["test"]["gain"]["overall"]["value"] is not None
    assert isinstance(arms["3"]["promotion"]["accepted"], bool)
    reviews = [json.loads(x) for x in (out / "reviews.jsonl").read_text().splitlines()]
    held = set((out / "holdout_patients.txt").read_text().split())
    assert len(reviews) == 3 and all(r["patient"].removeprefix("NIH-") in held for r in reviews)
    # the same films again, the fine-tune's own best epoch kept even where M0 scores higher on validation
    again = subprocess.run(
        [*command[:-4], "--sizes", "3", "--controls", "--no-parent-epoch"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    arm = json.loads((out / "results.json").read_text())["arms"]["3-np"]
    assert arm["best_epoch"] >= 1 and arm["parent_is_a_candidate"] is False
    assert arm["reviewed_studies_used"] == 3
    # the scratch installation is where everything went: the project's registry is untouched
    assert (ROOT / "models" / "registry.json").read_bytes() == registry
    assert (out / "install" / "models" / "classifier" / "loop-m0-ft-3" / "card.json").exists()


def _export(root: Path, n: int = 6) -> Path:
    """A minimal format-1 export (``core.training.corrections_data``): n noise images, varied labels."""
    import hashlib

    from PIL import Image

    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"images/{i:064x}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(root / name)
        labels = {f: int(k == i) for k, f in enumerate(FINDINGS)}
        rows.append(
            {"image": name, "patient_key": f"p{i}", **labels, **{f"{f}_source": "doctor" for f in FINDINGS}}
        )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    files = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.*")}
    manifest = {"format_version": 1, "classifier_findings": list(FINDINGS), "files": files}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_the_shuffled_control_permutes_the_labels_across_films_and_stays_a_valid_export(tmp_path):
    from core.training.corrections_data import read_export

    source = _export(tmp_path / "export")
    learning_loop.shuffled_export(source, tmp_path / "shuffled", FINDINGS, seed=3)
    before, after = read_export(source, FINDINGS), read_export(tmp_path / "shuffled", FINDINGS)
    assert list(before.table["image"]) == list(after.table["image"])  # same films
    a, b = before.label_matrix(), after.label_matrix()
    assert sorted(map(tuple, a)) == sorted(map(tuple, b))  # the same label rows ...
    assert not np.array_equal(a, b)  # ... on other films
