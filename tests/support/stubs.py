"""Stand-ins for models that need a published version."""

from __future__ import annotations

import numpy as np

from core.ml.detector import Detection, DetectionResult


class StubDetector:
    """A detector that always finds the same two regions (the real one needs a published model)."""

    version = "stub-det"

    def detect(self, pixels: np.ndarray) -> DetectionResult:
        h, w = pixels.shape
        return DetectionResult(
            detections=(
                Detection("Nodule", 0.81, 0.1 * w, 0.5 * h, 0.2 * w, 0.6 * h),
                Detection("Effusion", 0.42, 0.6 * w, 0.6 * h, 0.9 * w, 0.9 * h),
            ),
            model_version=self.version,
            timing_ms={"inference": 1.0},
        )
