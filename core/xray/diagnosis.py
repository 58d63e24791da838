"""X-ray use cases: diagnose an upload into a patient's record, the patient's imaging history, the
emergency worklist, and one study's result.

Each public function is one user action with its own transaction(s) and returns frozen DTOs (plain values
and absolute file paths), never ORM objects. Nothing here imports Streamlit: the upload page, the command
line (``python -m core diagnose --patient``) and ``scripts/bench_diagnose.py`` all call
:func:`diagnose_upload`.

Saving is atomic across the file system and the database: the files are written first (content
addressed, each atomically, see :mod:`core.imaging.storage`), then the study, its diagnosis and the audit row are
inserted in one transaction; if anything fails, the transaction rolls back and the files this call created
are removed (never one that already existed for another study). A crash between the two leaves, at worst,
unreferenced content-addressed files, never a row pointing at a missing file.
"""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import imaging
from core.audit import write as write_audit
from core.auth import AuthenticatedUser
from core.config import get_settings
from core.errors import AppError, NotFound, ValidationError
from core.imaging import storage
from core.ml import inference, triage
from core.ml.classifier import Classifier, overlay_heatmap
from core.ml.detector import Detection, draw_detections
from core.validation import normalize_patient_id
from db import models
from db import repository as repo
from db.models import STUDY_STATUSES
from db.session import session_scope

log = logging.getLogger(__name__)

#: Longest side of the stored display image. A 3000 x 3000 detector image is shown (and zoomed) from
#: this; the original stays on disk untouched.
PREVIEW_MAX_SIDE = 2048
THUMBNAIL_SIDE = 256
JPEG_QUALITY = 90
WORKLIST_LIMIT = 200
_SUFFIX = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}

__all__ = [
    "STUDY_STATUSES",
    "Box",
    "DiagnosisView",
    "FindingRead",
    "HeatMap",
    "PatientMismatch",
    "ProbabilityPoint",
    "StudySummary",
    "WorklistItem",
    "diagnose_upload",
    "get_diagnosis",
    "heatmap_image",
    "patient_history",
    "probability_series",
    "warm_up",
    "worklist",
]


class PatientMismatch(AppError):
    """A DICOM file whose Patient ID is not the chosen patient's; saving it needs an explicit confirmation."""

    def __init__(self, dicom_patient_id: str, patient_id: str) -> None:
        self.dicom_patient_id = dicom_patient_id
        self.patient_id = patient_id
        super().__init__(
            f"This DICOM file names patient ID {dicom_patient_id!r}, not {patient_id}. Check that the image "
            f"and the patient are the right ones; confirm to save it in {patient_id}'s record anyway."
        )


# ---------------------------------------------------------------- DTOs


@dataclass(frozen=True)
class FindingRead:
    """One finding as the classifier read it."""

    name: str
    probability: float
    threshold: float
    urgent: bool  # the model card marks the finding as driving triage

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def flagged(self) -> bool:
        """At or over its threshold."""
        return self.probability >= self.threshold


@dataclass(frozen=True)
class Box:
    """A detected region in the original image's pixels."""

    label: str
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class DiagnosisView:
    """A study and its (newest) diagnosis, as the result page shows it."""

    study_id: int
    diagnosis_id: int
    patient_id: str
    patient_name: str
    status: str  # one of STUDY_STATUSES
    study_version: int
    uploaded_at: datetime
    uploaded_by: str
    original_filename: str
    source_format: str
    width: int
    height: int
    sha256: str
    dicom: dict[str, Any] | None
    findings: tuple[FindingRead, ...]  # model card order
    boxes: tuple[Box, ...]  # most confident first
    triage_level: str
    uncertain: bool
    uncertain_reason: str
    triage_explanation: str
    models: dict[str, str]  # kind -> version
    scope_score: float
    scope_limit: float
    timing_ms: dict[str, float]
    image_path: Path  # the display image with the boxes drawn (the plain preview if none were)
    preview_path: Path
    thumbnail_path: Path
    heatmap_path: Path | None
    duplicate: bool = False  # this upload was an image already in the record: nothing new was saved
    notes: tuple[str, ...] = ()  # how the file was read (e.g. first frame only), shown once at upload

    @property
    def top3(self) -> tuple[FindingRead, ...]:
        return tuple(sorted(self.findings, key=lambda f: -f.probability)[:3])

    @property
    def flagged(self) -> tuple[FindingRead, ...]:
        """Findings at or over their thresholds, most probable first."""
        return tuple(f for f in sorted(self.findings, key=lambda f: -f.probability) if f.flagged)

    @property
    def detector_ran(self) -> bool:
        return "detector" in self.models

    @property
    def dicom_patient_id(self) -> str | None:
        return (self.dicom or {}).get("patient_id")

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (the shape of ``python -m core diagnose --json``, plus the study)."""
        return {
            "patient_id": self.patient_id,
            "study_id": self.study_id,
            "diagnosis_id": self.diagnosis_id,
            "duplicate": self.duplicate,
            "status": self.status,
            "findings": {f.name: round(f.probability, 4) for f in self.findings},
            "flagged": [f.name for f in self.flagged],
            "top3": [{"finding": f.name, "probability": round(f.probability, 4)} for f in self.top3],
            "scope_score": round(self.scope_score, 3),
            "detections": [
                {
                    "label": b.label,
                    "confidence": round(b.confidence, 4),
                    "box": [round(v, 1) for v in (b.x1, b.y1, b.x2, b.y2)],
                }
                for b in self.boxes
            ],
            "triage": {
                "level": self.triage_level,
                "uncertain": self.uncertain,
                "reason": self.uncertain_reason,
            },
            "models": dict(self.models),
            "timing_ms": {k: round(v, 1) for k, v in self.timing_ms.items()},
        }

    @property
    def patient_id_differs(self) -> bool:
        """The DICOM header names another patient (saved on the uploader's confirmation)."""
        pid = self.dicom_patient_id
        return bool(pid) and normalize_patient_id(str(pid)) != self.patient_id


@dataclass(frozen=True)
class StudySummary:
    """One row of a patient's imaging history."""

    study_id: int
    uploaded_at: datetime
    status: str
    original_filename: str
    source_format: str
    thumbnail_path: Path
    preview_path: Path
    triage_level: str
    uncertain: bool
    top3: tuple[tuple[str, float], ...]
    flagged: tuple[str, ...]
    classifier_version: str


@dataclass(frozen=True)
class ProbabilityPoint:
    """One finding's probability on one study (for the chart over time)."""

    study_id: int
    uploaded_at: datetime
    finding: str
    probability: float
    threshold: float


@dataclass(frozen=True)
class WorklistItem:
    """An unreviewed study in the emergency worklist."""

    study_id: int
    patient_id: str
    patient_name: str
    uploaded_at: datetime
    triage_level: str
    uncertain: bool
    uncertain_reason: str
    top_finding: str
    top_probability: float
    flagged: tuple[str, ...]
    thumbnail_path: Path


# ---------------------------------------------------------------- helpers


def _load_patient(session: Session, patient_id: str) -> models.Patient:
    key = normalize_patient_id(patient_id or "")
    patient = repo.get_patient(session, key) if key else None
    if patient is None:
        raise NotFound(f"No patient with ID {key or patient_id!r}.")
    return patient


def patient_name(p: models.Patient) -> str:
    """How pages show a patient: FAMILY, Given."""
    return f"{p.family_name.upper()}, {p.given_name}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def _dicom_document(info: imaging.DicomInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    document = {k: _jsonable(v) for k, v in asdict(info).items()}
    document["transfer_syntax_name"] = info.transfer_syntax_name
    return document


def _dicom_patient_id(data: bytes) -> str | None:
    """The Patient ID of a DICOM file from its header alone (no pixel decoding), else ``None``."""
    if imaging.sniff_format(data) != "dicom":
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=data.startswith(b"DICM"))
    except Exception:  # the reader gives the proper refusal when the file is analysed
        return None
    value = str(ds.get("PatientID") or "").strip()
    return value or None


def _encode_jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


@dataclass(frozen=True)
class _Rendered:
    preview: bytes
    thumbnail: bytes
    overlay: bytes | None
    cams: bytes


def _render(image: imaging.XrayImage, analysis: inference.Analysis, classifier: Classifier) -> _Rendered:
    """The display files of one analysis, in memory (written to disk only by the save)."""
    grey = Image.fromarray(imaging.to_uint8(image.pixels))
    scale = 1.0
    if max(grey.size) > PREVIEW_MAX_SIDE:
        scale = PREVIEW_MAX_SIDE / max(grey.size)
        grey = grey.resize(
            (round(grey.width * scale), round(grey.height * scale)),
            Image.Resampling.BILINEAR,
            reducing_gap=2.0,
        )
    thumb = grey.copy()
    thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    overlay = None
    found = analysis.detection.detections if analysis.detection is not None else ()
    if found:
        scaled = [
            Detection(d.label, d.confidence, d.x1 * scale, d.y1 * scale, d.x2 * scale, d.y2 * scale)
            for d in found
        ]
        shown = np.asarray(grey, dtype=np.float32) / 255.0
        overlay = _encode_jpeg(draw_detections(shown, scaled, max_side=max(grey.size)))
    result = analysis.classification
    cams = np.stack([classifier.heatmap(result, name) for name in classifier.finding_names]).astype(
        np.float16
    )
    buffer = io.BytesIO()
    np.savez(buffer, names=np.array(classifier.finding_names), cams=cams)
    return _Rendered(_encode_jpeg(grey), _encode_jpeg(thumb), overlay, buffer.getvalue())


def findings_of(diagnosis: models.Diagnosis) -> tuple[FindingRead, ...]:
    """A stored diagnosis's findings in model card order."""
    # ``thresholds`` is a list in model card order (PostgreSQL's JSONB does not keep an object's key order).
    return tuple(
        FindingRead(
            t["name"], float(diagnosis.probabilities[t["name"]]), float(t["threshold"]), bool(t["urgent"])
        )
        for t in diagnosis.thresholds
    )


def boxes_of(diagnosis: models.Diagnosis) -> tuple[Box, ...]:
    """A stored diagnosis's detector boxes, in the original image's pixels."""
    return tuple(
        Box(d["label"], float(d["confidence"]), *(float(v) for v in d["box"])) for d in diagnosis.detections
    )


def _view(
    session: Session,
    study: models.Study,
    diagnosis: models.Diagnosis,
    patient: models.Patient,
    store: storage.FileStore,
) -> DiagnosisView:
    uploader = repo.get_user(session, study.uploaded_by)
    models_used = {"classifier": diagnosis.classifier_version}
    if diagnosis.detector_version:
        models_used["detector"] = diagnosis.detector_version
    preview = store.absolute(study.preview_path)
    return DiagnosisView(
        study_id=study.id,
        diagnosis_id=diagnosis.id,
        patient_id=patient.patient_id,
        patient_name=patient_name(patient),
        status=study.status,
        study_version=study.version,
        uploaded_at=study.uploaded_at,
        uploaded_by=uploader.username if uploader else "?",
        original_filename=study.original_filename,
        source_format=study.source_format,
        width=study.width,
        height=study.height,
        sha256=study.sha256,
        dicom=study.dicom,
        findings=findings_of(diagnosis),
        boxes=boxes_of(diagnosis),
        triage_level=diagnosis.triage_level,
        uncertain=diagnosis.uncertain,
        uncertain_reason=diagnosis.uncertain_reason,
        triage_explanation=str((diagnosis.triage_rule or {}).get("explanation", "")),
        models=models_used,
        scope_score=diagnosis.scope_score,
        scope_limit=diagnosis.scope_limit,
        timing_ms={k: float(v) for k, v in diagnosis.timings.items()},
        image_path=store.absolute(diagnosis.overlay_path) if diagnosis.overlay_path else preview,
        preview_path=preview,
        thumbnail_path=store.absolute(study.thumbnail_path),
        heatmap_path=store.absolute(diagnosis.heatmap_path) if diagnosis.heatmap_path else None,
    )


def _existing_view(
    session: Session, study: models.Study, patient: models.Patient, store: storage.FileStore
) -> DiagnosisView:
    diagnosis = repo.latest_diagnosis(session, study.id)
    if diagnosis is None:  # cannot happen through diagnose_upload, which saves both together
        raise NotFound(f"Study {study.id} has no diagnosis.")
    return _view(session, study, diagnosis, patient, store)


def _still_referenced(relpath: str) -> bool:
    with session_scope() as session:
        return repo.stored_path_in_use(session, relpath)


# ---------------------------------------------------------------- use cases


def warm_up() -> dict[str, str]:
    """Load the active models now (not on the first upload) and return their versions."""
    classifier = inference.get_classifier()
    classifier.classify(np.zeros((classifier.input_size, classifier.input_size), dtype=np.float32))
    versions = {"classifier": classifier.version}
    if inference.detector_configured():
        versions["detector"] = inference.get_detector().version
    return versions


def diagnose_upload(
    patient_id: str,
    data: bytes,
    filename: str,
    actor: AuthenticatedUser,
    confirm_patient_mismatch: bool = False,
    visit_id: int | None = None,
) -> DiagnosisView:
    """Analyse an uploaded X-ray and save it, with the models' read, into the patient's record.

    Raises ``NotFound`` (unknown patient), ``ValidationError`` (a visit of another patient),
    :class:`PatientMismatch` (a DICOM naming another patient, unless ``confirm_patient_mismatch``),
    a subclass of :class:`core.imaging.ImageRejected` (nothing saved), or
    :class:`core.ml.registry.ModelNotAvailable`. An image already in this patient's record is
    recognised by its sha256 and its saved result returned with ``duplicate=True``; nothing is re-saved.
    """
    t0 = time.perf_counter()
    settings = get_settings()
    if not data or len(data) > settings.max_upload_mb * 1024 * 1024:
        imaging.read_image(data, filename)  # raises the typed refusal before anything is hashed or saved
    digest = storage.sha256_hex(data)
    store = storage.FileStore(settings.data_dir)
    with session_scope() as session:
        patient = _load_patient(session, patient_id)
        key, patient_pk = patient.patient_id, patient.id
        if visit_id is not None:
            visit = repo.get_visit(session, visit_id)
            if visit is None or visit.patient_pk != patient_pk:
                raise ValidationError({"visit_id": f"Visit {visit_id} is not one of {key}'s visits."})
        existing = repo.find_study(session, patient_pk, digest)
        if existing is not None:
            reupload = "the same image was uploaded again"
            write_audit(session, actor, "view", "study", existing.id, patient_id=key, detail=reupload)
            return replace(_existing_view(session, existing, patient, store), duplicate=True)

    dicom_pid = _dicom_patient_id(data)
    mismatch = dicom_pid is not None and normalize_patient_id(dicom_pid) != key
    if mismatch and not confirm_patient_mismatch:
        # A file that will be refused anyway is refused now: nobody should confirm an unusable image.
        imaging.read_chest_xray(data, filename)
        raise PatientMismatch(str(dicom_pid), key)

    classifier = inference.get_classifier()
    analysis = inference.analyze(data, filename, classifier=classifier)
    result, image = analysis.classification, analysis.image
    t1 = time.perf_counter()
    tri = triage.assess_classification(classifier, result)
    rendered = _render(image, analysis, classifier)
    t2 = time.perf_counter()
    timings = {
        **{k: round(v, 1) for k, v in analysis.timing_ms.items() if k != "total"},
        "analysis": round((t1 - t0) * 1e3, 1),
        "render": round((t2 - t1) * 1e3, 1),
    }
    found = analysis.detection.detections if analysis.detection is not None else ()
    detail = f"DICOM patient ID {dicom_pid!r} differs from {key}; saved on confirmation" if mismatch else ""
    suffix = _SUFFIX[image.source_format]

    with storage.save_lock, storage.staged(store, still_needed=_still_referenced) as files:
        original = files.put(data, storage.ORIGINALS, suffix, digest)
        preview = files.put(rendered.preview, storage.RENDERS, ".jpg")
        thumbnail = files.put(rendered.thumbnail, storage.RENDERS, ".jpg")
        overlay = files.put(rendered.overlay, storage.RENDERS, ".jpg") if rendered.overlay else None
        cams = files.put(rendered.cams, storage.RENDERS, ".npz")
        timings["files"] = round((time.perf_counter() - t2) * 1e3, 1)
        try:
            with session_scope() as session:
                patient = _load_patient(session, key)
                study = repo.add_study(
                    session,
                    patient_pk=patient.id,
                    visit_pk=visit_id,
                    sha256=digest,
                    file_path=original,
                    preview_path=preview,
                    thumbnail_path=thumbnail,
                    original_filename=(filename or "")[: models.LIMITS["original_filename"]],
                    source_format=image.source_format,
                    byte_size=len(data),
                    # as analysed (after any EXIF rotation): the frame the boxes are in
                    width=image.shape[1],
                    height=image.shape[0],
                    dicom=_dicom_document(image.dicom),
                    uploaded_by=actor.id,
                )
                diagnosis = repo.add_diagnosis(
                    session,
                    study_id=study.id,
                    classifier_version=result.model_version,
                    detector_version=analysis.detection.model_version if analysis.detection else None,
                    probabilities={k: round(v, 6) for k, v in result.probabilities.items()},
                    thresholds=[
                        {"name": f.name, "threshold": f.threshold, "urgent": f.urgent}
                        for f in classifier.findings
                    ],
                    flagged=list(result.flagged),
                    top3=[[n, round(p, 6)] for n, p in result.top3],
                    detections=[d.as_dict() for d in found],
                    triage_level=tri.level,
                    uncertain=tri.uncertain,
                    uncertain_reason=tri.reason[: models.LIMITS["triage_reason"]],
                    triage_rule={**tri.rule, "explanation": tri.explanation, "drivers": list(tri.drivers)},
                    scope_score=result.scope_score,
                    scope_limit=classifier.scope.threshold,
                    timings=timings,
                    overlay_path=overlay,
                    heatmap_path=cams,
                    created_by=actor.id,
                )
                write_audit(
                    session,
                    actor,
                    "diagnose",
                    "study",
                    study.id,
                    patient_id=key,
                    after={
                        "sha256": digest,
                        "file": original,
                        "triage": tri.level,
                        "uncertain": tri.uncertain,
                        "models": analysis.models,
                        "diagnosis_id": diagnosis.id,
                    },
                    detail=detail,
                )
                view = _view(session, study, diagnosis, patient, store)
        except IntegrityError:
            # Saved meanwhile by a concurrent upload of the same image for this patient: show that one.
            files.discard()
            with session_scope() as session:
                patient = _load_patient(session, key)
                again = repo.find_study(session, patient.id, digest)
                if again is None:
                    raise
                return replace(_existing_view(session, again, patient, store), duplicate=True)
    timing = {**view.timing_ms, "total": round((time.perf_counter() - t0) * 1e3, 1)}
    return replace(view, timing_ms=timing, notes=image.notes)


def get_diagnosis(study_id: int, actor: AuthenticatedUser, *, audit: bool = True) -> DiagnosisView:
    """One study with its newest diagnosis; writes a 'view' audit row (unless ``audit`` is false, for a
    study shown inside an already audited view such as a comparison). ``NotFound`` for an unknown ID."""
    store = storage.FileStore()
    with session_scope() as session:
        study = repo.get_study(session, study_id)
        if study is None:
            raise NotFound(f"No X-ray study with ID {study_id}.")
        patient = repo.get_patient_by_pk(session, study.patient_pk)
        view = _existing_view(session, study, patient, store)
        if audit:
            write_audit(session, actor, "view", "study", study.id, patient_id=patient.patient_id)
        return view


def patient_history(patient_id: str) -> tuple[StudySummary, ...]:
    """Every study of the patient, newest first, with its newest diagnosis' triage and top findings."""
    store = storage.FileStore()
    with session_scope() as session:
        patient = _load_patient(session, patient_id)
        return tuple(
            StudySummary(
                study_id=s.id,
                uploaded_at=s.uploaded_at,
                status=s.status,
                original_filename=s.original_filename,
                source_format=s.source_format,
                thumbnail_path=store.absolute(s.thumbnail_path),
                preview_path=store.absolute(s.preview_path),
                triage_level=d.triage_level,
                uncertain=d.uncertain,
                top3=tuple((str(n), float(p)) for n, p in d.top3),
                flagged=tuple(d.flagged),
                classifier_version=d.classifier_version,
            )
            for s, d in repo.studies_with_latest_diagnosis(session, patient.id)
        )


def probability_series(patient_id: str) -> tuple[ProbabilityPoint, ...]:
    """Each finding's probability on each of the patient's studies, oldest first (for a chart)."""
    with session_scope() as session:
        patient = _load_patient(session, patient_id)
        rows = repo.studies_with_latest_diagnosis(session, patient.id)
        return tuple(
            ProbabilityPoint(
                s.id, s.uploaded_at, t["name"], float(d.probabilities[t["name"]]), float(t["threshold"])
            )
            for s, d in reversed(rows)
            for t in d.thresholds
        )


def worklist(limit: int = WORKLIST_LIMIT) -> tuple[WorklistItem, ...]:
    """Unreviewed studies of every patient: most pressing triage level first, then longest waiting."""
    store = storage.FileStore()
    with session_scope() as session:
        rows = repo.unreviewed_studies(session, triage.LEVELS, max(1, min(limit, 1000)))
        items = []
        for s, d, p in rows:
            top_name, top_p = d.top3[0] if d.top3 else ("", 0.0)
            items.append(
                WorklistItem(
                    study_id=s.id,
                    patient_id=p.patient_id,
                    patient_name=patient_name(p),
                    uploaded_at=s.uploaded_at,
                    triage_level=d.triage_level,
                    uncertain=d.uncertain,
                    uncertain_reason=d.uncertain_reason,
                    top_finding=str(top_name),
                    top_probability=float(top_p),
                    flagged=tuple(d.flagged),
                    thumbnail_path=store.absolute(s.thumbnail_path),
                )
            )
        return tuple(items)


_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class HeatMap:
    """A finding's heat map blended over the film; ``flat`` when the map is zero everywhere (no region of
    the film raised that finding's score, so there is nothing to show)."""

    finding: str
    path: Path
    flat: bool


def heatmap_image(view: DiagnosisView, finding: str) -> HeatMap:
    """``finding``'s heat map over the display image (rendered once, then cached on disk)."""
    if view.heatmap_path is None:
        raise NotFound("This diagnosis has no heat maps.")
    if finding not in [f.name for f in view.findings]:
        raise NotFound(f"No finding {finding!r} in this diagnosis.")
    with np.load(view.heatmap_path) as saved:  # a few hundred bytes: cheaper than a lookup elsewhere
        index = [str(n) for n in saved["names"]].index(finding)
        cam = saved["cams"][index].astype(np.float32)

    def render() -> bytes:
        base = np.asarray(Image.open(view.preview_path).convert("L"), dtype=np.float32) / 255.0
        return _encode_jpeg(overlay_heatmap(base, cam, max_side=PREVIEW_MAX_SIDE))

    name = _SAFE.sub("_", finding)
    path = storage.FileStore().cached(f"{storage.CACHE}/heat/{view.diagnosis_id}/{name}.jpg", render)
    return HeatMap(finding, path, flat=not bool(cam.max() > 0))
