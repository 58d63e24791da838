"""Everything a report of one film says, gathered once from the record (the PDF, FHIR and DICOM writers
only format).

The AI read is the stored diagnosis, unchanged (``core.xray.diagnosis.get_diagnosis``). The doctor's reading is
the film's current reading (``core.review.readings.current_reading``: the newest saved review, signed or not,
with its boxes and note). The acquisition date is ``studies.acquired_at`` once that column exists (issue 12),
else the DICOM header's StudyDate when the film came as DICOM, else the report says that only the upload time
is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from core.auth import AuthenticatedUser
from core.config import get_settings
from core.errors import NotFound
from core.imaging.storage import FileStore
from core.review.readings import Reading, current_reading
from core.xray.diagnosis import DiagnosisView, get_diagnosis
from db import repository as repo
from db.session import session_scope

DISCLAIMER = "Decision aid, not a diagnosis: the AI read must be checked by a doctor."


@dataclass(frozen=True)
class ReportContent:
    site: str
    generated_at: datetime
    generated_by: str
    patient_id: str
    family_name: str
    given_name: str
    sex: str
    birth_date: date
    visit: tuple[date, str] | None  # the visit the film belongs to: date, reason
    acquired: date | None  # DICOM StudyDate
    view: DiagnosisView
    reading: Reading | None  # the doctor's current reading
    sha256: str = ""  # the film's content hash
    original_path: Path | None = None  # the file as uploaded (a DICOM film's header is read from it)

    @property
    def age_years(self) -> int:
        on = self.acquired or self.view.uploaded_at.date()
        b = self.birth_date
        return on.year - b.year - ((on.month, on.day) < (b.month, b.day))

    @property
    def patient_name(self) -> str:
        return f"{self.family_name.upper()}, {self.given_name}"

    def doctor_status(self, finding: str) -> str:
        """The doctor's label of ``finding``: present, absent, uncertain, or "not reviewed" (no reading, or
        the doctor left it at the model's suggestion)."""
        if self.reading is None:
            return "not reviewed"
        return self.reading.labels.get(finding, "not reviewed")

    @property
    def projection(self) -> str | None:
        return (self.view.dicom or {}).get("view_position")


def site_name() -> str:
    """The deployment's name on reports (``CXR_SITE_NAME``)."""
    return get_settings().site_name


def gather(study_id: int, actor: AuthenticatedUser) -> ReportContent:
    """The report's content for study ``study_id`` (``NotFound`` for an unknown study)."""
    view = get_diagnosis(study_id, actor, audit=False)
    with session_scope() as session:
        study = repo.get_study(session, study_id)
        if study is None:
            raise NotFound(f"Study {study_id} does not exist.")
        patient = repo.get_patient_by_pk(session, study.patient_pk)
        visit = repo.get_visit(session, study.visit_pk) if study.visit_pk is not None else None
        study_date = (view.dicom or {}).get("study_date")
        acquired_at = getattr(study, "acquired_at", None)  # revision 0006, when it has landed
        if isinstance(acquired_at, datetime):
            acquired: date | None = acquired_at.date()
        elif isinstance(acquired_at, date):
            acquired = acquired_at
        else:
            acquired = date.fromisoformat(study_date) if study_date else None
        return ReportContent(
            site=site_name(),
            generated_at=datetime.now(UTC),
            generated_by=actor.username,
            patient_id=patient.patient_id,
            family_name=patient.family_name,
            given_name=patient.given_name,
            sex=patient.sex,
            birth_date=patient.date_of_birth,
            visit=(visit.visit_date, visit.reason) if visit is not None else None,
            acquired=acquired,
            view=view,
            reading=current_reading(study_id),
            sha256=study.sha256,
            original_path=FileStore().absolute(study.file_path),
        )


__all__ = ["DISCLAIMER", "ReportContent", "gather", "site_name"]
