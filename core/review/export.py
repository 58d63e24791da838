"""Export the studies doctors have reviewed as a training set (``python -m core corrections export OUT``).

Only reviewed labels leave: for every study whose status is 'reviewed' or 'corrected', its newest
correction marked reviewed (never the model's read, never a draft). Layout of ``OUT`` (format 1; the
retraining command, ``core.training.corrections_data``, reads exactly this):

- ``images/<sha256>.png``: the stored original decoded as the diagnosis decodes it (:mod:`core.imaging`),
  8-bit grey, longest side at most ``MAX_SIDE`` px; ``<sha256>`` is the original file's (the study's).
- ``labels.csv``: ``image`` (``images/<sha256>.png``), ``study_id``, ``correction_id``, ``patient_key``
  (HMAC-SHA256 hex of the patient ID keyed with the site's secret, :func:`patient_key`: splits can be
  patient-disjoint without the ID, and nobody without the secret can test IDs against it), ``reviewed_at`` (ISO
  8601 UTC), ``reviewed_by`` (username), then the active classifier card's findings in its order:
  ``1`` present, ``0`` absent, empty for uncertain **and for a finding the doctor left unset** (the model's
  suggestion is never exported as a label); then ``signed`` (``1`` for a signed reading) and, per finding,
  ``<finding>_source``: ``doctor`` (set by the doctor), ``accepted`` (the model's suggestion accepted
  unchanged by the explicit "accept" action), ``model`` (left unset: no label) or ``unknown`` (saved before
  provenance was recorded, revision 0007). Retraining weighs ``accepted`` labels by its own option.
- ``yolo/images/<sha256>.png`` (a hard link to, or copy of, the same image), ``yolo/labels/<sha256>.txt``
  (``class cx cy w h`` normalised to [0, 1], class = index into the detector classes; empty without boxes)
  and ``yolo/classes.txt`` (one class per line, in index order). Boxes whose label is not a detector
  class (a classifier finding the detector does not know, e.g. Consolidation) are not in the YOLO files but
  in ``extra_boxes.json``: ``{"<sha256>": {"width", "height", "boxes": [{"label", "x1", "y1", "x2",
  "y2"}]}}`` in the original image's pixels.
- ``manifest.json``: ``format_version``, ``created_at``, ``created_by``, ``counts`` (studies, boxes,
  positives per finding, boxes per class, skipped), ``classifier_version``, ``classifier_findings``,
  ``detector_classes``, ``image_max_side``, ``skipped`` (studies left out and why) and ``files`` (the
  sha256 of every other file written).

The folder is written under a temporary name beside ``OUT`` and renamed into place at the end, so ``OUT``
either holds a whole export or does not exist; an ``OUT`` that exists and is not empty is refused. Its
folders are 0700 and its files 0600 (readable by the service's account only), as is the zip the dashboard
offers, which is removed once downloaded and, if never downloaded, after ``ZIP_MAX_AGE_HOURS``. An image
in two patients' records is exported once, with the newest reviewed reading (the other is listed in
``skipped``): one file cannot carry two sets of labels.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import select

from core import audit, imaging
from core.auth import AuthenticatedUser, require_admin
from core.config import get_settings
from core.errors import AppError
from core.imaging import storage
from core.ml import film_check
from core.ml.registry import active_model_dir
from core.review.corrections import PRESENT, UNCERTAIN, box_classes
from db import models
from db import repository as repo
from db.base import utcnow
from db.session import session_scope

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_SIDE = 1024
EXPORTS = "exports"  # folder of the dashboard's exports under the data directory
ZIP_MAX_AGE_HOURS = 24  # a dashboard export's zip never downloaded is removed after this
SITE_SECRET_FILE = "site-secret"  # under var_dir, when CXR_SITE_SECRET is not set
SOURCE_VALUES = (
    "doctor",
    "accepted",
    "model",
    "unknown",
)  # <finding>_source values (LABEL_SOURCES + unknown)
LEADING_COLUMNS = ("image", "study_id", "correction_id", "patient_key", "reviewed_at", "reviewed_by")

__all__ = [
    "FORMAT_VERSION",
    "MAX_SIDE",
    "ExportError",
    "ExportManifest",
    "classifier_findings",
    "default_export_dir",
    "export_reviewed",
    "patient_key",
    "remove_stale_zips",
    "site_secret",
    "take_zip",
    "zip_export",
]


class ExportError(AppError):
    """The export cannot be written where it was asked to be (the message says why)."""


@dataclass(frozen=True)
class ExportManifest:
    """A finished export: where it is, and its ``manifest.json`` document."""

    out_dir: Path
    document: dict[str, Any]

    @property
    def studies(self) -> int:
        return int(self.document["counts"]["studies"])

    @property
    def boxes(self) -> int:
        return int(self.document["counts"]["boxes"])

    @property
    def skipped(self) -> tuple[dict[str, Any], ...]:
        return tuple(self.document["skipped"])


@dataclass(frozen=True)
class _Reviewed:
    """One reviewed study as plain values (read in one transaction, written out after it)."""

    study_id: int
    sha256: str
    file_path: str
    width: int
    height: int
    patient_id: str
    correction_id: int
    labels: dict[str, str]
    boxes: list[dict[str, Any]]
    reviewed_at: datetime
    reviewed_by: str
    sources: dict[str, str] | None = None  # finding -> label source (None: saved before revision 0007)
    signed: bool = False
    orientation: str | None = None  # the film check's turn of the read the doctor reviewed (None: as stored)


def site_secret() -> bytes:
    """The site's secret: ``CXR_SITE_SECRET``, else ``var_dir/site-secret``, generated (256 random bits,
    0600) the first time it is needed and kept: the same patient has the same key in every export."""
    settings = get_settings()
    if settings.site_secret:
        return settings.site_secret.encode("utf-8")
    path = settings.var_dir / SITE_SECRET_FILE
    if not path.exists():
        storage.make_private_dir(path.parent)
        tmp = path.with_name(f"{storage.TMP_PREFIX}{SITE_SECRET_FILE}-{uuid.uuid4().hex}")
        with open(storage.open_private(tmp), "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # appears whole or not at all; a concurrent first export's secret wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_bytes().strip()
    if not secret:
        raise ExportError(
            f"The site secret {path} is empty; remove it (a new one is made) or set CXR_SITE_SECRET."
        )
    return secret


def patient_key(patient_id: str, secret: bytes | None = None) -> str:
    """The export's pseudonymous patient key: HMAC-SHA256 of the patient ID with the site's secret (hex)."""
    return hmac.new(secret or site_secret(), patient_id.encode("utf-8"), hashlib.sha256).hexdigest()


def classifier_findings() -> tuple[str, tuple[str, ...]]:
    """(version, finding names in card order) of the active classifier (``ModelNotAvailable`` if none)."""
    card = json.loads((active_model_dir("classifier") / "card.json").read_text())
    return str(card.get("version", "")), tuple(str(f["name"]) for f in card["findings"])


def default_export_dir(now: datetime | None = None) -> Path:
    """A new folder for an export made from the dashboard: ``<data dir>/exports/reviewed-<UTC time>``."""
    stamp = (now or utcnow()).strftime("%Y%m%d-%H%M%S")
    return get_settings().data_dir / EXPORTS / f"reviewed-{stamp}"


def _refuse_existing(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(
            f"{out} already exists and is not an empty folder: choose a new folder (an export is never "
            "written into or over another one)."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_reviewed() -> list[_Reviewed]:
    with session_scope() as session:
        return [
            _Reviewed(
                study_id=s.id,
                sha256=s.sha256,
                file_path=s.file_path,
                width=s.width,
                height=s.height,
                patient_id=p.patient_id,
                correction_id=c.id,
                labels=dict(c.labels),
                boxes=list(c.boxes),
                reviewed_at=c.created_at,
                reviewed_by=username,
                sources=dict(c.label_sources) if c.label_sources is not None else None,
                signed=c.signed_at is not None,
                orientation=session.scalar(
                    select(models.Diagnosis.orientation).where(models.Diagnosis.id == c.diagnosis_id)
                ),
            )
            for s, p, c, username in repo.reviewed_studies_for_export(session)
        ]


def _png(row: _Reviewed, store: storage.FileStore) -> bytes:
    """The study's image as an 8-bit grey PNG, longest side at most MAX_SIDE px."""
    image = imaging.read_image(store.absolute(row.file_path).read_bytes(), row.file_path)
    if row.orientation:  # the read (and the doctor's boxes) were of the film turned back upright
        image = replace(image, pixels=film_check.undo(image.pixels, row.orientation))
    if image.shape != (row.height, row.width):
        raise ValueError(f"decodes to {image.shape[1]} x {image.shape[0]} px, not {row.width} x {row.height}")
    grey = Image.fromarray(imaging.to_uint8(image.pixels))
    if max(grey.size) > MAX_SIDE:
        factor = MAX_SIDE / max(grey.size)
        grey = grey.resize(
            (max(1, round(grey.width * factor)), max(1, round(grey.height * factor))),
            Image.Resampling.LANCZOS,
        )
    out = io.BytesIO()
    grey.save(out, format="PNG")
    return out.getvalue()


def _yolo_lines(row: _Reviewed) -> list[str]:
    # Normalised by the original frame: the same numbers as by the resized image (each axis was scaled by
    # the resized size / the original size, which cancels).
    lines = []
    classes = box_classes()
    for b in row.boxes:
        if b["label"] not in classes:
            continue  # a finding the detector does not know: extra_boxes.json
        x1, x2 = (min(max(float(b[k]) / row.width, 0.0), 1.0) for k in ("x1", "x2"))
        y1, y2 = (min(max(float(b[k]) / row.height, 0.0), 1.0) for k in ("y1", "y2"))
        index = classes.index(b["label"])
        lines.append(f"{index} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}")
    return lines


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, target)


def _write(
    tmp: Path, rows: list[_Reviewed], findings: tuple[str, ...], store: storage.FileStore
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write the images, labels and YOLO files into ``tmp``; returns (counts, skipped)."""
    for folder in ("images", "yolo/images", "yolo/labels"):
        (tmp / folder).mkdir(parents=True)
    classes = box_classes()  # the active detector's, from its card
    (tmp / "yolo" / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    positives = dict.fromkeys(findings, 0)
    per_class = dict.fromkeys(classes, 0)
    per_source = dict.fromkeys(SOURCE_VALUES, 0)
    extra_boxes: dict[str, Any] = {}
    secret = site_secret()
    skipped: list[dict[str, Any]] = []
    # One image, one set of labels: of a film in several records, the newest reviewed reading is kept.
    newest: dict[str, _Reviewed] = {}
    for row in rows:
        kept = newest.get(row.sha256)
        if kept is None or row.correction_id > kept.correction_id:
            newest[row.sha256] = row
    exported = 0
    with (tmp / "labels.csv").open("w", newline="") as f:
        table = csv.writer(f)
        table.writerow([*LEADING_COLUMNS, *findings, "signed", *(f"{f}_source" for f in findings)])
        for row in rows:
            kept = newest[row.sha256]
            if kept is not row:
                skipped.append({"study_id": row.study_id, "reason": f"same image as study {kept.study_id}"})
                continue
            try:
                png = _png(row, store)
            except (OSError, ValueError, storage.StorageError, imaging.ImageRejected) as exc:
                log.warning("export: study %s left out: %s", row.study_id, exc)
                skipped.append({"study_id": row.study_id, "reason": f"image not readable: {exc}"})
                continue
            name = f"{row.sha256}.png"
            (tmp / "images" / name).write_bytes(png)
            _link_or_copy(tmp / "images" / name, tmp / "yolo" / "images" / name)
            (tmp / "yolo" / "labels" / f"{row.sha256}.txt").write_text(
                "".join(f"{line}\n" for line in _yolo_lines(row))
            )
            values = []
            sources = []
            for finding in findings:
                source = "unknown" if row.sources is None else row.sources.get(finding, "model")
                label = UNCERTAIN if source == "model" else row.labels.get(finding, UNCERTAIN)
                values.append("" if label == UNCERTAIN else "1" if label == PRESENT else "0")
                sources.append(source)
                per_source[source] = per_source.get(source, 0) + 1
                positives[finding] += label == PRESENT
            extra = []
            for b in row.boxes:
                if b["label"] in per_class:
                    per_class[b["label"]] += 1
                else:
                    extra.append(b)
            if extra:
                extra_boxes[row.sha256] = {"width": row.width, "height": row.height, "boxes": extra}
            table.writerow(
                [
                    f"images/{name}",
                    row.study_id,
                    row.correction_id,
                    patient_key(row.patient_id, secret),
                    row.reviewed_at.isoformat(),
                    row.reviewed_by,
                    *values,
                    "1" if row.signed else "0",
                    *sources,
                ]
            )
            exported += 1
    (tmp / "extra_boxes.json").write_text(json.dumps(extra_boxes, indent=1, sort_keys=True) + "\n")
    counts = {
        "studies": exported,
        "boxes": sum(per_class.values()),
        "extra_boxes": sum(len(v["boxes"]) for v in extra_boxes.values()),
        "label_sources": per_source,
        "positives": positives,
        "boxes_per_class": per_class,
        "skipped": len(skipped),
    }
    return counts, skipped


def export_reviewed(out_dir: Path | str, actor: AuthenticatedUser) -> ExportManifest:
    """Write every reviewed study into ``out_dir`` as a training set (layout in the module docstring).

    Admins only (``PermissionDenied``): the export holds images from every patient's record. Raises
    ``ExportError`` when ``out_dir`` exists and is not empty, ``ModelNotAvailable`` without an active
    classifier (its card names the label columns). Writes an 'export' audit row.
    """
    require_admin(actor)
    out = Path(out_dir).expanduser().absolute()
    _refuse_existing(out)
    version, findings = classifier_findings()
    rows = _read_reviewed()
    storage.make_private_dir(out.parent)
    tmp = out.parent / f"{storage.TMP_PREFIX}export-{uuid.uuid4().hex[:12]}"
    try:
        tmp.mkdir(mode=storage.DIR_MODE)
        os.chmod(tmp, storage.DIR_MODE)
        counts, skipped = _write(tmp, rows, findings, storage.FileStore())
        files = {
            path.relative_to(tmp).as_posix(): _sha256(path)
            for path in sorted(tmp.rglob("*"))
            if path.is_file()
        }
        document = {
            "format_version": FORMAT_VERSION,
            "created_at": utcnow().isoformat(),
            "created_by": actor.username,
            "counts": counts,
            "classifier_version": version,
            "classifier_findings": list(findings),
            "detector_classes": list(box_classes()),
            "image_max_side": MAX_SIDE,
            "skipped": skipped,
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(document, indent=2) + "\n")
        _make_private(tmp)
        _refuse_existing(out)  # again: someone may have written there while the images were decoded
        try:
            # Replaces an empty folder atomically; fails (rather than merging) if one appeared meanwhile.
            tmp.rename(out)
        except OSError as exc:
            raise ExportError(f"Could not move the export into {out}: {exc.strerror or exc}.") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        with session_scope() as session:
            audit.write(
                session,
                actor,
                "export",
                "export",
                after={"out_dir": str(out), **{k: counts[k] for k in ("studies", "boxes", "skipped")}},
                detail="reviewed studies exported as a training set",
            )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no export without its audit row
        raise
    log.info("exported %d reviewed studies (%d boxes) to %s", counts["studies"], counts["boxes"], out)
    return ExportManifest(out, document)


def _make_private(folder: Path) -> None:
    """Every folder under ``folder`` (and itself) 0700, every file 0600."""
    for path in folder.rglob("*"):
        os.chmod(path, storage.DIR_MODE if path.is_dir() else storage.FILE_MODE)
    os.chmod(folder, storage.DIR_MODE)


def remove_stale_zips(max_age_hours: float = ZIP_MAX_AGE_HOURS, folder: Path | None = None) -> list[Path]:
    """Remove the dashboard's export zips (and half-written ones) older than ``max_age_hours``; the paths."""
    folder = folder or get_settings().data_dir / EXPORTS
    cutoff = time.time() - max_age_hours * 3600
    removed = []
    for path in folder.glob("*.zip") if folder.is_dir() else ():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except OSError as exc:  # removed meanwhile by another process: nothing to do
            log.debug("stale export zip %s: %s", path.name, exc)
    if removed:
        log.info("removed %d export zip(s) older than %g h", len(removed), max_age_hours)
    return removed


def take_zip(path: Path) -> bytes:
    """The bytes of an export zip, removing the file: a download is served once, then no copy is left."""
    path = Path(path)
    data = path.read_bytes()
    path.unlink(missing_ok=True)
    return data


def zip_export(export_dir: Path) -> Path:
    """``<export_dir>.zip`` holding the export folder's files (written 0600 under a temporary name, then
    renamed); zips older than ``ZIP_MAX_AGE_HOURS`` beside it are removed first."""
    export_dir = Path(export_dir)
    remove_stale_zips(folder=export_dir.parent)
    target = export_dir.with_name(export_dir.name + ".zip")
    tmp = target.with_name(f"{storage.TMP_PREFIX}{target.name}")
    try:
        with (
            open(storage.open_private(tmp), "wb") as handle,
            zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        ):
            for path in sorted(export_dir.rglob("*")):
                if path.is_file():
                    archive.write(path, f"{export_dir.name}/{path.relative_to(export_dir).as_posix()}")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
