"""Log-odds: :func:`logit` and its inverse :func:`sigmoid`, the one definition the models and rules share.

Calibration (Platt scaling on the logit), the triage cut (a margin in log-odds above a threshold) and the
review queue (how close a read is to flipping a finding, in log-odds) all measure on this scale.

Both take a Python float (computed with :mod:`math`) or a numpy array (element-wise, with numpy).
Probabilities are kept inside ``(EPS, 1 - EPS)`` first, so 0 and 1 give finite log-odds.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np

#: How far from 0 and 1 a probability is kept before its log-odds are taken (logit(EPS) is about -13.8).
EPS = 1e-6

__all__ = ["EPS", "logit", "percent", "sigmoid"]


@overload
def logit(p: float) -> float: ...
@overload
def logit(p: np.ndarray) -> np.ndarray: ...
def logit(p: float | np.ndarray) -> float | np.ndarray:
    """log(p / (1 - p)), with p kept inside (EPS, 1 - EPS)."""
    if isinstance(p, np.ndarray):
        q = np.clip(p, EPS, 1 - EPS)
        return np.log(q) - np.log1p(-q)
    q = min(max(p, EPS), 1 - EPS)
    return math.log(q / (1 - q))


@overload
def sigmoid(x: float) -> float: ...
@overload
def sigmoid(x: np.ndarray) -> np.ndarray: ...
def sigmoid(x: float | np.ndarray) -> float | np.ndarray:
    """The inverse of :func:`logit`: 1 / (1 + exp(-x))."""
    if isinstance(x, np.ndarray):
        return 1.0 / (1.0 + np.exp(-x))
    return 1.0 / (1.0 + math.exp(-x))


def percent(p: float) -> str:
    """A probability or score as a doctor reads it: whole percent from 10 %, one decimal under it, and
    "under 0.1%" rather than a "0%" that would read as certainty."""
    if p < 0.001:
        return "under 0.1%"
    return f"{p:.0%}" if p >= 0.1 else f"{p:.1%}"
