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

The worklist lives in :mod:`core.xray.queues`, the renderings in :mod:`core.xray.render`, the views it returns
in :mod:`core.xray.views` and the patient check of a DICOM header in :mod:`core.xray.identity`; the names
callers used from here before the split (``worklist``, ``heatmap_image``, ``HeatMap``, ``PREVIEW_MAX_SIDE``,
``THUMBNAIL_SIDE``, ``DiagnosisView``, ``StudySummary``, ``ProbabilityPoint``, ``PatientMismatch``) are
re-exported.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import imaging
from core.audit import write as write_audit
from core.auth import AuthenticatedUser
from core.config import get_settings
from core.errors import NotFound, ValidationError
from core.imaging import dicom, storage
from core.ml import film_check, inference, triage
from core.ml.boxes import Box
from core.ml.classifier import Classifier
from core.review.readings import current_readings
from core.validation import normalize_patient_id
from core.xray import render
from core.xray.identity import PatientMismatch, contradictions
from core.xray.queues import worklist
from core.xray.render import PREVIEW_MAX_SIDE, THUMBNAIL_SIDE, HeatMap, heatmap_image
from core.xray.stored import FindingRead, boxes_of, findings_of, patient_name, tiers_of
from core.xray.views import DiagnosisView, ProbabilityPoint, StudySummary, existing_view, view_of
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


# ---------------------------------------------------------------- helpers


def _load_patient(session: Session, patient_id: str) -> models.Patient:
    key = normalize_patient_id(patient_id or "")
    patient = repo.get_patient(session, key) if key else None
    if patient is None:
        raise NotFound(f"No patient with ID {key or patient_id!r}.")
    return patient


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
            duplicate = replace(existing_view(session, existing, patient, store), duplicate=True)
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
                return view_of(session, study, diagnosis, patient, store)
        except IntegrityError:
            # Saved meanwhile by a concurrent upload of the same image for this patient: show that one.
            files.discard()
            with session_scope() as session:
                patient = _load_patient(session, key)
                again = repo.find_study(session, patient.id, digest)
                if again is None:
                    raise
                return replace(existing_view(session, again, patient, store), duplicate=True)


def get_diagnosis(study_id: int, actor: AuthenticatedUser, *, audit: bool = True) -> DiagnosisView:
    """One study with its newest diagnosis; writes a 'view' audit row (unless ``audit`` is false, for a
    study shown inside an already audited view such as a comparison). ``NotFound`` for an unknown ID."""
    store = storage.FileStore()
    with session_scope() as session:
        study = repo.get_study(session, study_id)
        if study is None:
            raise NotFound(f"No X-ray study with ID {study_id}.")
        patient = repo.get_patient_by_pk(session, study.patient_pk)
        view = existing_view(session, study, patient, store)
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
        tiers = {s.id: tiers_of(d) for s, d in rows}
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
                likely=tiers[s.id][0],
                possible=tiers[s.id][1],
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
