"""Which model version of each kind is active, and where its files are.

``models/registry.json`` names the active version per kind (``classifier``, ``detector``); each version is a
folder ``models/<kind>/<version>/`` holding its weights and ``card.json``. Promotion (changing the active
version) is an explicit act; diagnoses record the version that made them.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.config import get_settings
from core.errors import AppError


class ModelNotAvailable(AppError):
    """The active model of a kind is missing or incomplete on disk."""


def registry_path(models_dir: Path | None = None) -> Path:
    return (models_dir or get_settings().models_dir) / "registry.json"


def read_registry(models_dir: Path | None = None) -> dict[str, str]:
    path = registry_path(models_dir)
    if not path.exists():
        return {}
    return {k: str(v) for k, v in json.loads(path.read_text()).items()}


def active_model_dir(kind: str, models_dir: Path | None = None) -> Path:
    """Folder of the active version of ``kind``; raises ModelNotAvailable with a message for IT staff."""
    base = models_dir or get_settings().models_dir
    version = read_registry(base).get(kind)
    if not version:
        raise ModelNotAvailable(f"No active {kind} model is configured in {registry_path(base)}.")
    folder = base / kind / version
    if not (folder / "card.json").exists():
        raise ModelNotAvailable(f"The active {kind} model {version!r} is missing from {folder}.")
    return folder


def set_active(kind: str, version: str, models_dir: Path | None = None) -> None:
    """Make ``version`` the active model of ``kind`` (the folder must exist)."""
    base = models_dir or get_settings().models_dir
    if not (base / kind / version / "card.json").exists():
        raise ModelNotAvailable(f"There is no {kind} model {version!r} in {base / kind}.")
    registry = read_registry(base)
    registry[kind] = version
    tmp = registry_path(base).with_suffix(".tmp")
    tmp.write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")
    tmp.replace(registry_path(base))  # atomic: readers never see a half-written registry
