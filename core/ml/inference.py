"""One image in, the models' read out: the use case behind ``python -m core diagnose`` and the upload page.

Models load once per process (lazily, under a lock) and are shared by every thread; each model serializes
its own runtime calls. Nothing here touches the database: saving a diagnosis is the services' job.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core import imaging
from core.ml import film_check
from core.ml.classifier import Classification, Classifier
from core.ml.detector import DetectionResult, Detector, read_classes
from core.ml.registry import ModelNotAvailable, active_model_dir, read_registry

_lock = threading.Lock()
# Keyed on the version folder, which the getters resolve from registry.json on every call (one small file
# read): a promotion takes effect on the next call without reloading a model per call, and an analysis that
# already holds the previous version finishes with it. Superseded versions stay loaded until the process
# ends (a few MB each), which keeps a rollback instant.
_classifiers: dict[Path, Classifier] = {}
_detectors: dict[Path, Detector] = {}

NO_DETECTOR_NOTE = "No detector model is active, so no regions were marked; the classifier ran as usual."


def get_classifier(model_dir: Path | None = None) -> Classifier:
    """The process-wide classifier for ``model_dir`` (default: the active version)."""
    folder = model_dir or active_model_dir("classifier")
    with _lock:
        if folder not in _classifiers:
            _classifiers[folder] = Classifier(folder)
        return _classifiers[folder]


def get_detector(model_dir: Path | None = None) -> Detector:
    """The process-wide detector for ``model_dir`` (default: the active version)."""
    folder = model_dir or active_model_dir("detector")
    with _lock:
        if folder not in _detectors:
            _detectors[folder] = Detector(folder)
        return _detectors[folder]


def detector_configured() -> bool:
    """Whether the registry names an active detector (the classifier works without one)."""
    return bool(read_registry().get("detector"))


def detector_classes() -> tuple[str, ...]:
    """The classes a box can carry: the active detector's, from its model card; ``()`` when no detector
    version is active (or its folder is missing)."""
    if not detector_configured():
        return ()
    try:
        return read_classes(active_model_dir("detector"))
    except ModelNotAvailable:
        return ()


class OutOfScope(imaging.NotChestXray):
    """The learned check: the image's features are far from every chest X-ray the model was trained on."""

    default_message = (
        "This image does not look like a frontal chest X-ray the model was trained on, so it was not analysed. "
        "Please check that the right image was chosen."
    )


def learned_scope_check(classifier: Classifier) -> imaging.PlausibilityCheck:
    """The classifier's out-of-scope test as an extra check for :func:`imaging.check_plausible_chest`."""

    def check(image: imaging.XrayImage) -> None:
        _upright(classifier, image, classifier.classify(image.pixels))

    return check


class NotAChestFilm(OutOfScope):
    """The film check: the classifier's features say this is no chest film at all (a photo, another body part)."""

    default_message = (
        "This image does not look like a chest X-ray (it may be a photograph or an X-ray of another body "
        "part), so it was not analysed. Please check that the right image was chosen."
    )


def _upright(
    classifier: Classifier, image: imaging.XrayImage, result: Classification
) -> tuple[imaging.XrayImage, Classification, str]:
    """Refuse what is no chest film; turn a rotated or inverted film back and read it again.

    Returns the film as read (turned back when needed), its classification and the film check's kind
    (``film_check.UPRIGHT`` when nothing was done). Raises :class:`NotAChestFilm` or :class:`OutOfScope`.
    """
    kind = film_check.UPRIGHT
    check = classifier.film_check
    if check is not None:
        verdict = check.check(result.feature_map.mean(axis=(0, 1)))
        if verdict.refuse:
            raise NotAChestFilm(f"film check: not a chest film (p {verdict.probabilities['not_chest']:.2f})")
        if verdict.turn_back:
            kind = verdict.kind
            image = replace(
                image,
                pixels=film_check.undo(image.pixels, kind),
                notes=(*image.notes, verdict.note),
            )
            result = classifier.classify(image.pixels)
    _refuse_out_of_scope(classifier, result)
    return image, result, kind


def _refuse_out_of_scope(classifier: Classifier, result: Classification) -> None:
    """Raise :class:`OutOfScope` when ``result`` (``classifier``'s read) is not in the model's scope."""
    if not result.in_scope:
        raise OutOfScope(f"scope score {result.scope_score:.2f} > {classifier.scope.threshold:.2f}")


@dataclass(frozen=True)
class Analysis:
    """An accepted image and the models' read of it."""

    image: imaging.XrayImage
    classification: Classification
    timing_ms: dict[str, float]
    detection: DetectionResult | None = None  # None when no detector version is active
    #: what the film check did before the read: film_check.UPRIGHT (nothing), a rotation or INVERTED
    orientation: str = film_check.UPRIGHT

    @property
    def models(self) -> dict[str, str]:
        models = {"classifier": self.classification.model_version}
        if self.detection is not None:
            models["detector"] = self.detection.model_version
        return models

    def as_dict(self) -> dict[str, Any]:
        found = self.detection.detections if self.detection is not None else ()
        return {
            **self.classification.as_dict(),
            "detections": [d.as_dict() for d in found],
            **({} if self.detection is not None else {"detections_note": NO_DETECTOR_NOTE}),
            "models": self.models,
            "orientation": self.orientation,
            "notes": list(self.image.notes),
            "timing_ms": {k: round(v, 1) for k, v in self.timing_ms.items()},
        }


def analyze(
    data: bytes,
    filename: str | None = None,
    classifier: Classifier | None = None,
    detector: Detector | None = None,
) -> Analysis:
    """Read, check, classify and detect on one file; raises :class:`imaging.ImageRejected` on refusal.

    Detection runs on accepted images only, with ``detector`` or the active one; without an active detector
    the analysis carries the classification alone.
    """
    t0 = time.perf_counter()
    image = imaging.read_chest_xray(data, filename)
    t1 = time.perf_counter()
    model = classifier or get_classifier()
    # learned_scope_check's rules on the read already made (checking through it would classify twice)
    image, result, orientation = _upright(model, image, model.classify(image.pixels))
    timing = {"read": (t1 - t0) * 1e3, **result.timing_ms}
    if detector is None and detector_configured():
        detector = get_detector()
    detection = detector.detect(image.pixels) if detector is not None else None
    if detection is not None:
        timing["detection"] = sum(detection.timing_ms.values())
    timing["total"] = (time.perf_counter() - t0) * 1e3
    return Analysis(
        image=image, classification=result, timing_ms=timing, detection=detection, orientation=orientation
    )
