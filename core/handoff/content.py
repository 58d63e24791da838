"""Everything a report of one film says, gathered once from the record (the PDF and FHIR writers only format).

The AI read is the stored diagnosis, unchanged (``core.xray.diagnosis.get_diagnosis``). The doctor's reading is
the newest saved review of the film (``corrections``): per finding present / absent as the doctor left it, the
note, who and when. The acquisition date is the DICOM header's StudyDate when the film came as DICOM, else
the report says that only the upload time is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from core.auth import AuthenticatedUser
from core.config import get_settings
from core.errors import NotFound
from core.xray.diagnosis import DiagnosisView, get_diagnosis
from db import repository as repo
from db.session import session_scope

DISCLAIMER = "Decision aid, not a diagnosis: the AI read must be checked by a doctor."


@dataclass(frozen=True)
class DoctorReading:
    """The newest saved review of the film."""

    present: tuple[str, ...]
    absent: tuple[str, ...]
    uncertain: tuple[str, ...]
    note: str
    reader: str  # username
    reader_name: str
    saved_at: datetime
    agreed: bool  # the doctor changed nothing of the model's read


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
    reading: DoctorReading | None

    @property
    def age_years(self) -> int:
        on = self.acquired or self.view.uploaded_at.date()
        b = self.birth_date
        return on.year - b.year - ((on.month, on.day) < (b.month, b.day))

    @property
    def patient_name(self) -> str:
        return f"{self.family_name.upper()}, {self.given_name}"

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
        reading = None
        saved = [(c, u) for c, u in repo.corrections_of_study(session, study_id) if c.reviewed]  # not drafts
        if saved:
            correction, username = saved[0]
            author = repo.get_user(session, correction.created_by)
            labels = correction.labels or {}
            reading = DoctorReading(
                present=tuple(n for n, v in labels.items() if v == "present"),
                absent=tuple(n for n, v in labels.items() if v == "absent"),
                uncertain=tuple(n for n, v in labels.items() if v == "uncertain"),
                note=correction.note or "",
                reader=username,
                reader_name=(author.full_name if author is not None and author.full_name else username),
                saved_at=correction.created_at,
                agreed=correction.status == "reviewed",
            )
        study_date = (view.dicom or {}).get("study_date")
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
            acquired=date.fromisoformat(study_date) if study_date else None,
            view=view,
            reading=reading,
        )


__all__ = ["DISCLAIMER", "DoctorReading", "ReportContent", "gather", "site_name"]
