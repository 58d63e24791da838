"""The whole learning loop, measured: diagnose real films into a record, correct them as a radiologist
would, export the reviewed studies, and run ``python -m core retrain`` on them.

    python scripts/measure_retrain.py [--studies 40] [--keep]

Everything happens in a throwaway folder: its own SQLite database, data directory and a copy of ``models/``
(the candidates it publishes never touch the project's models). The "doctor" is the NIH radiologist-box
data set's train split: each study gets the radiologists' boxes and, for the findings those boxes name,
*present*; the rest of the 14 *uncertain* (the radiologists boxed some findings and said nothing of the others). Prints the time of each step, the retrain
command's own progress, and the candidates' headline metrics against their parents'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# detector class -> the classifier findings a box of it supports
FINDING_OF_CLASS = {
    "Atelectasis": ("Atelectasis",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Effusion": ("Effusion",),
    "Pneumothorax": ("Pneumothorax",),
    "Nodule/Mass": ("Nodule",),
    "Lung Opacity": ("Consolidation",),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the throwaway folder and print its path")
    parser.add_argument("--retrain-args", default="", help="extra arguments for `python -m core retrain`")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="measure_retrain_"))
    shutil.copytree(ROOT / "models", work / "models")
    shared = os.environ.get("CXR_SHARED_DATA")
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(
        CXR_DATABASE_URL=f"sqlite:///{work / 'cxr.db'}",
        CXR_VAR_DIR=str(work / "var"),
        CXR_MODELS_DIR=str(work / "models"),
    )
    # the YOLO set of the radiologist boxes, built once in the project's var/ (reused, never rebuilt here)
    built = ROOT / "var" / "datasets" / "nih_boxes"
    if (built / "data.yaml").exists():
        (work / "var" / "datasets").mkdir(parents=True)
        os.symlink(built, work / "var" / "datasets" / "nih_boxes")

    from core.auth import create_user
    from core.records import Demographics, create_patient
    from core.review.corrections import PRESENT, UNCERTAIN, CorrectedBox, get_editor_state, save_correction
    from core.review.export import export_reviewed
    from core.training.nih_boxes import CLASSES, read_ground_truth
    from core.xray.diagnosis import diagnose_upload
    from db.migrate import upgrade

    upgrade()
    admin = create_user("measure.admin", "a long measurement password", role="admin", full_name="Measure")
    create_patient("MEASURE-1", Demographics("Loop", "Measure", "unknown", date(1970, 1, 1)), admin)
    truth = [g for g in read_ground_truth(Path(shared) if shared else None) if g.split == "train"][
        : args.studies
    ]

    t0 = time.perf_counter()
    for g in truth:
        view = diagnose_upload("MEASURE-1", g.file.read_bytes(), g.file.name, admin)
        state = get_editor_state(view.study_id, admin, audit=False)
        # the radiologists boxed some findings on each film and said nothing of the others: uncertain
        labels = dict.fromkeys(state.labels, UNCERTAIN)
        for c in g.classes:
            for finding in FINDING_OF_CLASS.get(CLASSES[int(c)], ()):
                labels[finding] = PRESENT
        sx, sy = state.width / _width(g.file), state.height / _width(g.file)
        boxes = [
            CorrectedBox(CLASSES[int(c)], b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)
            for b, c in zip(g.boxes, g.classes, strict=True)
        ]
        save_correction(view.study_id, labels, boxes, "radiologist boxes", state.study_version, admin)
    t_review = time.perf_counter() - t0
    print(f"diagnosed and corrected {len(truth)} studies in {t_review:.0f} s", flush=True)

    t1 = time.perf_counter()
    manifest = export_reviewed(work / "export", admin)
    print(
        f"exported in {time.perf_counter() - t1:.1f} s: {manifest.studies} studies, {manifest.boxes} boxes, "
        f"{len(manifest.skipped)} skipped",
        flush=True,
    )

    command = [sys.executable, "-m", "core", "retrain", str(work / "export"), *args.retrain_args.split()]
    t2 = time.perf_counter()
    code = subprocess.run(command, cwd=ROOT, check=False).returncode
    minutes = (time.perf_counter() - t2) / 60
    print(f"retrain exit {code} after {minutes:.1f} min (target: under 30 min)", flush=True)
    registry = json.loads((work / "models" / "registry.json").read_text())
    for kind in ("classifier", "detector"):
        for folder in sorted((work / "models" / kind).glob("*-ft*")):
            card = json.loads((folder / "card.json").read_text())
            parent = json.loads((work / "models" / kind / card["parent"] / "card.json").read_text())
            pick = (
                (lambda c: c["metrics"]["test"]["mean_auc"])
                if kind == "classifier"
                else (lambda c: c["metrics"]["test"]["ultralytics"]["map50"])
            )
            name = "test mean AUC" if kind == "classifier" else "test mAP50"
            print(
                f"{kind} {folder.name}: {name} {pick(card):.3f} vs parent {card['parent']} {pick(parent):.3f}; "
                f"{card['retraining']['reviewed_studies_used']} reviewed studies used, "
                f"{len(card['retraining']['dropped_as_val_or_test_image'])} dropped; active stays {registry.get(kind)}"
            )
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return code


def _width(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.size[0]


if __name__ == "__main__":
    raise SystemExit(main())
