"""Ultralytics, offline and on this machine's cores: import this module before ``ultralytics``, everywhere.

Ultralytics reads its environment once, at import, and several of its defaults reach for the network or
for the user's home directory. What this module settles, and why:

- ``YOLO_OFFLINE=1``: its ``ONLINE`` flag is then False, so no DNS probe, no hub or telemetry upload, no
  update check.
- ``YOLO_AUTOINSTALL=False``: a missing export dependency raises instead of running ``pip install``
  (``onnx`` and ``onnxslim`` are in requirements.txt).
- ``YOLO_CONFIG_DIR`` inside the project (``<var>/ultralytics``): its ``settings.json`` and fonts stay out of
  ``~/.config``; settings are set to no telemetry and no logger integrations (TensorBoard is installed with
  TensorFlow and would otherwise write event files into every run).
- A TrueType font at ``$YOLO_CONFIG_DIR/Ultralytics/Arial.ttf``: its ``check_font`` downloads Arial.ttf when
  a data set is checked, even with ``plots=False``. We copy matplotlib's DejaVu Sans (installed with
  Ultralytics; Bitstream Vera / DejaVu licence: free to copy and redistribute unmodified) under that name.
- ``MPLCONFIGDIR`` in the project too, unless set: matplotlib (imported by Ultralytics) caches fonts there.
- Threads: importing Ultralytics sets ``OMP_NUM_THREADS=1`` when unset, and its CPU device selection calls
  ``torch.set_num_threads(cpu_count - 1)``, one thread on a 2-core machine (predict at 512 px: ~80 ms on one
  thread, ~37 ms on two). :func:`use_threads` puts the count back at the start of every train, val, predict
  and export, through Ultralytics' own callbacks.

Training must pass ``amp=False`` too (its AMP check downloads a model); ``core.training.train_detector`` does.
Nothing is patched: every switch is a documented environment variable, setting or callback.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from core.config import get_settings

DEFAULT_THREADS = 2

_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")  # the two names check_font asks for (ASCII / other labels)
_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")


class UltralyticsImportedTooEarly(RuntimeError):
    """``ultralytics`` was imported before this module could set its environment."""


def config_dir() -> Path:
    """``YOLO_CONFIG_DIR``: Ultralytics keeps ``Ultralytics/settings.json`` and fonts under it."""
    return get_settings().var_dir / "ultralytics"


def font_source() -> Path:
    """DejaVu Sans as shipped in matplotlib's package data (no download)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def _place_fonts(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    source = font_source()
    for name in _FONT_NAMES:
        target = folder / name
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)  # atomic: a concurrent process never reads half a font


def _environment(threads: int) -> dict[str, str]:
    return {
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "False",
        "YOLO_CONFIG_DIR": str(config_dir()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(threads),
        # Ultralytics imports matplotlib, whose font cache would otherwise go to ~/.config/matplotlib
        "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR") or str(get_settings().var_dir / "matplotlib"),
    }


_configured: Path | None = None


def configure(threads: int = DEFAULT_THREADS) -> Path:
    """Set the environment, place the fonts and settings; returns the config folder.

    Runs once per process (Ultralytics reads its environment once; later calls return the same folder even
    if the settings' var folder changed since). Raises :class:`UltralyticsImportedTooEarly` when
    ``ultralytics`` was imported before with another config folder: it would ignore every setting made here.
    """
    global _configured
    if _configured is not None:
        return _configured
    env = _environment(threads)
    if "ultralytics" in sys.modules:
        from ultralytics.utils import USER_CONFIG_DIR

        if Path(USER_CONFIG_DIR) != Path(env["YOLO_CONFIG_DIR"]) / "Ultralytics":
            raise UltralyticsImportedTooEarly(
                f"ultralytics was imported before core.ml.yolo_env (config dir {USER_CONFIG_DIR}); "
                "import core.ml.yolo_env first"
            )
    os.environ.update(env)
    _place_fonts(Path(env["YOLO_CONFIG_DIR"]) / "Ultralytics")
    from ultralytics.utils import SETTINGS

    var_dir = get_settings().var_dir
    wanted: dict[str, Any] = {
        "sync": False,
        "vscode_msg": False,
        "openvino_msg": False,
        "runs_dir": str(var_dir / "runs"),
        "weights_dir": str(var_dir / "ultralytics" / "weights"),
        "datasets_dir": str(var_dir / "datasets"),
        **dict.fromkeys(_INTEGRATIONS, False),
    }
    if any(SETTINGS.get(k) != v for k, v in wanted.items()):
        SETTINGS.update(wanted)
    _configured = Path(env["YOLO_CONFIG_DIR"])
    return _configured


def use_threads(model: Any, threads: int = DEFAULT_THREADS) -> None:
    """Keep torch at ``threads`` intra-op threads for every train/val/predict/export of ``model`` (a YOLO).

    Ultralytics' ``select_device('cpu')`` resets the count to cpu_count - 1 when each of those starts;
    these callbacks run right after it.
    """
    import torch

    def reset(_: Any) -> None:
        torch.set_num_threads(threads)

    torch.set_num_threads(threads)
    for event in (
        "on_pretrain_routine_start",
        "on_train_start",
        "on_val_start",
        "on_predict_start",
        "on_export_start",
    ):
        model.add_callback(event, reset)


configure()
