"""``python -m core retrain EXPORT_DIR [--only classifier|detector]``: fine-tune the active models on the
doctors' reviewed studies (an export from ``python -m core corrections export``) and publish candidates.

Each model is fine-tuned in a process of its own (``core.training.retrain_classifier`` then
``core.training.retrain_detector``): TensorFlow and PyTorch in one process fight over threads and, with
Triton loaded after TensorFlow, crash. Their progress lines stream through. The candidates are published
as new versions but never made active: compare and promote them on the Models page or with
``python -m core models promote``.
Exit status: 0 when every requested model produced a candidate, 1 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from core.ml.registry import KINDS, read_registry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="fine-tune the active models on reviewed studies", description=__doc__)
    p.add_argument("export", type=Path, help="a folder written by `python -m core corrections export`")
    p.add_argument("--only", choices=KINDS, help="fine-tune only this model")
    p.add_argument("--classifier-epochs", type=int, default=2)
    p.add_argument("--detector-epochs", type=int, default=10)
    p.add_argument("--version-suffix", default="", help="appended to each new version's default name")
    p.set_defaults(func=run)


def _command(kind: str, args: argparse.Namespace) -> list[str] | None:
    parent = read_registry().get(kind)
    if not parent:
        print(f"{kind}: no active version to fine-tune; skipped", flush=True)
        return None
    command = [sys.executable, "-m", f"core.training.retrain_{kind}", str(args.export)]
    epochs = args.classifier_epochs if kind == "classifier" else args.detector_epochs
    command += ["--epochs", str(epochs)]
    if args.version_suffix:
        from core.training.corrections_data import default_version

        command += ["--version", default_version(parent) + args.version_suffix]
    return command


def run(args: argparse.Namespace) -> int:
    if not (args.export / "manifest.json").exists():
        print(f"{args.export} is not a corrections export (no manifest.json)", file=sys.stderr)
        return 1
    failed = 0
    for kind in (args.only,) if args.only else KINDS:
        command = _command(kind, args)
        if command is None:
            failed += 1
            continue
        print(f"== {kind}: {' '.join(command[1:])}", flush=True)
        t0 = time.perf_counter()
        result = subprocess.run(command, check=False)
        print(
            f"== {kind}: exit {result.returncode} after {(time.perf_counter() - t0) / 60:.1f} min", flush=True
        )
        failed += result.returncode != 0
    return 1 if failed else 0
