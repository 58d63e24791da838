""" "My recent patients": the patients a user opened, registered, uploaded to or read lately, newest first.

Read from the audit log, which already holds every such action with who, which patient and when (a record or
film opened: ``view``; a patient or an entry added: ``create``; an edit: ``update``; an upload: ``diagnose``;
a reading saved: ``correct`` / ``sign`` / ``amend``). No table of its own: what the list shows is exactly
what the trail says this user touched. Listing it is not audited again: it names only patients whose access
by this very user is already in the trail. Nothing here imports Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from core.audit import Who
from core.records._store import summary_of
from core.records.types import PatientSummary
from db import models
from db.base import utcnow
from db.session import session_scope

__all__ = ["RECENT_ACTIONS", "RECENT_DAYS", "RECENT_LIMIT", "RecentPatient", "recent_patients"]

#: The audit actions that mean "this user worked on this patient" (searches and listings do not).
RECENT_ACTIONS: tuple[str, ...] = ("view", "create", "update", "diagnose", "correct", "sign", "amend")
RECENT_LIMIT = 8
RECENT_DAYS = 14  # how far back "recent" reaches (a fortnight of shifts)


@dataclass(frozen=True)
class RecentPatient:
    """One patient of the list and when this user last worked on the record (UTC)."""

    patient: PatientSummary
    last_at: datetime


def recent_patients(
    user: Who, limit: int = RECENT_LIMIT, *, days: int = RECENT_DAYS, now: datetime | None = None
) -> tuple[RecentPatient, ...]:
    """The patients ``user`` opened, registered, uploaded a film to or read in the last ``days``, the most
    recent first, at most ``limit``; a patient no longer in the database is left out."""
    limit = max(1, min(limit, 50))
    since = (now or utcnow()) - timedelta(days=days)
    last_at = func.max(models.AuditLog.at).label("last_at")
    latest = (
        select(models.AuditLog.patient_id, last_at)
        .join(models.Patient, models.Patient.patient_id == models.AuditLog.patient_id)  # still there
        # username first: ix_audit_log_username_at serves the range; user_id tells apart a re-created name
        .where(
            models.AuditLog.username == user.username,
            models.AuditLog.user_id == user.id,
            models.AuditLog.at >= since,
            models.AuditLog.action.in_(RECENT_ACTIONS),
        )
        .group_by(models.AuditLog.patient_id)
        .order_by(last_at.desc(), models.AuditLog.patient_id)
        .limit(limit)
    )
    with session_scope() as session:
        touched = [(str(pid), at) for pid, at in session.execute(latest)]
        patients = {
            p.patient_id: p
            for p in session.scalars(
                select(models.Patient).where(models.Patient.patient_id.in_([pid for pid, _ in touched]))
            )
        }
        return tuple(RecentPatient(summary_of(patients[pid]), at) for pid, at in touched if pid in patients)
