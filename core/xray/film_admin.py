"""Putting a film right: move it to the right patient, or withdraw it from the record.

Both need a reason, change only the study's own row (never the models' read, never a file) and write an audit
row with the before and after values in the same transaction; nothing is deleted. A withdrawn film stays in
the database, hidden from the worklist and the imaging history by default.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.audit import write as write_audit
from core.auth import AuthenticatedUser
from core.errors import NotFound, ValidationError
from core.validation import normalize_patient_id
from db import models
from db import repository as repo
from db.base import utcnow
from db.session import session_scope

REASON_LIMIT = 500


def _reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise ValidationError({"reason": "Say why: the reason is kept in the audit log."})
    if len(text) > REASON_LIMIT:
        raise ValidationError({"reason": f"At most {REASON_LIMIT} characters."})
    return text


def _study(session: Session, study_id: int) -> models.Study:
    study = repo.get_study(session, study_id)
    if study is None:
        raise NotFound(f"No X-ray study with ID {study_id}.")
    return study


def move_study(study_id: int, to_patient_id: str, reason: str, actor: AuthenticatedUser) -> str:
    """Move a film (saved in the wrong record) to ``to_patient_id``'s record; returns that patient ID. Its
    visit link is dropped (the visit was the other patient's). ``ValidationError`` without a reason, for the
    same patient, or when that patient already has this very image; ``NotFound`` for an unknown study or
    patient."""
    why = _reason(reason)
    key = normalize_patient_id(to_patient_id or "")
    with session_scope() as session:
        study = _study(session, study_id)
        if study.withdrawn_at is not None:
            raise ValidationError({"study": "This film was withdrawn; it cannot be moved."})
        target = repo.get_patient(session, key) if key else None
        if target is None:
            raise NotFound(f"No patient with ID {key or to_patient_id!r}.")
        source = repo.get_patient_by_pk(session, study.patient_pk)
        if target.id == source.id:
            raise ValidationError({"patient_id": f"The film is already in {key}'s record."})
        if repo.find_study(session, target.id, study.sha256) is not None:
            raise ValidationError({"patient_id": f"{key}'s record already has this image."})
        before = {"patient_id": source.patient_id, "visit_id": study.visit_pk}
        study.patient_pk, study.visit_pk = target.id, None
        try:
            session.flush()
        except IntegrityError:  # the same image saved for the target meanwhile
            raise ValidationError({"patient_id": f"{key}'s record already has this image."}) from None
        write_audit(
            session,
            actor,
            "update",
            "study",
            study.id,
            patient_id=key,
            before=before,
            after={"patient_id": key, "visit_id": None},
            detail=f"moved from {source.patient_id} to {key}: {why}",
        )
        return key


def withdraw_study(study_id: int, reason: str, actor: AuthenticatedUser) -> None:
    """Withdraw a film from the record (kept, hidden from the worklist and history by default, audited)."""
    why = _reason(reason)
    with session_scope() as session:
        study = _study(session, study_id)
        if study.withdrawn_at is not None:
            raise ValidationError({"study": "This film is already withdrawn."})
        patient = repo.get_patient_by_pk(session, study.patient_pk)
        study.withdrawn_at, study.withdrawn_by, study.withdrawn_reason = utcnow(), actor.id, why
        session.flush()
        write_audit(
            session,
            actor,
            "update",
            "study",
            study.id,
            patient_id=patient.patient_id,
            before={"withdrawn": False},
            after={"withdrawn": True, "reason": why},
            detail=f"withdrawn: {why}",
        )
