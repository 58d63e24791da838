"""Test-time augmentation (core/training/evaluate_tta.py): rotations of the model input, logit averaging."""

from __future__ import annotations

import numpy as np

from core.ml.classifier import Classifier
from core.ml.registry import active_model_dir
from core.training import evaluate_tta


def test_rotation_keeps_the_frame_and_turns_the_content() -> None:
    x = np.zeros((1, 64, 64, 1), np.float32)
    x[0, 20:44, 30:34, 0] = 1.0  # a vertical bar through the centre
    assert evaluate_tta.rotated(x, 0.0) is x
    turned = evaluate_tta.rotated(x, 6.0)
    assert turned.shape == x.shape and turned.dtype == np.float32
    assert not np.allclose(turned, x)
    assert abs(turned.sum() - x.sum()) / x.sum() < 0.05  # edges repeated, nothing lost or added


def test_candidates_average_logits_then_apply_the_card_calibration() -> None:
    classifier = Classifier(active_model_dir("classifier"))
    f = len(classifier.finding_names)
    logits = np.zeros((2, len(evaluate_tta.ANGLES), f))
    logits[:, evaluate_tta.ANGLES.index(0.0), :] = 3.0
    plain = evaluate_tta.probabilities(classifier, logits, (0.0,))
    mean = evaluate_tta.probabilities(classifier, logits, evaluate_tta.ANGLES)
    assert plain.shape == (2, f)
    assert np.all(mean < plain)  # the four other angles pull the mean logit down from 3 to 0.6
    one = evaluate_tta.probabilities(classifier, np.full_like(logits, 0.6), (0.0,))
    np.testing.assert_allclose(mean, one)


def test_paired_gain_is_zero_for_the_same_read_and_positive_for_a_better_one() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 3))
    noisy = np.clip(y * 0.3 + rng.random((200, 3)), 0, 1)
    better = np.clip(y * 0.8 + rng.random((200, 3)), 0, 1)
    patients = np.arange(200) // 2
    same = evaluate_tta.paired_gain(y, noisy, noisy, patients)
    assert same["value"] == 0 and same["ci"] == [0.0, 0.0]
    gain = evaluate_tta.paired_gain(y, noisy, better, patients)
    assert gain["value"] > 0.1 and gain["ci"][0] > 0
