"""``python -m core diagnose PATH... [--json] [--patient ID --user USERNAME]``: read X-rays from the command line,
for doctors and batch triage; with ``--patient``, save them into that patient's record (batch import).

One bad file never stops the rest: each refusal is reported in its own line with ``accepted: false`` and
the reason. With ``--json`` each image is one JSON object on its own line (JSON Lines), including its
``triage`` (level, uncertain, reason). With ``--patient`` every accepted image is saved through the same
service as the upload page (``core.xray.diagnosis.diagnose_upload``: files, rows and an audit row as
``--user``); an image already in the record is reported with ``duplicate: true``, and a DICOM naming
another patient is refused unless ``--confirm-patient-mismatch`` is given.
Exit status: 0 when every image was analysed, 1 when any was refused, 2 when no model is available or the
patient or user does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.auth import AuthenticatedUser

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ""}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="classify chest X-ray files (PNG, JPEG, DICOM)", description=__doc__)
    p.add_argument("paths", nargs="+", type=Path, help="files, or folders (their image files, sorted)")
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.add_argument("--patient", metavar="ID", help="save each accepted image into this patient's record")
    p.add_argument("--user", metavar="USERNAME", help="the account the import is done (and audited) as")
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="images analysed at once (default: 2, or 1 on a single core); results keep the input order",
    )
    p.add_argument(
        "--confirm-patient-mismatch",
        action="store_true",
        help="save DICOM files whose Patient ID differs from --patient (normally refused)",
    )
    p.set_defaults(func=run)


def _expand(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def _read(path: Path) -> bytes | dict:
    """The file's bytes, or the refusal object for a file that cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        return {
            "path": str(path),
            "accepted": False,
            "code": "unreadable",
            "reason": f"Cannot read the file: {exc.strerror}.",
        }


def diagnose_file(path: Path) -> dict:
    """The JSON object for one path (never raises for a bad file)."""
    from core.imaging import ImageRejected
    from core.ml import triage
    from core.ml.inference import analyze, get_classifier

    t0 = time.perf_counter()
    data = _read(path)
    if isinstance(data, dict):
        return data
    try:
        analysis = analyze(data, path.name, classifier=get_classifier())
    except ImageRejected as exc:
        return _refused(path, exc.code, exc.user_message, t0)
    read = triage.assess_classification(get_classifier(), analysis.classification)
    return {"path": str(path), "accepted": True, **analysis.as_dict(), "triage": read.as_dict()}


def save_file(path: Path, patient_id: str, actor: AuthenticatedUser, confirm_mismatch: bool = False) -> dict:
    """Diagnose ``path`` into ``patient_id``'s record; the JSON object for it (never raises for a bad file)."""
    from core.imaging import ImageRejected
    from core.xray import diagnosis

    t0 = time.perf_counter()
    data = _read(path)
    if isinstance(data, dict):
        return data
    try:
        view = diagnosis.diagnose_upload(
            patient_id, data, path.name, actor, confirm_patient_mismatch=confirm_mismatch
        )
    except ImageRejected as exc:
        return _refused(path, exc.code, exc.user_message, t0)
    except diagnosis.PatientMismatch as exc:
        return _refused(path, "patient_mismatch", str(exc), t0)
    except Exception as exc:  # a full disk or a database gone mid-batch: this file fails, the batch goes on
        from core import failures

        why = failures.reason(exc)
        if why is None:
            raise
        code = "database" if "database" in why else "storage"
        return _refused(path, code, f"Not saved: {why}. {failures.ADVICE}", t0)
    return {"path": str(path), "accepted": True, **view.as_dict()}


def _refused(path: Path, code: str, reason: str, t0: float) -> dict:
    return {
        "path": str(path),
        "accepted": False,
        "code": code,
        "reason": reason,
        "timing_ms": {"total": round((time.perf_counter() - t0) * 1e3, 1)},
    }


def printable(text: str) -> str:
    """``text`` safe for a terminal: control, bidi and other invisible format characters (in file names and
    in values read from files) shown as escapes (``\\x1b``, ``\\u202e``) instead of acting on the screen."""
    return "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or c == "\\"
        else c
        for c in text
    )


def _human(row: dict) -> str:
    return printable(_line(row))


def _line(row: dict) -> str:
    if not row["accepted"]:
        return f"{row['path']}: refused ({row['code']}): {row['reason']}"
    top = ", ".join(f"{t['finding']} {t['probability']:.0%}" for t in row["top3"])
    flagged = ", ".join(row["flagged"]) or "none"
    boxes = ", ".join(f"{d['label']} {d['confidence']:.0%}" for d in row["detections"]) or "none"
    if "detections_note" in row or "detector" not in row["models"]:
        boxes = "no detector"
    level = row["triage"]["level"] + (" (uncertain: review)" if row["triage"]["uncertain"] else "")
    saved = ""
    if "study_id" in row:
        saved = f"; {'already in' if row['duplicate'] else 'saved to'} {row['patient_id']} as study {row['study_id']}"
    return (
        f"{row['path']}: triage {level}; top {top}; over threshold: {flagged}; regions: {boxes}{saved} "
        f"({row['timing_ms']['total']:.0f} ms)"
    )


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from core.errors import AppError
    from core.ml.registry import ModelNotAvailable

    def diagnose(path: Path) -> dict:
        return diagnose_file(path)

    if args.patient or args.user:
        if not (args.patient and args.user):
            print("error: --patient and --user go together: whose record, and who imports.", file=sys.stderr)
            return 2
        from core.auth import find_active_user
        from core.errors import NotFound
        from core.xray.diagnosis import patient_history

        try:
            actor = find_active_user(args.user)
            patient_history(args.patient)  # the patient exists (before any file is read)
        except NotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

        def diagnose(path: Path) -> dict:
            return save_file(path, args.patient, actor, args.confirm_patient_mismatch)

    refused = 0
    # The models are shared and thread-safe; two images in flight keep both cores busy (one decodes while
    # the other is in a network), which is what makes a folder go about twice as fast on 2 cores.
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        try:
            for row in pool.map(diagnose, _expand(args.paths)):
                refused += not row["accepted"]
                print(json.dumps(row) if args.json else _human(row), flush=True)
        except (ModelNotAvailable, AppError) as exc:  # no model; a patient removed meanwhile
            pool.shutdown(cancel_futures=True)
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 1 if refused else 0
