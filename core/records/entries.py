"""A patient's history entries — visits, allergies and chronic conditions — added, edited and removed.

The three kinds follow one flow, written once in :func:`_add`, :func:`_update` and :func:`_remove`: load
(``NotFound``), check the version the user saw (``ConflictError``), clean the input (``ValidationError``),
write, and audit in the same transaction; an edit that changes nothing writes nothing. What differs per
kind (its table, its input cleaning, the allergy's one-per-substance rule) is an :class:`_Kind`. The public
``add_visit`` … ``remove_condition`` are the names the pages call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import date
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit
from core.auth import AuthenticatedUser
from core.errors import ValidationError
from core.records import clean
from core.records._store import (
    allergy_of,
    check_version,
    condition_of,
    diff,
    load_patient,
    not_found,
    transaction,
    visit_of,
)
from core.records.types import Allergy, AllergyInput, Condition, ConditionInput, Visit, VisitInput
from core.validation import normalize_name
from db import models
from db import repository as repo

Row = TypeVar("Row", models.Visit, models.Allergy, models.ChronicCondition)
In = TypeVar("In", VisitInput, AllergyInput, ConditionInput)
Out = TypeVar("Out", Visit, Allergy, Condition)


@dataclass(frozen=True)
class _Kind(Generic[Row, In, Out]):
    """One kind of history entry: what the generic add/update/remove need to know about it."""

    name: str  # the audit log's entity type and the word in "No visit with ID …"
    model: type[Row]
    input: type[In]
    get: Callable[[Session, int], Row | None]
    # The cleaned input, given the patient and (when editing) the saved row.
    clean: Callable[[In, models.Patient, Row | None], In]
    dto: Callable[[Row], Out]
    # Raises ValidationError when the cleaned input may not be saved next to the patient's other entries.
    check: Callable[[models.Patient, In, int | None], None] | None = None
    # The same error for the database's unique constraint, when a concurrent save got there first.
    duplicate: Callable[[In], ValidationError] | None = None

    def values(self, row: Row) -> dict[str, Any]:
        """The row's current values of the input's fields, in the input's order (for the audit log)."""
        return {f.name: getattr(row, f.name) for f in fields(self.input)}


@contextmanager
def _unique(kind: _Kind[Row, In, Out], data: In) -> Iterator[None]:
    """Report a unique-constraint violation (a concurrent save of the same entry) as the kind's own
    validation error, as if the check had seen the other row."""
    try:
        yield
    except IntegrityError:
        if kind.duplicate is None:
            raise
        raise kind.duplicate(data) from None


def _add(kind: _Kind[Row, In, Out], patient_id: str, data: In, actor: AuthenticatedUser) -> Out:
    with _unique(kind, data), transaction() as session:
        patient = load_patient(session, patient_id, with_history=kind.check is not None)
        cleaned = kind.clean(data, patient, None)
        if kind.check is not None:
            kind.check(patient, cleaned, None)
        row = kind.model(patient=patient, **asdict(cleaned))
        repo.add_row(session, row)
        key = patient.patient_id
        audit.write(session, actor, "create", kind.name, row.id, patient_id=key, after=asdict(cleaned))
        return kind.dto(row)


def _load(kind: _Kind[Row, In, Out], session: Session, row_id: int, expected_version: int) -> Row:
    row = kind.get(session, row_id)
    if row is None:
        raise not_found(kind.name, row_id)
    check_version(row.version, expected_version)
    return row


def _update(
    kind: _Kind[Row, In, Out], row_id: int, data: In, expected_version: int, actor: AuthenticatedUser
) -> Out:
    with _unique(kind, data), transaction() as session:
        row = _load(kind, session, row_id, expected_version)
        cleaned = kind.clean(data, row.patient, row)
        if kind.check is not None:
            kind.check(row.patient, cleaned, row.id)
        before, after = diff(kind.values(row), asdict(cleaned))
        if after:
            for name, value in asdict(cleaned).items():
                setattr(row, name, value)
            session.flush()
            key = row.patient.patient_id
            audit.write(
                session, actor, "update", kind.name, row.id, patient_id=key, before=before, after=after
            )
        return kind.dto(row)


def _remove(kind: _Kind[Row, In, Out], row_id: int, expected_version: int, actor: AuthenticatedUser) -> None:
    with transaction() as session:
        row = _load(kind, session, row_id, expected_version)
        before = kind.values(row)
        key = row.patient.patient_id
        repo.delete_row(session, row)
        audit.write(session, actor, "delete", kind.name, row_id, patient_id=key, before=before)


# ---------------------------------------------------------------- the three kinds


def _clean_allergy(
    data: AllergyInput, _patient: models.Patient, saved: models.Allergy | None
) -> AllergyInput:
    # An edit that leaves the date empty keeps the original date rather than resetting it to today.
    if saved is not None and not data.recorded_on:
        data = replace(data, recorded_on=saved.recorded_on)
    return clean.allergy(data)


def _allergy_already_recorded(data: AllergyInput) -> ValidationError:
    return ValidationError({"substance": f"An allergy to {data.substance.strip()!r} is already recorded."})


def _one_allergy_per_substance(patient: models.Patient, data: AllergyInput, ignore_id: int | None) -> None:
    # The unique constraint uq_allergies_patient_substance (revision 0005) settles concurrent saves.
    wanted = normalize_name(data.substance)
    if any(normalize_name(a.substance) == wanted and a.id != ignore_id for a in patient.allergies):
        raise _allergy_already_recorded(data)


def _born(patient: models.Patient) -> date:
    return patient.date_of_birth


VISITS: _Kind[models.Visit, VisitInput, Visit] = _Kind(
    "visit",
    models.Visit,
    VisitInput,
    repo.get_visit,
    lambda data, patient, _saved: clean.visit(data, _born(patient)),
    visit_of,
)
ALLERGIES: _Kind[models.Allergy, AllergyInput, Allergy] = _Kind(
    "allergy",
    models.Allergy,
    AllergyInput,
    repo.get_allergy,
    _clean_allergy,
    allergy_of,
    check=_one_allergy_per_substance,
    duplicate=_allergy_already_recorded,
)
CONDITIONS: _Kind[models.ChronicCondition, ConditionInput, Condition] = _Kind(
    "condition",
    models.ChronicCondition,
    ConditionInput,
    repo.get_condition,
    lambda data, patient, _saved: clean.condition(data, _born(patient)),
    condition_of,
)


# ---------------------------------------------------------------- the public actions


def add_visit(patient_id: str, data: VisitInput, actor: AuthenticatedUser) -> Visit:
    """Add a visit to the patient's history (date not in the future nor before birth)."""
    return _add(VISITS, patient_id, data, actor)


def update_visit(visit_id: int, data: VisitInput, expected_version: int, actor: AuthenticatedUser) -> Visit:
    """Edit a visit; ``ConflictError`` on a concurrent change, ``NotFound`` if it was removed."""
    return _update(VISITS, visit_id, data, expected_version, actor)


def remove_visit(visit_id: int, expected_version: int, actor: AuthenticatedUser) -> None:
    """Remove a visit (its last state stays in the audit log)."""
    _remove(VISITS, visit_id, expected_version, actor)


def add_allergy(patient_id: str, data: AllergyInput, actor: AuthenticatedUser) -> Allergy:
    """Record an allergy (``ValidationError`` if the same substance is already recorded)."""
    return _add(ALLERGIES, patient_id, data, actor)


def update_allergy(
    allergy_id: int, data: AllergyInput, expected_version: int, actor: AuthenticatedUser
) -> Allergy:
    """Edit an allergy; ``ConflictError`` on a concurrent change, ``NotFound`` if it was removed."""
    return _update(ALLERGIES, allergy_id, data, expected_version, actor)


def remove_allergy(allergy_id: int, expected_version: int, actor: AuthenticatedUser) -> None:
    """Remove an allergy (its last state stays in the audit log)."""
    _remove(ALLERGIES, allergy_id, expected_version, actor)


def add_condition(patient_id: str, data: ConditionInput, actor: AuthenticatedUser) -> Condition:
    """Record a chronic condition (onset not in the future nor before birth)."""
    return _add(CONDITIONS, patient_id, data, actor)


def update_condition(
    condition_id: int, data: ConditionInput, expected_version: int, actor: AuthenticatedUser
) -> Condition:
    """Edit a chronic condition; ``ConflictError`` on a concurrent change, ``NotFound`` if it was removed."""
    return _update(CONDITIONS, condition_id, data, expected_version, actor)


def remove_condition(condition_id: int, expected_version: int, actor: AuthenticatedUser) -> None:
    """Remove a chronic condition (its last state stays in the audit log)."""
    _remove(CONDITIONS, condition_id, expected_version, actor)
