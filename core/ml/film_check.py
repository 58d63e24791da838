"""Is this a chest film the right way round? A linear read of the classifier's own features.

A multinomial logistic regression on the classifier's pooled last-layer features (the same vector the
out-of-scope statistics use) tells six kinds of image apart: an upright chest film, the same rotated by 90,
180 or 270 degrees, a photographic negative (inverted grey scale), and an image that is no chest film at
all. It is fitted per classifier version by ``core.training.fit_film_check`` and stored beside the weights
(``film_check.npz``), with its cuts chosen on the validation split and its measurements in the card.

At run time (``core.ml.inference.analyze``):

* ``not_chest`` at or over its cut: the film is refused (the probability photo of the moon, a hand, a CT
  slice);
* a rotation or the negative at or over the orientation cut: the pixels are turned (or inverted) back, the
  film is read again, and the result says so in words ("rotated 180 degrees back", "shown inverted back").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE = "film_check.npz"
UPRIGHT, ROT90, ROT180, ROT270, INVERTED, NOT_CHEST = (
    "upright",
    "rot90",
    "rot180",
    "rot270",
    "inverted",
    "not_chest",
)
KINDS: tuple[str, ...] = (UPRIGHT, ROT90, ROT180, ROT270, INVERTED, NOT_CHEST)
#: the note a doctor reads when the film was turned back; ``np.rot90(pixels, k)`` made each kind
NOTES = {
    ROT90: "The film was rotated by 90 degrees; it is shown and read turned back upright.",
    ROT180: "The film was upside down (rotated 180 degrees); it is shown and read turned back upright.",
    ROT270: "The film was rotated by 90 degrees; it is shown and read turned back upright.",
    INVERTED: "The film was a photographic negative (inverted grey scale); it is shown and read inverted back.",
}
#: np.rot90 turns that undo each rotation kind (kind ROTk was made by np.rot90(upright, k))
_UNDO_TURNS = {ROT90: -1, ROT180: 2, ROT270: 1}


def make(pixels: np.ndarray, kind: str) -> np.ndarray:
    """An upright film turned into ``kind`` (for fitting and tests): the inverse of :func:`undo`."""
    if kind == INVERTED:
        return 1.0 - pixels
    turns = {ROT90: 1, ROT180: 2, ROT270: 3}.get(kind, 0)
    return np.ascontiguousarray(np.rot90(pixels, turns))


def undo(pixels: np.ndarray, kind: str) -> np.ndarray:
    """The upright film, from one detected as ``kind``."""
    if kind == INVERTED:
        return (1.0 - pixels).astype(pixels.dtype)
    if kind in _UNDO_TURNS:
        return np.ascontiguousarray(np.rot90(pixels, _UNDO_TURNS[kind]))
    return pixels


@dataclass(frozen=True)
class Verdict:
    """What the check makes of one image."""

    kind: str  # one of KINDS: the most probable, or UPRIGHT when no other kind reaches its cut
    probabilities: dict[str, float]

    @property
    def refuse(self) -> bool:
        return self.kind == NOT_CHEST

    @property
    def turn_back(self) -> bool:
        return self.kind in NOTES

    @property
    def note(self) -> str:
        return NOTES.get(self.kind, "")


class FilmCheck:
    """The fitted check of one classifier version."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, not_chest_cut: float, orientation_cut: float):
        self.weights = weights  # (K, D) on standardised features
        self.bias = bias  # (K,)
        self.not_chest_cut = not_chest_cut
        self.orientation_cut = orientation_cut

    @classmethod
    def load(cls, model_dir: Path) -> FilmCheck | None:
        """The check stored with a classifier version, or ``None`` for versions fitted before it existed."""
        path = Path(model_dir) / FILE
        if not path.exists():
            return None
        z = np.load(path, allow_pickle=False)
        if tuple(str(k) for k in z["kinds"]) != KINDS:
            raise ValueError(f"{path}: kinds {list(z['kinds'])} are not {list(KINDS)}")
        mean, scale = z["mean"], z["scale"]
        # fold the standardisation into the linear layer: one matrix product at run time
        weights = z["coef"] / scale
        bias = z["intercept"] - (z["coef"] * mean / scale).sum(axis=1)
        return cls(weights, bias, float(z["not_chest_cut"]), float(z["orientation_cut"]))

    def probabilities(self, pooled: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities of pooled feature vectors (N, D)."""
        logits = np.atleast_2d(pooled).astype(np.float64) @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def decide(self, probs: np.ndarray) -> str:
        """The kind for one row of probabilities, under the cuts."""
        if probs[KINDS.index(NOT_CHEST)] >= self.not_chest_cut:
            return NOT_CHEST
        turned = [(probs[KINDS.index(k)], k) for k in (ROT90, ROT180, ROT270, INVERTED)]
        p, kind = max(turned)
        return kind if p >= self.orientation_cut else UPRIGHT

    def check(self, pooled: np.ndarray) -> Verdict:
        probs = self.probabilities(pooled)[0]
        return Verdict(self.decide(probs), {k: float(p) for k, p in zip(KINDS, probs, strict=True)})
