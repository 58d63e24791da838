"""The record services' access to the database: a transaction, loading with checks, ORM rows to DTOs.

ORM rows never leave the package: every service returns what the builders here make of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from core.errors import ConflictError, NotFound
from core.records.types import Allergy, Condition, Demographics, PatientRecord, PatientSummary, Visit
from core.validation import normalize_patient_id
from db import models
from db import repository as repo
from db.models import SEVERITIES
from db.session import session_scope

_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@contextmanager
def transaction() -> Iterator[Session]:
    """``session_scope()`` that reports a lost optimistic-locking race as ``ConflictError``."""
    try:
        with session_scope() as session:
            yield session
    except StaleDataError as exc:
        # Someone saved or removed the row between our read and our flush (version mismatch in the WHERE).
        raise ConflictError() from exc


def not_found(what: str, key: object) -> NotFound:
    """The error for a visit, allergy or condition that is not (or no longer) there."""
    return NotFound(f"No {what} with ID {key!r} — it may have been removed. Search again or reload.")


def load_patient(session: Session, patient_id: str, *, with_history: bool = False) -> models.Patient:
    """The patient with this ID (normalised), or ``NotFound``."""
    key = normalize_patient_id(patient_id or "")
    patient = repo.get_patient(session, key, with_history=with_history) if key else None
    if patient is None:
        raise NotFound(f"No patient with ID {key or patient_id!r}.")
    return patient


def check_version(current: int, expected: int) -> None:
    """``ConflictError`` unless the row is still at the version the user saw."""
    if current != expected:
        raise ConflictError()


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields that changed, as before/after documents for the audit log."""
    changed = [k for k in after if before.get(k) != after[k]]
    return {k: before.get(k) for k in changed}, {k: after[k] for k in changed}


# ---------------------------------------------------------------- DTO builders


def demographics_of(p: models.Patient) -> Demographics:
    """The patient's demographics as entered."""
    return Demographics(
        given_name=p.given_name,
        family_name=p.family_name,
        sex=p.sex,
        date_of_birth=p.date_of_birth,
        phone=p.phone,
        email=p.email,
        address=p.address,
    )


def summary_of(p: models.Patient | repo.SummaryRow) -> PatientSummary:
    """A search hit."""
    return PatientSummary(p.patient_id, p.given_name, p.family_name, p.sex, p.date_of_birth)


def visit_of(v: models.Visit) -> Visit:
    """A saved visit."""
    return Visit(v.id, v.visit_date, v.reason, v.notes, v.version, v.created_at, v.updated_at)


def allergy_of(a: models.Allergy) -> Allergy:
    """A saved allergy."""
    return Allergy(a.id, a.substance, a.kind, a.reaction, a.severity, a.recorded_on, a.version)


def condition_of(c: models.ChronicCondition) -> Condition:
    """A saved chronic condition."""
    return Condition(c.id, c.name, c.onset_date, c.status, c.notes, c.version)


def record_of(
    p: Any, visits: Iterable[Any] = (), allergies: Iterable[Any] = (), conditions: Iterable[Any] = ()
) -> PatientRecord:
    """The record DTO from a patient and its history, given as ORM objects or as plain rows."""
    return PatientRecord(
        patient_id=p.patient_id,
        demographics=demographics_of(p),
        special_notes=p.special_notes,
        version=p.version,
        created_at=p.created_at,
        updated_at=p.updated_at,
        visits=tuple(visit_of(v) for v in sorted(visits, key=lambda v: (v.visit_date, v.id), reverse=True)),
        allergies=tuple(
            allergy_of(a)
            for a in sorted(
                allergies, key=lambda a: (-_SEVERITY_RANK.get(a.severity, 0), a.substance.casefold())
            )
        ),
        conditions=tuple(
            condition_of(c)
            for c in sorted(conditions, key=lambda c: (c.status != "active", c.name.casefold()))
        ),
    )


def full_record(p: models.Patient) -> PatientRecord:
    """The record of a patient loaded with its history."""
    return record_of(p, p.visits, p.allergies, p.conditions)
