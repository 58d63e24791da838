"""What the result page, the history and the chart read of a film: the frozen views (DTOs) of a study and
its newest diagnosis, and the one function that builds a :class:`DiagnosisView` from the rows.

Plain values and absolute file paths, never ORM objects; nothing here writes. The use cases that return
these views are in :mod:`core.xray.diagnosis` (which re-exports the names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.errors import NotFound
from core.imaging import storage
from core.ml import film_check, registry
from core.ml.boxes import Box, class_findings
from core.ml.detector import drawn_classes
from core.validation import normalize_patient_id
from core.xray import render
from core.xray.stored import FindingRead, boxes_of, findings_of, patient_name, tiers_of
from db import models
from db import repository as repo

__all__ = ["DiagnosisView", "ProbabilityPoint", "StudySummary", "existing_view", "view_of"]


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
    abnormality: float | None = None  # triage scores (v3 on; None on diagnoses saved before they existed)
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
    likely: tuple[str, ...]  # the read's two tiers (core.xray.stored.tiers_of)
    possible: tuple[str, ...]
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


def view_of(
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
    findings = findings_of(diagnosis)
    detector_card = (
        registry.read_card("detector", diagnosis.detector_version) if diagnosis.detector_version else {}
    )
    box_findings = class_findings(detector_card)
    # the card decides which classes draw boxes, also for diagnoses saved before it decided
    drawn = set(drawn_classes(detector_card)) if detector_card else {b.label for b in boxes_of(diagnosis)}
    likely, possible = tiers_of(diagnosis)
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
        likely=likely,
        possible=possible,
        orientation=diagnosis.orientation or film_check.UPRIGHT,
        localised=render.localised_findings(diagnosis.classifier_version),
        box_findings=box_findings,
        visit_id=study.visit_pk,
        acquired_on=study.acquired_on,
        projection=study.projection,
        withdrawn=study.withdrawn_reason if study.withdrawn_at is not None else None,
    )


def existing_view(
    session: Session, study: models.Study, patient: models.Patient, store: storage.FileStore
) -> DiagnosisView:
    diagnosis = repo.latest_diagnosis(session, study.id)
    if diagnosis is None:  # cannot happen through diagnose_upload, which saves both together
        raise NotFound(f"Study {study.id} has no diagnosis.")
    return view_of(session, study, diagnosis, patient, store)
