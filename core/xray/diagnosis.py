"""X-ray use cases: diagnose an upload into a patient's record, one study's result, the patient's imaging
history.

Each public function is one user action with its own transaction(s) and returns frozen DTOs (plain values
and absolute file paths), never ORM objects. Nothing here imports Streamlit: the upload page, the command
line (``python -m core diagnose --patient``) and ``scripts/bench_diagnose.py`` all call
:func:`diagnose_upload`, which reads as four steps: check (the patient, the visit, an image already in the
record, a DICOM naming another patient) -> analyse (the models and triage) -> render (the display files,
:mod:`core.xray.render`) -> save.

Saving is atomic across the file system and the database: the files are written first (content
addressed, each atomically, see :mod:`core.imaging.storage`), then the study, its diagnosis and the audit row are
inserted in one transaction; if anything fails, the transaction rolls back and the files this call created
are removed (never one that already existed for another study, nor one that a save in another process or on
another host is using at that moment: the file locks of :mod:`core.imaging.storage`, with PostgreSQL also on
the database server, :mod:`db.locks`). A crash between the two leaves, at worst, unreferenced
content-addressed files, never a row pointing at a missing file; ``python -m core storage gc`` removes them.

The worklist lives in :mod:`core.xray.queues` and the renderings in :mod:`core.xray.render`; the names
callers used from here before the split (``worklist``, ``heatmap_image``, ``HeatMap``, ``PREVIEW_MAX_SIDE``,
``THUMBNAIL_SIDE``) are re-exported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import imaging
from core.audit import write as write_audit
from core.auth import AuthenticatedUser
from core.config import get_settings
from core.errors import NotFound, ValidationError
from core.imaging import dicom, storage
from core.ml import film_check, inference, registry, triage
from core.ml.boxes import Box, class_findings
from core.ml.classifier import Classifier
from core.ml.detector import drawn_classes
from core.review.readings import current_readings
from core.validation import normalize_patient_id
from core.xray import render
from core.xray.identity import PatientMismatch, contradictions
from core.xray.queues import worklist
from core.xray.render import PREVIEW_MAX_SIDE, THUMBNAIL_SIDE, HeatMap, heatmap_image
from core.xray.stored import FindingRead, boxes_of, findings_of, patient_name
from db import models
from db import repository as repo
from db.locks import host_locks
from db.models import STUDY_STATUSES
from db.session import session_scope

log = logging.getLogger(__name__)

_SUFFIX = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}

__all__ = [
    "PREVIEW_MAX_SIDE",
    "STUDY_STATUSES",
    "THUMBNAIL_SIDE",
    "Box",
    "DiagnosisView",
    "FindingRead",
    "HeatMap",
    "PatientMismatch",
    "ProbabilityPoint",
    "StudySummary",
    "boxes_of",
    "diagnose_upload",
    "findings_of",
    "get_diagnosis",
    "heatmap_image",
    "patient_history",
    "patient_name",
    "probability_series",
    "warm_up",
    "worklist",
]


# ---------------------------------------------------------------- DTOs


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
    boxes: tuple[Box, ...]  # the detector's, scored, most confident first
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
    abnormality: float | None = None  # triage-v3 scores (None on diagnoses saved before they existed)
    urgency: float | None = None
    likely: tuple[str, ...] = ()  # findings over their rule-in cut, most probable first
    possible: tuple[str, ...] = ()  # over the sensitive threshold only
    orientation: str = film_check.UPRIGHT  # what the film check did before the read (rotation, inversion)
    #: findings whose heat maps point at the finding (the card's pointing game)
    localised: tuple[str, ...] = ()
    box_findings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # box class -> its findings
    visit_id: int | None = None  # the visit the film belongs to, if linked
    acquired_on: date | None = None  # when the film was taken (DICOM StudyDate), apart from the upload
    projection: str | None = None  # DICOM ViewPosition (PA, AP, ...)
    withdrawn: str | None = None  # why the film was withdrawn from the record (None: it was not)

    def box_probability(self, box: Box) -> float | None:
        """The classifier's probability for what ``box`` marks (the highest of its class's findings)."""
        probs = [f.probability for f in self.findings if f.name in self.box_findings.get(box.label, ())]
        return max(probs) if probs else None

    @property
    def disagreements(self) -> tuple[str, ...]:
        """Where the detector and the classifier disagree, one plain sentence each."""
        by_name = {f.name: f for f in self.findings}
        lines = []
        for box in self.boxes:
            members = [by_name[n] for n in self.box_findings.get(box.label, ()) if n in by_name]
            if members and not any(f.flagged for f in members):
                best = max(members, key=lambda f: f.probability)
                lines.append(
                    f"The detector marked {box.label}, but the classifier puts {best.label} at only "
                    f"{best.probability:.0%}, under its cut."
                )
        boxed = {n for b in self.boxes for n in self.box_findings.get(b.label, ())}
        drawable = {n for names in self.box_findings.values() for n in names}
        for name in self.likely:
            if name in drawable and name not in boxed and self.detector_ran:
                lines.append(
                    f"The classifier finds {by_name[name].label} likely ({by_name[name].probability:.0%}), "
                    "but the detector marked no region for it."
                )
        return tuple(dict.fromkeys(lines))

    @property
    def orientation_note(self) -> str:
        """In words, how the film was turned back before it was read ("" when it was not)."""
        return film_check.NOTES.get(self.orientation, "")

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
            "detections": [b.to_json() for b in self.boxes],
            "triage": {
                "level": self.triage_level,
                "uncertain": self.uncertain,
                "reason": self.uncertain_reason,
                "abnormality": None if self.abnormality is None else round(self.abnormality, 4),
                "urgency": None if self.urgency is None else round(self.urgency, 4),
                "likely": list(self.likely),
                "possible": list(self.possible),
            },
            "orientation": self.orientation,
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
    acquired_on: date | None = None  # when the film was taken (DICOM StudyDate)
    projection: str | None = None
    withdrawn: bool = False
    #: the doctor's current reading in one line ("Signed by Dr X", "Reviewed by ..."; core.review.readings),
    #: "" while only the model has read the film (issue 12)
    reading: str = ""


@dataclass(frozen=True)
class ProbabilityPoint:
    """One finding's probability on one study (for the chart over time)."""

    study_id: int
    uploaded_at: datetime
    finding: str
    probability: float
    threshold: float


# ---------------------------------------------------------------- helpers


def _load_patient(session: Session, patient_id: str) -> models.Patient:
    key = normalize_patient_id(patient_id or "")
    patient = repo.get_patient(session, key) if key else None
    if patient is None:
        raise NotFound(f"No patient with ID {key or patient_id!r}.")
    return patient


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
    rule = diagnosis.triage_rule or {}
    findings = findings_of(diagnosis)
    detector_card = (
        registry.read_card("detector", diagnosis.detector_version) if diagnosis.detector_version else {}
    )
    box_findings = class_findings(detector_card)
    # the card decides which classes draw boxes, also for diagnoses saved before it decided
    drawn = set(drawn_classes(detector_card)) if detector_card else {b.label for b in boxes_of(diagnosis)}
    # diagnoses made before the tiers: every finding over its threshold is a possible one
    possible = rule.get(
        "possible", [f.name for f in sorted(findings, key=lambda f: -f.probability) if f.flagged]
    )
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
        findings=findings,
        boxes=tuple(b for b in boxes_of(diagnosis) if b.label in drawn),
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
        abnormality=diagnosis.abnormality,
        urgency=diagnosis.urgency,
        likely=tuple(rule.get("likely", ())),
        possible=tuple(possible),
        orientation=diagnosis.orientation or film_check.UPRIGHT,
        localised=render.localised_findings(diagnosis.classifier_version),
        box_findings=box_findings,
        visit_id=study.visit_pk,
        acquired_on=study.acquired_on,
        projection=study.projection,
        withdrawn=study.withdrawn_reason if study.withdrawn_at is not None else None,
    )


def _existing_view(
    session: Session, study: models.Study, patient: models.Patient, store: storage.FileStore
) -> DiagnosisView:
    diagnosis = repo.latest_diagnosis(session, study.id)
    if diagnosis is None:  # cannot happen through diagnose_upload, which saves both together
        raise NotFound(f"Study {study.id} has no diagnosis.")
    return _view(session, study, diagnosis, patient, store)


def _projection(header: dicom.DicomInfo | None) -> str | None:
    """The film's projection from its DICOM header's ViewPosition (PA, AP, LL, ...), None when absent."""
    view = (header.view_position or "").strip().upper() if header is not None else ""
    return view[:16] or None


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
    :class:`PatientMismatch` (a DICOM header contradicting the record: another patient's ID, name, sex or
    birth date; unless ``confirm_patient_mismatch``),
    a subclass of :class:`core.imaging.ImageRejected` (nothing saved), or
    :class:`core.ml.registry.ModelNotAvailable`. An image already in this patient's record is
    recognised by its sha256 and its saved result returned with ``duplicate=True``; nothing is re-saved.
    """
    t0 = time.perf_counter()
    store = storage.FileStore(get_settings().data_dir)
    try:
        upload = _check(patient_id, data, filename, actor, confirm_patient_mismatch, visit_id, store)
        if upload.duplicate is not None:
            return upload.duplicate
        analysed = _analyse(data, filename)
    except imaging.ImageRejected as exc:
        _audit_refusal(patient_id, data, filename, actor, exc)
        raise
    t1 = time.perf_counter()
    rendered = _render(analysed)
    t2 = time.perf_counter()
    timings = {
        **{k: round(v, 1) for k, v in analysed.analysis.timing_ms.items() if k != "total"},
        "analysis": round((t1 - t0) * 1e3, 1),
        "render": round((t2 - t1) * 1e3, 1),
    }
    view = _save(upload, analysed, rendered, timings, actor, store)
    if view.duplicate:  # saved meanwhile by a concurrent upload of the same image
        return view
    timing = {**view.timing_ms, "total": round((time.perf_counter() - t0) * 1e3, 1)}
    return replace(view, timing_ms=timing, notes=analysed.analysis.image.notes)


def _audit_refusal(
    patient_id: str, data: bytes, filename: str, actor: AuthenticatedUser, exc: imaging.ImageRejected
) -> None:
    """A refused file leaves an audit row (who tried what on whose record, and why), and nothing else."""
    key = normalize_patient_id(patient_id or "")
    with session_scope() as session:
        patient = repo.get_patient(session, key) if key else None
        write_audit(
            session,
            actor,
            "upload_refused",
            "study",
            patient_id=patient.patient_id if patient is not None else None,
            after={"filename": filename, "bytes": len(data or b""), "code": exc.code},
            detail=str(exc),
        )


@dataclass(frozen=True)
class _Upload:
    """What the check established about an upload."""

    data: bytes
    filename: str
    digest: str  # sha256 hex of ``data``
    patient_id: str  # normalised
    visit_id: int | None
    detail: str  # for the audit row: why a DICOM naming another patient was saved anyway
    duplicate: DiagnosisView | None = None  # the image is already in the record: its saved result


@dataclass(frozen=True)
class _Analysed:
    """The models' read of an accepted upload."""

    classifier: Classifier
    analysis: inference.Analysis
    assessment: triage.Triage


def _check(
    patient_id: str,
    data: bytes,
    filename: str,
    actor: AuthenticatedUser,
    confirm_patient_mismatch: bool,
    visit_id: int | None,
    store: storage.FileStore,
) -> _Upload:
    """Step 1: the size, the patient and the visit, an image already in the record (audited and returned
    as ``duplicate``), and a DICOM naming another patient (refused unless confirmed)."""
    settings = get_settings()
    if not data or len(data) > settings.max_upload_mb * 1024 * 1024:
        imaging.read_image(data, filename)  # raises the typed refusal before anything is hashed or saved
    digest = storage.sha256_hex(data)
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
            duplicate = replace(_existing_view(session, existing, patient, store), duplicate=True)
            return _Upload(data, filename, digest, key, visit_id, "", duplicate)

    header = dicom.header_patient(data)
    found: tuple[str, ...] = ()
    if header is not None:
        with session_scope() as session:
            found = contradictions(header, _load_patient(session, key))
    if found and not confirm_patient_mismatch:
        # A file that will be refused anyway is refused now: nobody should confirm an unusable image.
        imaging.read_chest_xray(data, filename)
        assert header is not None
        raise PatientMismatch(header.patient_id or "", key, found)
    detail = (
        f"DICOM header differs from {key}'s record: {'; '.join(found)}; saved on confirmation"
        if found
        else ""
    )
    return _Upload(data, filename, digest, key, visit_id, detail)


def _analyse(data: bytes, filename: str) -> _Analysed:
    """Step 2: read and check the image, run the active models, triage the read."""
    classifier = inference.get_classifier()
    analysis = inference.analyze(data, filename, classifier=classifier)
    return _Analysed(classifier, analysis, triage.assess_classification(classifier, analysis.classification))


def _render(analysed: _Analysed) -> render.Rendered:
    """Step 3: the display files (preview, thumbnail, boxes overlay, heat maps), in memory."""
    return render.render(analysed.analysis.image, analysed.analysis, analysed.classifier)


def _save(
    upload: _Upload,
    analysed: _Analysed,
    rendered: render.Rendered,
    timings: dict[str, float],
    actor: AuthenticatedUser,
    store: storage.FileStore,
) -> DiagnosisView:
    """Step 4: the files, then the study, its diagnosis and the audit row in one transaction (see the module
    docstring); an upload of the same image that won a race is returned as ``duplicate``."""
    t_files = time.perf_counter()
    data, key, digest = upload.data, upload.patient_id, upload.digest
    classifier, analysis, tri = analysed.classifier, analysed.analysis, analysed.assessment
    result, image = analysis.classification, analysis.image
    found = analysis.detection.detections if analysis.detection is not None else ()
    suffix = _SUFFIX[image.source_format]

    with storage.save_lock, storage.staged(store, _still_referenced, remote=host_locks) as files:
        original = files.put(data, storage.ORIGINALS, suffix, digest)
        preview = files.put(rendered.preview, storage.RENDERS, ".jpg")
        thumbnail = files.put(rendered.thumbnail, storage.RENDERS, ".jpg")
        overlay = files.put(rendered.overlay, storage.RENDERS, ".jpg") if rendered.overlay else None
        cams = files.put(rendered.cams, storage.RENDERS, ".npz")
        timings["files"] = round((time.perf_counter() - t_files) * 1e3, 1)
        try:
            with session_scope() as session:
                patient = _load_patient(session, key)
                study = repo.add_study(
                    session,
                    patient_pk=patient.id,
                    visit_pk=upload.visit_id,
                    sha256=digest,
                    file_path=original,
                    preview_path=preview,
                    thumbnail_path=thumbnail,
                    original_filename=(upload.filename or "")[: models.LIMITS["original_filename"]],
                    source_format=image.source_format,
                    byte_size=len(data),
                    # as analysed (after any EXIF rotation): the frame the boxes are in
                    width=image.shape[1],
                    height=image.shape[0],
                    dicom=image.dicom.as_document() if image.dicom is not None else None,
                    acquired_on=image.dicom.study_date if image.dicom is not None else None,
                    projection=_projection(image.dicom),
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
                    detections=[d.to_json() for d in found],
                    triage_level=tri.level,
                    uncertain=tri.uncertain,
                    uncertain_reason=tri.reason[: models.LIMITS["triage_reason"]],
                    triage_rule={
                        **tri.rule,
                        "explanation": tri.explanation,
                        "drivers": list(tri.drivers),
                        "likely": list(tri.likely),
                        "possible": list(tri.possible),
                    },
                    abnormality=tri.abnormality,
                    urgency=tri.urgency,
                    orientation=None if analysis.orientation == film_check.UPRIGHT else analysis.orientation,
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
                    detail=upload.detail,
                )
                return _view(session, study, diagnosis, patient, store)
        except IntegrityError:
            # Saved meanwhile by a concurrent upload of the same image for this patient: show that one.
            files.discard()
            with session_scope() as session:
                patient = _load_patient(session, key)
                again = repo.find_study(session, patient.id, digest)
                if again is None:
                    raise
                return replace(_existing_view(session, again, patient, store), duplicate=True)


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


def patient_history(
    patient_id: str, *, actor: AuthenticatedUser | None = None, withdrawn: bool = False
) -> tuple[StudySummary, ...]:
    """Every study of the patient (withdrawn ones only when ``withdrawn``), newest first by the day the film
    was taken (else its upload), with its newest diagnosis' triage and top findings; shown to ``actor``, the
    listing is audited (``list``)."""
    store = storage.FileStore()
    with session_scope() as session:
        patient = _load_patient(session, patient_id)
        rows = repo.studies_with_latest_diagnosis(session, patient.id, withdrawn=withdrawn)
        readings = current_readings(s.id for s, _ in rows)  # issue 12: the doctor's reading is the record
        history = tuple(
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
                acquired_on=s.acquired_on,
                projection=s.projection,
                withdrawn=s.withdrawn_at is not None,
                reading=readings[s.id].status_line if s.id in readings else "",
            )
            for s, d in rows
        )
        if actor is not None:
            key = patient.patient_id
            write_audit(
                session, actor, "list", "study_history", key, patient_id=key, detail=f"{len(history)} films"
            )
        return history


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
