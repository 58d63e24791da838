"""The doctor's current reading of a film, as every other part of the app shows it (the record).

A reading is a ``corrections`` row saved with "Save" (reviewed) or "Save and sign" (revision 0007); drafts
are not readings. The **current** reading of a study is its newest reviewed row: once a doctor has saved
one, the result page, history, worklist and reports show it instead of the model's read (which is never
changed and stays one click away through the diagnosis).

Public, stable shape (other engineers call it; add fields only at the end, never rename):

* :func:`current_reading` ``(study_id) -> Reading | None`` — ``None`` when no doctor has saved a reading;
* :func:`current_readings` ``(study_ids) -> dict[int, Reading]`` — the same for a list, one query; studies
  without a reading are absent from the dict.

``Reading.findings`` lists every finding of the diagnosis with the label the doctor gave it, who set it
(``source``: ``doctor`` set by the doctor, ``accepted`` the model's suggestion accepted unchanged by an
explicit action, ``model`` left unset, ``unknown`` saved before provenance was recorded) and the model's
suggestion beside it. ``Reading.labels`` is only what the doctor set or accepted. Nothing here imports
Streamlit; reading is not audited here (the caller's page view is).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from core.ml.boxes import Box
from db import models
from db.session import session_scope

__all__ = ["Reading", "ReadingFinding", "current_reading", "current_readings", "reading_by_id"]

#: label sources a finding's label counts as the doctor's for
DOCTOR_SOURCES = ("doctor", "accepted", "unknown")


@dataclass(frozen=True)
class ReadingFinding:
    """One finding of a reading: the doctor's label (``None`` when left unset), who set it, and the model's
    suggestion (``present``/``absent`` from its threshold) beside it."""

    name: str
    label: str | None  # present | absent | uncertain, or None: not set by the doctor
    source: str  # doctor | accepted | model | unknown
    suggestion: str  # the model's read: present | absent
    probability: float | None  # the model's probability, when the diagnosis has one

    @property
    def display_name(self) -> str:
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class Reading:
    """A doctor's saved reading of one study (one ``corrections`` row). Times are aware UTC."""

    id: int
    study_id: int
    diagnosis_id: int
    findings: tuple[ReadingFinding, ...]  # model card order
    boxes: tuple[Box, ...]  # unscored, in the original image's pixels; labels: detector classes or findings
    note: str
    reader_name: str  # full name of who saved it (the reader of record once signed)
    reader_username: str
    saved_at: datetime
    signed: bool
    signed_at: datetime | None
    amends: int | None  # the id of the (signed) reading this one replaces
    amend_reason: str  # "" unless ``amends``
    status: str  # the study's status after this save: reviewed (agrees with the model) | corrected

    @property
    def labels(self) -> dict[str, str]:
        """finding -> label, only the findings the doctor set (or explicitly accepted)."""
        return {f.name: f.label for f in self.findings if f.label is not None and f.source in DOCTOR_SOURCES}

    @property
    def present(self) -> tuple[str, ...]:
        """Findings the doctor labelled present."""
        return tuple(name for name, label in self.labels.items() if label == "present")

    @property
    def unset(self) -> tuple[str, ...]:
        """Findings the doctor left unset (only the model's suggestion)."""
        return tuple(f.name for f in self.findings if f.name not in self.labels)

    @property
    def status_line(self) -> str:
        """One line for lists: 'Signed by Dr X' / 'Reviewed by Dr X' (amended readings say so)."""
        verb = "Signed" if self.signed else "Reviewed"
        if self.amends is not None:
            verb = "Amended and signed" if self.signed else "Amended"
        return f"{verb} by {self.reader_name or self.reader_username}"


def _reading(c: models.Correction, user: models.User, diagnosis: models.Diagnosis) -> Reading:
    sources = c.label_sources
    probabilities = dict(diagnosis.probabilities or {})
    flagged = set(diagnosis.flagged)
    names = [t["name"] for t in diagnosis.thresholds]
    names += [n for n in c.labels if n not in names]
    findings = []
    for name in names:
        source = "unknown" if sources is None else str(sources.get(name, "doctor"))
        stored = c.labels.get(name)
        findings.append(
            ReadingFinding(
                name=name,
                label=None if source == "model" else stored,
                source=source,
                suggestion="present" if name in flagged else "absent",
                probability=_probability(probabilities, name),
            )
        )
    return Reading(
        id=c.id,
        study_id=c.study_id,
        diagnosis_id=c.diagnosis_id,
        findings=tuple(findings),
        boxes=tuple(Box.from_json(b) for b in c.boxes),
        note=c.note,
        reader_name=user.full_name,
        reader_username=user.username,
        saved_at=c.created_at,
        signed=c.signed_at is not None,
        signed_at=c.signed_at,
        amends=c.amends_id,
        amend_reason=c.amend_reason or "",
        status=c.status,
    )


def _probability(probabilities: dict[str, object], name: str) -> float | None:
    value = probabilities.get(name)
    return float(value) if isinstance(value, int | float) else None


def _rows(session: Session, study_ids: list[int]) -> dict[int, Reading]:
    newest = (
        select(models.Correction.study_id, func.max(models.Correction.id).label("id"))
        .where(models.Correction.study_id.in_(study_ids), models.Correction.reviewed.is_(True))
        .group_by(models.Correction.study_id)
        .subquery()
    )
    c = aliased(models.Correction)
    rows = session.execute(
        select(c, models.User, models.Diagnosis)
        .join(newest, newest.c.id == c.id)
        .join(models.User, models.User.id == c.created_by)
        .join(models.Diagnosis, models.Diagnosis.id == c.diagnosis_id)
    ).all()
    return {row[0].study_id: _reading(row[0], row[1], row[2]) for row in rows}


def current_readings(study_ids: Iterable[int]) -> dict[int, Reading]:
    """study id -> its current reading, for the studies that have one (one query for the whole list)."""
    ids = sorted({int(i) for i in study_ids})
    if not ids:
        return {}
    with session_scope() as session:
        return _rows(session, ids)


def current_reading(study_id: int) -> Reading | None:
    """The doctor's current saved reading of a study (its newest reviewed reading), ``None`` when no doctor
    has saved one (or the study does not exist)."""
    return current_readings([study_id]).get(study_id)


def reading_by_id(correction_id: int) -> Reading | None:
    """One saved reading by its id (e.g. the one an amendment replaced), ``None`` when there is none."""
    with session_scope() as session:
        row = session.execute(
            select(models.Correction, models.User, models.Diagnosis)
            .join(models.User, models.User.id == models.Correction.created_by)
            .join(models.Diagnosis, models.Diagnosis.id == models.Correction.diagnosis_id)
            .where(models.Correction.id == correction_id)
        ).first()
        return None if row is None else _reading(row[0], row[1], row[2])
