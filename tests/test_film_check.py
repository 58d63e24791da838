"""The film check (core/ml/film_check.py) with the committed classifier: what is no chest film is refused, a
rotated or inverted film is turned back, read as the upright one, saved with its orientation and said so."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.auth import AuthenticatedUser
from core.imaging import ImageRejected
from core.ml import film_check as fc
from core.ml import inference
from core.records import PatientRecord
from core.xray import diagnosis as dx
from db import models
from db.session import session_scope
from tests.support.xray_samples import PNG, PNGS


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _turned(path: Path, kind: str) -> bytes:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    return _png((fc.make(grey, kind) * 255 + 0.5).astype(np.uint8))


def _moon() -> bytes:
    import skimage

    return (Path(skimage.__file__).parent / "data" / "moon.png").read_bytes()


@pytest.mark.parametrize("kind", fc.KINDS)
def test_undo_inverts_make(kind: str) -> None:
    pixels = np.random.default_rng(0).random((6, 9)).astype(np.float32)
    assert np.allclose(fc.undo(fc.make(pixels, kind), kind), pixels)


def test_a_version_without_the_check_loads_none(tmp_path: Path) -> None:
    assert fc.FilmCheck.load(tmp_path) is None


def test_the_committed_classifier_carries_a_check_with_cuts_from_validation() -> None:
    classifier = inference.get_classifier()
    assert classifier.film_check is not None
    section = classifier.card["film_check"]
    assert section["cuts"]["not_chest"] == pytest.approx(classifier.film_check.not_chest_cut)
    # measured on held-out pictures that were never used to fit it: the moon among them
    held_out = section["held_out_non_chest"]
    assert held_out["refused"] == held_out["pictures"] > 40
    assert "skimage/moon.png" in {row["name"] for row in held_out["rows"]}


def test_the_moon_is_refused_as_no_chest_film() -> None:
    with pytest.raises(ImageRejected) as refused:
        inference.analyze(_moon(), "moon.png")
    assert refused.value.code == "not_chest_xray"
    assert isinstance(refused.value, inference.NotAChestFilm)
    assert "does not look like a chest X-ray" in refused.value.user_message


@pytest.mark.parametrize("path", PNGS[:2], ids=lambda p: p.name)
@pytest.mark.parametrize("kind", [fc.ROT90, fc.ROT180, fc.ROT270, fc.INVERTED])
def test_a_turned_or_inverted_film_is_read_as_the_upright_one(path: Path, kind: str) -> None:
    upright = inference.analyze(_png(np.asarray(Image.open(path).convert("L"))), "upright.png")
    assert upright.orientation == fc.UPRIGHT and not upright.image.notes
    turned = inference.analyze(_turned(path, kind), "turned.png")
    assert turned.orientation == kind
    assert turned.image.notes == (fc.NOTES[kind],)
    assert turned.image.shape == upright.image.shape
    probs = np.array(list(turned.classification.probabilities.values()))
    same = np.array(list(upright.classification.probabilities.values()))
    assert np.abs(probs - same).max() < 0.02


@pytest.mark.parametrize("kind", [fc.ROT180, fc.INVERTED])
def test_the_orientation_is_saved_and_shown_with_the_study(
    make_patient: Callable[..., PatientRecord], doctor: AuthenticatedUser, kind: str
) -> None:
    make_patient("ED-1")
    view = dx.diagnose_upload("ED-1", _turned(PNG, kind), "film.png", doctor)
    assert view.orientation == kind and view.orientation_note == fc.NOTES[kind]
    again = dx.get_diagnosis(view.study_id, doctor)
    assert again.orientation == kind and again.orientation_note
    assert again.as_dict()["orientation"] == kind
    with session_scope() as s:
        assert s.get(models.Diagnosis, view.diagnosis_id).orientation == kind  # type: ignore[union-attr]
