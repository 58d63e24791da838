"""Chest X-ray classifier: grey pixels -> a calibrated probability for each ChestX-ray14 finding, and heat maps.

preprocess -> predict -> postprocess, with everything that varies between model versions (finding names,
input size, calibration, thresholds, the out-of-scope statistics) read from the version's ``card.json``:
nothing here hard-codes a finding. The network runs in LiteRT (TensorFlow Lite) when the version ships a
``model.tflite`` (several times faster than Keras on a CPU) and in Keras otherwise.

Heat maps are Grad-CAM. The network ends in global average pooling and one linear layer, so the gradient of
a finding's logit with respect to the last feature map is that finding's weight vector divided by the
number of positions, the same at every position: Grad-CAM reduces exactly to the class activation map,
``ReLU(sum_k w_k A_k)``. The runtime returns the feature map alongside the probabilities, so a heat map for
any finding costs a matrix product, not a second (gradient) pass. ``tests/test_classifier.py`` checks this
against a GradientTape Grad-CAM.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.imaging import to_uint8
from core.ml.film_check import FilmCheck
from core.ml.probability import logit, sigmoid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FindingSpec:
    """One finding as a model version defines it."""

    name: str
    threshold: float  # on the calibrated probability, chosen on the validation split (see the card)
    urgent: bool  # urgent findings get thresholds for high sensitivity and drive triage
    calibration: tuple[float, float]  # calibrated logit = a * logit + b

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class ScopeModel:
    """Out-of-scope statistics of the pooled features of the training chest X-rays (probabilistic PCA)."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (K, D), orthonormal rows
    variances: np.ndarray  # (K,)
    residual_variance: float
    threshold: float  # score above which an image is not like the training chest X-rays

    def score(self, pooled: np.ndarray) -> np.ndarray:
        """Mahalanobis-type distance, normalized by the feature dimension (about 1 for typical chest films)."""
        centred = np.atleast_2d(pooled) - self.mean
        z = centred @ self.components.T
        residual = centred - z @ self.components
        d2 = (z**2 / self.variances).sum(axis=1) + (residual**2).sum(axis=1) / self.residual_variance
        return d2 / self.mean.shape[0]


@dataclass(frozen=True)
class Classification:
    """The classifier's read of one image."""

    probabilities: dict[str, float]  # calibrated, per finding, in card order
    flagged: tuple[str, ...]  # findings at or over their threshold, most probable first
    top3: tuple[tuple[str, float], ...]
    scope_score: float  # > scope threshold: the image does not look like a chest X-ray the model knows
    in_scope: bool
    model_version: str
    timing_ms: dict[str, float]
    feature_map: np.ndarray  # (h, w, C) last convolutional features, kept for heat maps

    def as_dict(self) -> dict[str, Any]:
        return {
            "findings": {k: round(v, 4) for k, v in self.probabilities.items()},
            "flagged": list(self.flagged),
            "top3": [{"finding": n, "probability": round(p, 4)} for n, p in self.top3],
            "scope_score": round(self.scope_score, 3),
        }


#: The name core.training.evaluate_classifier imports (training code moves to :mod:`core.ml.probability` in its
#: own change).
_logit = logit


def calibrate(raw: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Apply per-finding Platt scaling; ``calibration`` is (F, 2) rows of (a, b) on the logit."""
    return sigmoid(logit(raw) * calibration[:, 0] + calibration[:, 1])


def to_model_input(pixels: np.ndarray, size: int) -> np.ndarray:
    """Grey [0, 1] pixels of any size -> (1, size, size, 1) float32, resized as the training images were.

    Training images are 8-bit and were shrunk with Lanczos; the same path here avoids a train/serve skew.
    A non-square film is resized without padding, as NIH made its 1024 x 1024 images.
    """
    grey = Image.fromarray(to_uint8(pixels))
    if grey.size != (size, size):
        grey = grey.resize((size, size), Image.Resampling.LANCZOS)
    return (np.asarray(grey, dtype=np.float32) / 255.0)[None, :, :, None]


class _LiteRTRunner:
    """One LiteRT interpreter; ``invoke`` is serialized because an interpreter is not thread-safe."""

    def __init__(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = self._interpreter.get_output_details()
        # probabilities are the (1, F) output, the feature map the 4-D one
        self._probs = next(o["index"] for o in outputs if len(o["shape"]) == 2)
        self._fmap = next(o["index"] for o in outputs if len(o["shape"]) == 4)
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self._interpreter.set_tensor(self._input, x)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._probs).copy(), self._interpreter.get_tensor(
                self._fmap
            ).copy()


class _KerasRunner:
    def __init__(self, path: Path):
        import keras

        self._model = keras.saving.load_model(path, compile=False)
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            probs, fmap = self._model.predict_on_batch(x)
        return np.asarray(probs), np.asarray(fmap)


class Classifier:
    """A loaded classifier version. Thread-safe; load once per process and share."""

    def __init__(self, model_dir: Path, runtime: str = "auto", threads: int = 2):
        self.model_dir = Path(model_dir)
        self.card: dict[str, Any] = json.loads((self.model_dir / "card.json").read_text())
        self.version: str = self.card["version"]
        self.input_size: int = int(self.card["input"]["size"])
        self.findings = tuple(
            FindingSpec(f["name"], float(f["threshold"]), bool(f["urgent"]), tuple(f["calibration"]))
            for f in self.card["findings"]
        )
        self._calibration = np.array([f.calibration for f in self.findings], dtype=np.float64)
        self._thresholds = np.array([f.threshold for f in self.findings])
        self._class_weights = np.load(self.model_dir / "cam_weights.npy")  # (C, F): the logits layer's kernel
        scope = np.load(self.model_dir / "scope.npz")
        self.scope = ScopeModel(
            scope["mean"],
            scope["components"],
            scope["variances"],
            float(scope["residual_variance"]),
            float(self.card["scope"]["threshold"]),
        )
        # refuses what is no chest film, turns rotated or inverted films back (None for older versions)
        self.film_check = FilmCheck.load(self.model_dir)
        tflite = self.model_dir / "model.tflite"
        if runtime == "auto":
            runtime = "litert" if tflite.exists() else "keras"
        self.runtime = runtime
        self._run = (
            _LiteRTRunner(tflite, threads)
            if runtime == "litert"
            else _KerasRunner(self.model_dir / "model.keras")
        )

    @property
    def finding_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.findings)

    def predict_raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated probabilities (F,) and the feature map (h, w, C) for one preprocessed input."""
        probs, fmap = self._run(x)
        return probs[0], fmap[0]

    def classify(self, pixels: np.ndarray) -> Classification:
        """Classify one grey [0, 1] image of any size."""
        t0 = time.perf_counter()
        x = to_model_input(pixels, self.input_size)
        t1 = time.perf_counter()
        raw, fmap = self.predict_raw(x)
        t2 = time.perf_counter()
        probs = calibrate(raw[None], self._calibration)[0]
        scope_score = float(self.scope.score(fmap.mean(axis=(0, 1)))[0])
        order = np.argsort(-probs)
        names = self.finding_names
        flagged = tuple(names[i] for i in order if probs[i] >= self._thresholds[i])
        t3 = time.perf_counter()
        return Classification(
            probabilities={n: float(p) for n, p in zip(names, probs, strict=True)},
            flagged=flagged,
            top3=tuple((names[i], float(probs[i])) for i in order[:3]),
            scope_score=scope_score,
            in_scope=scope_score <= self.scope.threshold,
            model_version=self.version,
            timing_ms={
                "preprocess": (t1 - t0) * 1e3,
                "inference": (t2 - t1) * 1e3,
                "postprocess": (t3 - t2) * 1e3,
            },
            feature_map=fmap,
        )

    def heatmap(self, result: Classification, finding: str) -> np.ndarray:
        """Grad-CAM of ``finding`` on the feature grid, scaled to [0, 1] (all zeros when nothing is positive)."""
        index = self.finding_names.index(finding)
        cam = np.maximum(result.feature_map @ self._class_weights[:, index], 0.0)
        peak = float(cam.max())
        return (cam / peak).astype(np.float32) if peak > 0 else np.zeros_like(cam, dtype=np.float32)


# A perceptually ordered dark-to-bright map (anchors of matplotlib's 'inferno'), so no plotting library is needed.
_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float32,
)


def _palette() -> np.ndarray:
    """256 x 3 uint8 lookup table interpolated between the anchors, built once."""
    pos = np.linspace(0.0, 1.0, 256) * (len(_ANCHORS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (pos - lo)[:, None]
    return (_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac + 0.5).astype(np.uint8)


_PALETTE = _palette()
_OVERLAY_GRID = 128


def colorize(heat: np.ndarray) -> np.ndarray:
    """[0, 1] values -> uint8 RGB through the inferno-like map."""
    return _PALETTE[(np.clip(heat, 0, 1) * 255 + 0.5).astype(np.uint8)]


def overlay_heatmap(
    pixels: np.ndarray, heat: np.ndarray, alpha: float = 0.45, max_side: int = 1024
) -> Image.Image:
    """The radiograph in grey with the heat map blended over it where the map is warm; returns an RGB image.

    Blending runs in Pillow's C code with the map itself as the mask, so cold regions stay plain film and a
    1024-px overlay costs milliseconds, not the ~150 ms of float arithmetic over a million pixels.
    """
    base = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if max(base.size) > max_side:
        scale = max_side / max(base.size)
        base = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.BILINEAR)
    grid = Image.fromarray((np.clip(heat, 0, 1) * 255 + 0.5).astype(np.uint8))
    # Smooth the coarse grid at a small size, colour it there, then stretch colour and mask to the film:
    # the map has no detail finer than one grid cell, and colouring a million pixels costs tens of ms.
    small = grid.resize((_OVERLAY_GRID, _OVERLAY_GRID), Image.Resampling.BICUBIC)
    colour = Image.fromarray(_PALETTE[np.asarray(small)]).resize(base.size, Image.Resampling.BILINEAR)
    mask = small.point([round(v * alpha) for v in range(256)]).resize(base.size, Image.Resampling.BILINEAR)
    return Image.composite(colour, base.convert("RGB"), mask)
