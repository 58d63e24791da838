"""Temporary model folders for the promotion tests: real card.json shapes, never the real registry.

Classifier versions start from a copy of the committed card of ``cxr14-lite0-224-v1`` with the headline (and
every per-finding AUC) shifted; ``weights=True`` links the real weights in, so the version really loads.
Detector cards follow the shape ``core/training/evaluate_detector.py`` writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import PROJECT_ROOT, get_settings

REAL_MODELS = PROJECT_ROOT / "models"
REAL_CLASSIFIER = REAL_MODELS / "classifier" / "cxr14-lite0-224-v1"
V1 = "cxr14-lite0-224-v1"
V1_AUC = json.loads((REAL_CLASSIFIER / "card.json").read_text())["metrics"]["test"]["mean_auc"]
WEIGHTS = ("model.tflite", "scope.npz", "cam_weights.npy")


class ModelsDir:
    """A models folder under tmp_path, with helpers to add versions and set the active ones."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def classifier(
        self,
        version: str,
        *,
        delta: float = 0.0,
        test_images: int | None = 490,
        split_hash: str | None = None,
        parent: str | None = V1,
        created: str | None = "2026-11-20T10:00:00+00:00",
        headline: bool = True,
        weights: bool = False,
        card_version: str | None = None,
    ) -> Path:
        """A classifier version whose test mean AUC (and each finding's) is the real one plus ``delta``."""
        card: dict[str, Any] = json.loads((REAL_CLASSIFIER / "card.json").read_text())
        card["version"] = card_version or version
        test = card["metrics"]["test"]
        test["mean_auc"] += delta
        test["mean_auc_ci95"] = [v + delta for v in test["mean_auc_ci95"]]
        for part in test["per_finding"].values():
            part["auc"] = min(1.0, part["auc"] + delta)
        if not headline:
            del test["mean_auc"]
        card["metrics"]["test_images"] = test_images
        if test_images is None:
            del card["metrics"]["test_images"]
        for key, value in (("parent", parent), ("test_split_sha256", split_hash), ("created", created)):
            if value is not None:
                card[key] = value
        folder = self._write("classifier", version, card)
        if weights:
            self.link_weights(version)
        return folder

    def link_weights(self, version: str) -> None:
        """Make classifier ``version`` loadable: the committed version's weights, linked in."""
        for name in WEIGHTS:
            # linked, not copied: 13 MB of weights per version
            os.symlink(REAL_CLASSIFIER / name, self.root / "classifier" / version / name)

    def detector(
        self, version: str, map50: float, *, test_images: int = 120, split_hash: str | None = None
    ) -> Path:
        """A detector version with the metric layout of evaluate_detector's card."""
        ultra = {"map50": map50, "map50_95": map50 / 2, "per_class": {"Nodule": {"ap50": map50, "boxes": 9}}}
        card = {
            "kind": "detector",
            "version": version,
            "created": "2026-11-21T08:30:00+00:00",
            "metrics": {
                "iou": 0.3,
                "test": {
                    "images": test_images,
                    "recall_at_fppi": {"0.05": 0.1, "0.1": 0.2, "0.2": 0.3},
                    "ultralytics": ultra,
                },
                "val": {"ultralytics": {**ultra, "map50": map50 - 0.01}},
            },
            "data": {"images": {"train": 800, "val": 100, "test": test_images}},
        }
        if split_hash:
            card["test_split_sha256"] = split_hash
        return self._write("detector", version, card)

    def _write(self, kind: str, version: str, card: dict[str, Any]) -> Path:
        folder = self.root / kind / version
        folder.mkdir(parents=True)
        (folder / "card.json").write_text(json.dumps(card, indent=2))
        return folder

    def activate(self, kind: str, version: str) -> None:
        registry = self.registry()
        registry[kind] = version
        (self.root / "registry.json").write_text(json.dumps(registry))

    def registry(self) -> dict[str, str]:
        path = self.root / "registry.json"
        return json.loads(path.read_text()) if path.exists() else {}


def temporary_models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelsDir]:
    """Body of a ``models_dir`` fixture: settings point at a temporary models folder whose active classifier
    is a copy of the real card; afterwards, checks that the real registry was not touched."""
    real_registry = (REAL_MODELS / "registry.json").read_bytes()
    models = ModelsDir(tmp_path / "models")
    models.classifier(V1, parent=None, created=None)
    models.activate("classifier", V1)
    monkeypatch.setenv("CXR_MODELS_DIR", str(models.root))
    get_settings.cache_clear()
    yield models
    get_settings.cache_clear()
    assert (REAL_MODELS / "registry.json").read_bytes() == real_registry, "a test changed the real registry"
