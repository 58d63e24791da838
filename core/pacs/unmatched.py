"""The "Unmatched from PACS" list: films on the PACS whose PatientID names no patient here, or whose header's
name, sex or birth date contradicts the record that ID names (the reason says which).

A doctor or admin lists them (:func:`list_unmatched`), attaches one to the right patient (:func:`attach`: the film
is fetched again from the PACS and saved through the upload use case, the header's contradictions confirmed and
audited), or dismisses it with a reason (:func:`dismiss`). Every action is audited; a film handled by
someone else meanwhile is refused (``ConflictError``), never handled twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update

from core.audit import write as write_audit
from core.auth import AuthenticatedUser
from core.errors import ConflictError, NotFound, PermissionDenied, ValidationError
from core.pacs.client import Instance
from core.pacs.sync import pacs_client
from core.validation import normalize_patient_id
from core.xray.diagnosis import diagnose_upload
from db import models
from db.session import session_scope

__all__ = ["UnmatchedFilm", "attach", "dismiss", "list_unmatched"]


@dataclass(frozen=True)
class UnmatchedFilm:
    """One film of the list."""

    id: int
    dicom_patient_id: str
    dicom_patient_name: str
    study_instance_uid: str
    sop_instance_uid: str
    found_at: datetime
    reason: str


def _allowed(actor: AuthenticatedUser) -> None:
    if actor.role not in ("doctor", "admin"):
        raise PermissionDenied("Only doctors and administrators handle films from the PACS.")


def list_unmatched(actor: AuthenticatedUser) -> tuple[UnmatchedFilm, ...]:
    """The unmatched films, oldest first (audited as a list)."""
    _allowed(actor)
    with session_scope() as session:
        rows = session.scalars(
            select(models.PacsImport)
            .where(models.PacsImport.status == "unmatched")
            .order_by(models.PacsImport.id)
        ).all()
        films = tuple(
            UnmatchedFilm(
                r.id,
                r.dicom_patient_id,
                r.dicom_patient_name,
                r.study_instance_uid,
                r.sop_instance_uid,
                r.found_at,
                r.reason,
            )
            for r in rows
        )
        write_audit(session, actor, "list", "pacs_import", detail=f"unmatched from PACS: {len(films)}")
    return films


def _resolve(
    import_id: int, actor: AuthenticatedUser, patient_id: str | None = None, **values: object
) -> None:
    """Move an unmatched row on, once: a row already handled is a conflict."""
    with session_scope() as session:
        done = session.execute(
            update(models.PacsImport)
            .where(models.PacsImport.id == import_id, models.PacsImport.status == "unmatched")
            .values(
                resolved_at=datetime.now(UTC),
                resolved_by=actor.id,
                version=models.PacsImport.version + 1,
                **values,
            )
            .execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise ConflictError("This film was already attached or dismissed by someone else.")
        write_audit(
            session,
            actor,
            "update",
            "pacs_import",
            import_id,
            patient_id=patient_id,
            before={"status": "unmatched"},
            after=dict(values),
        )


def _unmatched(import_id: int) -> models.PacsImport:
    with session_scope() as session:
        row = session.get(models.PacsImport, import_id)
        if row is None or row.status != "unmatched":
            raise NotFound("This film is no longer on the unmatched list.")
        session.expunge(row)
        return row


def attach(import_id: int, patient_id: str, actor: AuthenticatedUser) -> int:
    """Save the unmatched film into ``patient_id``'s record (analysed like an upload); the study id."""
    _allowed(actor)
    row = _unmatched(import_id)
    instance = Instance(row.sop_instance_uid, row.study_instance_uid, row.series_instance_uid)
    data = pacs_client().retrieve_instance(instance)
    view = diagnose_upload(
        normalize_patient_id(patient_id),
        data,
        f"{row.sop_instance_uid}.dcm",
        actor,
        confirm_patient_mismatch=True,
    )
    _resolve(
        import_id,
        actor,
        view.patient_id,
        status="imported",
        study_id=view.study_id,
        reason=f"attached to {view.patient_id}",
    )
    return view.study_id


def dismiss(import_id: int, reason: str, actor: AuthenticatedUser) -> None:
    """Take the film off the list without saving it anywhere; ``reason`` is required."""
    _allowed(actor)
    why = " ".join((reason or "").split())
    if not why:
        raise ValidationError({"reason": "Say why this film is dismissed."})
    _unmatched(import_id)
    _resolve(import_id, actor, status="dismissed", reason=f"dismissed: {why}"[:1000])
