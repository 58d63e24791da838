"""Patient record use cases: search, view, create and edit, with audit.

Every public function here is one user action: it opens its own ``session_scope()`` (one transaction),
writes its audit row in that same transaction, and returns frozen DTOs — never ORM objects — so pages can
keep them in ``st.session_state`` safely. Edits take the ``version`` the user saw (``expected_version``)
and raise ``ConflictError`` if someone else saved in between. Nothing here imports Streamlit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from core.auth import AuthenticatedUser, require_admin
from core.errors import ConflictError, NotFound, ValidationError
from core.validation import (
    CONTROL_CHARACTERS,
    EMAIL_PATTERN,
    PATIENT_ID_PREFIX_PATTERN,
    PHONE_PATTERN,
    Checker,
    check_patient_id,
    normalize_name,
    normalize_patient_id,
)
from db import models
from db import repository as repo
from db.models import ALLERGY_KINDS, CONDITION_STATUSES, LIMITS, SEVERITIES, SEXES
from db.session import session_scope

log = logging.getLogger(__name__)

__all__ = [
    "ALLERGY_KINDS",
    "AUDIT_ACTIONS",
    "CONDITION_STATUSES",
    "LIMITS",
    "SEVERITIES",
    "SEXES",
    "Allergy",
    "AllergyInput",
    "AuditEntry",
    "AuditPage",
    "Condition",
    "ConditionInput",
    "Demographics",
    "PatientRecord",
    "PatientSummary",
    "Visit",
    "VisitInput",
    "add_allergy",
    "add_condition",
    "add_visit",
    "create_patient",
    "get_record",
    "list_audit",
    "remove_allergy",
    "remove_condition",
    "remove_visit",
    "search_patients",
    "update_allergy",
    "update_condition",
    "update_demographics",
    "update_special_notes",
    "update_visit",
]

#: Actions written to the audit log (for the admin page's filter).
AUDIT_ACTIONS: tuple[str, ...] = (
    "login",
    "login_failed",
    "account_locked",
    "logout",
    "user_created",
    "view",
    "create",
    "update",
    "delete",
    "seed",
    "diagnose",
    "correct",
    "export",
    "promote",
    "promote_refused",
)


# ---------------------------------------------------------------- inputs (what a form submits)


@dataclass(frozen=True)
class Demographics:
    """Editable demographics (the patient ID itself is fixed once created)."""

    given_name: str
    family_name: str
    sex: str  # one of SEXES
    date_of_birth: date
    phone: str = ""
    email: str = ""
    address: str = ""


@dataclass(frozen=True)
class VisitInput:
    """A visit as entered: date (not in the future), reason, free-text notes."""

    visit_date: date
    reason: str
    notes: str = ""


@dataclass(frozen=True)
class AllergyInput:
    """An allergy as entered; ``recorded_on`` defaults to today when ``None``."""

    substance: str
    kind: str  # one of ALLERGY_KINDS
    severity: str  # one of SEVERITIES
    reaction: str = ""
    recorded_on: date | None = None


@dataclass(frozen=True)
class ConditionInput:
    """A chronic condition as entered."""

    name: str
    status: str = "active"  # one of CONDITION_STATUSES
    onset_date: date | None = None
    notes: str = ""


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True)
class PatientSummary:
    """One search hit."""

    patient_id: str
    given_name: str
    family_name: str
    sex: str
    date_of_birth: date

    @property
    def display_name(self) -> str:
        """'FAMILY, Given' as shown in lists."""
        return f"{self.family_name.upper()}, {self.given_name}"


@dataclass(frozen=True)
class Visit:
    """A saved visit; pass ``version`` back as ``expected_version`` when editing or removing it."""

    id: int
    visit_date: date
    reason: str
    notes: str
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Allergy:
    """A saved allergy."""

    id: int
    substance: str
    kind: str
    reaction: str
    severity: str
    recorded_on: date
    version: int


@dataclass(frozen=True)
class Condition:
    """A saved chronic condition."""

    id: int
    name: str
    onset_date: date | None
    status: str
    notes: str
    version: int


@dataclass(frozen=True)
class PatientRecord:
    """The whole record as shown on the record page; ``version`` guards demographics and special notes."""

    patient_id: str
    demographics: Demographics
    special_notes: str
    version: int
    created_at: datetime
    updated_at: datetime
    visits: tuple[Visit, ...] = ()  # newest first
    allergies: tuple[Allergy, ...] = ()  # severest first, then by substance
    conditions: tuple[Condition, ...] = ()  # active first, then by name

    @property
    def summary(self) -> PatientSummary:
        """The record as a search-list row."""
        d = self.demographics
        return PatientSummary(self.patient_id, d.given_name, d.family_name, d.sex, d.date_of_birth)


@dataclass(frozen=True)
class AuditEntry:
    """One audit row; ``before``/``after`` hold the changed fields (``None`` for views and logins)."""

    id: int
    at: datetime
    user_id: int | None
    username: str
    action: str
    entity_type: str
    entity_id: str | None
    patient_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: str


@dataclass(frozen=True)
class AuditPage:
    """A page of audit rows (newest first) and the number of rows matching the filters."""

    entries: tuple[AuditEntry, ...]
    total: int
    limit: int
    offset: int


# ---------------------------------------------------------------- helpers

_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_MAX_LIMIT = 1000


@contextmanager
def _transaction() -> Iterator[Session]:
    """``session_scope()`` that reports a lost optimistic-locking race as ``ConflictError``."""
    try:
        with session_scope() as session:
            yield session
    except StaleDataError as exc:
        # Someone saved or removed the row between our read and our flush (version mismatch in the WHERE).
        raise ConflictError() from exc


def _not_found(what: str, key: object) -> NotFound:
    return NotFound(f"No {what} with ID {key!r} — it may have been removed. Search again or reload.")


def _load_patient(session: Session, patient_id: str, *, with_history: bool = False) -> models.Patient:
    key = normalize_patient_id(patient_id or "")
    patient = repo.get_patient(session, key, with_history=with_history) if key else None
    if patient is None:
        raise NotFound(f"No patient with ID {key or patient_id!r}.")
    return patient


def _check_version(current: int, expected: int) -> None:
    if current != expected:
        raise ConflictError()


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date | datetime) else v for k, v in values.items()}


def _diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields that changed, as JSON-ready before/after documents for the audit log."""
    changed = [k for k in after if before.get(k) != after[k]]
    return _jsonable({k: before.get(k) for k in changed}), _jsonable({k: after[k] for k in changed})


def _audit(
    session: Session,
    actor: AuthenticatedUser,
    action: str,
    entity_type: str,
    entity_id: object,
    patient_id: str,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    detail: str = "",
) -> None:
    repo.add_audit(
        session,
        user_id=actor.id,
        username=actor.username,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        patient_id=patient_id,
        before=_jsonable(before) if before is not None else None,
        after=_jsonable(after) if after is not None else None,
        detail=detail,
    )


# ---- DTO builders (ORM rows never leave this module)


def _demographics(p: models.Patient) -> Demographics:
    return Demographics(
        given_name=p.given_name,
        family_name=p.family_name,
        sex=p.sex,
        date_of_birth=p.date_of_birth,
        phone=p.phone,
        email=p.email,
        address=p.address,
    )


def _summary(p: models.Patient | repo.SummaryRow) -> PatientSummary:
    return PatientSummary(p.patient_id, p.given_name, p.family_name, p.sex, p.date_of_birth)


def _visit(v: models.Visit) -> Visit:
    return Visit(v.id, v.visit_date, v.reason, v.notes, v.version, v.created_at, v.updated_at)


def _allergy(a: models.Allergy) -> Allergy:
    return Allergy(a.id, a.substance, a.kind, a.reaction, a.severity, a.recorded_on, a.version)


def _condition(c: models.ChronicCondition) -> Condition:
    return Condition(c.id, c.name, c.onset_date, c.status, c.notes, c.version)


def _record(
    p: Any, visits: Iterable[Any] = (), allergies: Iterable[Any] = (), conditions: Iterable[Any] = ()
) -> PatientRecord:
    """The record DTO from a patient and its history, given as ORM objects or as plain rows."""
    return PatientRecord(
        patient_id=p.patient_id,
        demographics=_demographics(p),
        special_notes=p.special_notes,
        version=p.version,
        created_at=p.created_at,
        updated_at=p.updated_at,
        visits=tuple(_visit(v) for v in sorted(visits, key=lambda v: (v.visit_date, v.id), reverse=True)),
        allergies=tuple(
            _allergy(a)
            for a in sorted(
                allergies, key=lambda a: (-_SEVERITY_RANK.get(a.severity, 0), a.substance.casefold())
            )
        ),
        conditions=tuple(
            _condition(c) for c in sorted(conditions, key=lambda c: (c.status != "active", c.name.casefold()))
        ),
    )


def _full_record(p: models.Patient) -> PatientRecord:
    return _record(p, p.visits, p.allergies, p.conditions)


# ---- validation of each input


def _clean_demographics(d: Demographics, check: Checker) -> Demographics:
    given = check.text("given_name", d.given_name, "given_name", label="Given name", required=True)
    family = check.text("family_name", d.family_name, "family_name", label="Family name", required=True)
    sex = check.choice("sex", d.sex, SEXES, label="Sex")
    dob = check.past_date("date_of_birth", d.date_of_birth, label="Date of birth")
    phone = check.text("phone", d.phone, "phone", label="Phone")
    check.pattern("phone", phone, PHONE_PATTERN, "Phone may contain only digits, spaces and + ( ) - . /")
    email = check.text("email", d.email, "email", label="Email")
    check.pattern("email", email, EMAIL_PATTERN, "Email must look like name@example.org.")
    address = check.text("address", d.address, "address", label="Address", multiline=True)
    return Demographics(given, family, sex, dob or d.date_of_birth, phone, email, address)


def _clean_notes(notes: str, check: Checker) -> str:
    return check.text("special_notes", notes, "special_notes", label="Special notes", multiline=True)


def _clean_visit(data: VisitInput, born: date) -> VisitInput:
    check = Checker()
    visit_date = check.past_date(
        "visit_date",
        data.visit_date,
        label="Visit date",
        not_before=born,
        not_before_label="the date of birth",
    )
    reason = check.text("reason", data.reason, "visit_reason", label="Reason", required=True)
    notes = check.text("notes", data.notes, "visit_notes", label="Notes", multiline=True)
    check.done()
    assert visit_date is not None
    return VisitInput(visit_date, reason, notes)


def _clean_allergy(data: AllergyInput) -> AllergyInput:
    check = Checker()
    substance = check.text("substance", data.substance, "substance", label="Substance", required=True)
    kind = check.choice("kind", data.kind, ALLERGY_KINDS, label="Kind")
    severity = check.choice("severity", data.severity, SEVERITIES, label="Severity")
    reaction = check.text("reaction", data.reaction, "reaction", label="Reaction", multiline=True)
    recorded = check.past_date("recorded_on", data.recorded_on or date.today(), label="Date recorded")
    check.done()
    assert recorded is not None
    return AllergyInput(substance, kind, severity, reaction, recorded)


def _clean_condition(data: ConditionInput, born: date) -> ConditionInput:
    check = Checker()
    name = check.text("name", data.name, "condition_name", label="Condition", required=True)
    status = check.choice("status", data.status, CONDITION_STATUSES, label="Status")
    onset = check.past_date(
        "onset_date",
        data.onset_date,
        label="Onset date",
        required=False,
        not_before=born,
        not_before_label="the date of birth",
    )
    notes = check.text("notes", data.notes, "condition_notes", label="Notes", multiline=True)
    check.done()
    return ConditionInput(name, status, onset, notes)


def _patient_fields(d: Demographics) -> dict[str, Any]:
    return {
        **asdict(d),
        "given_norm": normalize_name(d.given_name),
        "family_norm": normalize_name(d.family_name),
    }


def _audit_patient(d: Demographics, special_notes: str) -> dict[str, Any]:
    return {**asdict(d), "special_notes": special_notes}


def _duplicate_substance(patient: models.Patient, substance: str, ignore_id: int | None = None) -> bool:
    wanted = normalize_name(substance)
    return any(normalize_name(a.substance) == wanted and a.id != ignore_id for a in patient.allergies)


# ---------------------------------------------------------------- use cases


def search_patients(query: str, limit: int = 20) -> list[PatientSummary]:
    """Patients whose ID equals or starts with ``query`` (case-insensitive), or whose name matches it.

    Name matching is case- and accent-insensitive on prefixes: the whole query starts the family or the
    given name ("smi", "van der b"), or its words split into a given-name and a family-name prefix in
    either order ("joh smi", "Smith, John"). Exact ID first, then ID prefixes, then names in
    (family, given) order; at most ``limit``. An empty query returns ``[]``.
    """
    # Control characters can never be in a stored name or ID (and PostgreSQL rejects NUL in parameters).
    text = " ".join(CONTROL_CHARACTERS.sub(" ", query or "").split())[:200]
    limit = max(1, min(limit, _MAX_LIMIT))
    if not text:
        return []
    found: dict[str, PatientSummary] = {}
    candidate_id = normalize_patient_id(text)
    tokens = [t for t in (normalize_name(w) for w in re.split(r"[\s,;]+", text)) if t][:4]
    with session_scope() as session:
        if len(candidate_id) <= LIMITS["patient_id"] and PATIENT_ID_PREFIX_PATTERN.fullmatch(candidate_id):
            # In ID order an exact match is the first of its own prefix range: one query serves both.
            for p in repo.find_patients_by_id_prefix(session, candidate_id, limit):
                found.setdefault(p.patient_id, _summary(p))
        # Names hold no digits: an ID-like query skips the name branches (half the work of an ID lookup).
        if tokens and len(found) < limit and not any(ch.isdigit() for ch in text):
            for p in repo.find_patients_by_name(session, tokens, limit):
                found.setdefault(p.patient_id, _summary(p))
    return list(found.values())[:limit]


def get_record(patient_id: str, actor: AuthenticatedUser) -> PatientRecord:
    """The full record of ``patient_id``; writes a 'view' audit row. ``NotFound`` for an unknown ID."""
    with _transaction() as session:
        key = normalize_patient_id(patient_id or "")
        rows = repo.load_record_rows(session, key) if key else None
        if rows is None:
            raise NotFound(f"No patient with ID {key or patient_id!r}.")
        _audit(session, actor, "view", "patient", key, key)
        return _record(*rows)


def create_patient(
    patient_id: str, demographics: Demographics, actor: AuthenticatedUser, *, special_notes: str = ""
) -> PatientRecord:
    """Create a patient. ``ValidationError`` for an empty, malformed (A-Z 0-9 -, at most 32) or
    duplicate ID, impossible dates, over-long fields."""
    check = Checker()
    try:
        key = check_patient_id(patient_id)
    except ValidationError as exc:
        check.errors.update(exc.errors)
        key = ""
    clean = _clean_demographics(demographics, check)
    notes = _clean_notes(special_notes, check)
    check.done()
    duplicate = ValidationError({"patient_id": f"A patient with ID {key!r} already exists."})
    try:
        with _transaction() as session:
            if repo.patient_id_exists(session, key):
                raise duplicate
            patient = repo.add_patient(session, patient_id=key, special_notes=notes, **_patient_fields(clean))
            _audit(session, actor, "create", "patient", key, key, after=_audit_patient(clean, notes))
            record = _record(patient)
    except IntegrityError as exc:
        # Another user created the same ID between our check and our insert; any other constraint
        # failure is a bug and must surface as itself, not as a misleading "duplicate".
        with session_scope() as session:
            if repo.patient_id_exists(session, key):
                raise duplicate from exc
        raise
    log.info("patient %s created by %s", key, actor.username)
    return record


def update_demographics(
    patient_id: str, demographics: Demographics, expected_version: int, actor: AuthenticatedUser
) -> PatientRecord:
    """Save edited demographics; ``ConflictError`` if the record's version is no longer ``expected_version``.
    Saving unchanged values is a no-op (no audit row, version unchanged)."""
    check = Checker()
    clean = _clean_demographics(demographics, check)
    check.done()
    with _transaction() as session:
        patient = _load_patient(session, patient_id, with_history=True)
        _check_version(patient.version, expected_version)
        before, after = _diff(asdict(_demographics(patient)), asdict(clean))
        if after:
            for name, value in _patient_fields(clean).items():
                setattr(patient, name, value)
            session.flush()
            _audit(
                session,
                actor,
                "update",
                "patient",
                patient.patient_id,
                patient.patient_id,
                before=before,
                after=after,
            )
        return _full_record(patient)


def update_special_notes(
    patient_id: str, notes: str, expected_version: int, actor: AuthenticatedUser
) -> PatientRecord:
    """Replace the special notes (an empty string removes them); versioned like demographics."""
    check = Checker()
    clean = _clean_notes(notes, check)
    check.done()
    with _transaction() as session:
        patient = _load_patient(session, patient_id, with_history=True)
        _check_version(patient.version, expected_version)
        if clean != patient.special_notes:
            before = {"special_notes": patient.special_notes}
            patient.special_notes = clean
            session.flush()
            action = "delete" if not clean else "update"
            _audit(
                session,
                actor,
                action,
                "special_notes",
                patient.patient_id,
                patient.patient_id,
                before=before,
                after={"special_notes": clean},
            )
        return _full_record(patient)


def add_visit(patient_id: str, data: VisitInput, actor: AuthenticatedUser) -> Visit:
    """Add a visit to the patient's history (date not in the future nor before birth)."""
    with _transaction() as session:
        patient = _load_patient(session, patient_id)
        clean = _clean_visit(data, patient.date_of_birth)
        visit = models.Visit(patient=patient, **asdict(clean))
        repo.add_row(session, visit)
        _audit(session, actor, "create", "visit", visit.id, patient.patient_id, after=asdict(clean))
        return _visit(visit)


def update_visit(visit_id: int, data: VisitInput, expected_version: int, actor: AuthenticatedUser) -> Visit:
    """Edit a visit; ``ConflictError`` on a concurrent change, ``NotFound`` if it was removed."""
    with _transaction() as session:
        visit = repo.get_visit(session, visit_id)
        if visit is None:
            raise _not_found("visit", visit_id)
        _check_version(visit.version, expected_version)
        clean = _clean_visit(data, visit.patient.date_of_birth)
        current = {"visit_date": visit.visit_date, "reason": visit.reason, "notes": visit.notes}
        before, after = _diff(current, asdict(clean))
        if after:
            for name, value in asdict(clean).items():
                setattr(visit, name, value)
            session.flush()
            _audit(
                session,
                actor,
                "update",
                "visit",
                visit.id,
                visit.patient.patient_id,
                before=before,
                after=after,
            )
        return _visit(visit)


def remove_visit(visit_id: int, expected_version: int, actor: AuthenticatedUser) -> None:
    """Remove a visit (its last state stays in the audit log)."""
    with _transaction() as session:
        visit = repo.get_visit(session, visit_id)
        if visit is None:
            raise _not_found("visit", visit_id)
        _check_version(visit.version, expected_version)
        before = {"visit_date": visit.visit_date, "reason": visit.reason, "notes": visit.notes}
        patient_key = visit.patient.patient_id
        repo.delete_row(session, visit)
        _audit(session, actor, "delete", "visit", visit_id, patient_key, before=before)


def add_allergy(patient_id: str, data: AllergyInput, actor: AuthenticatedUser) -> Allergy:
    """Record an allergy (``ValidationError`` if the same substance is already recorded)."""
    clean = _clean_allergy(data)
    with _transaction() as session:
        patient = _load_patient(session, patient_id, with_history=True)
        if _duplicate_substance(patient, clean.substance):
            raise ValidationError({"substance": f"An allergy to {clean.substance!r} is already recorded."})
        allergy = models.Allergy(patient=patient, **asdict(clean))
        repo.add_row(session, allergy)
        _audit(session, actor, "create", "allergy", allergy.id, patient.patient_id, after=asdict(clean))
        return _allergy(allergy)


def _allergy_values(a: models.Allergy) -> dict[str, Any]:
    return {
        "substance": a.substance,
        "kind": a.kind,
        "severity": a.severity,
        "reaction": a.reaction,
        "recorded_on": a.recorded_on,
    }


def update_allergy(
    allergy_id: int, data: AllergyInput, expected_version: int, actor: AuthenticatedUser
) -> Allergy:
    """Edit an allergy; ``ConflictError`` on a concurrent change, ``NotFound`` if it was removed."""
    with _transaction() as session:
        allergy = repo.get_allergy(session, allergy_id)
        if allergy is None:
            raise _not_found("allergy", allergy_id)
        _check_version(allergy.version, expected_version)
        # An edit that leaves the date empty keeps the original date rather than resetting it to today.
        clean = _clean_allergy(data if data.recorded_on else _replace_date(data, allergy.recorded_on))
        if _duplicate_substance(allergy.patient, clean.substance, ignore_id=allergy.id):
            raise ValidationError({"substance": f"An allergy to {clean.substance!r} is already recorded."})
        before, after = _diff(_allergy_values(allergy), asdict(clean))
        if after:
            for name, value in asdict(clean).items():
                setattr(allergy, name, value)
            session.flush()
            _audit(
                session,
                actor,
                "update",
                "allergy",
                allergy.id,
                allergy.patient.patient_id,
                before=before,
                after=after,
            )
        return _allergy(allergy)


def _replace_date(data: AllergyInput, recorded_on: date) -> AllergyInput:
    return AllergyInput(data.substance, data.kind, data.severity, data.reaction, recorded_on)


def remove_allergy(allergy_id: int, expected_version: int, actor: AuthenticatedUser) -> None:
    """Remove an allergy (its last state stays in the audit log)."""
    with _transaction() as session:
        allergy = repo.get_allergy(session, allergy_id)
        if allergy is None:
            raise _not_found("allergy", allergy_id)
        _check_version(allergy.version, expected_version)
        before = _allergy_values(allergy)
        patient_key = allergy.patient.patient_id
        repo.delete_row(session, allergy)
        _audit(session, actor, "delete", "allergy", allergy_id, patient_key, before=before)


def add_condition(patient_id: str, data: ConditionInput, actor: AuthenticatedUser) -> Condition:
    """Record a chronic condition (onset not in the future nor before birth)."""
    with _transaction() as session:
        patient = _load_patient(session, patient_id)
        clean = _clean_condition(data, patient.date_of_birth)
        condition = models.ChronicCondition(patient=patient, **asdict(clean))
        repo.add_row(session, condition)
        _audit(session, actor, "create", "condition", condition.id, patient.patient_id, after=asdict(clean))
        return _condition(condition)


def _condition_values(c: models.ChronicCondition) -> dict[str, Any]:
    return {"name": c.name, "status": c.status, "onset_date": c.onset_date, "notes": c.notes}


def update_condition(
    condition_id: int, data: ConditionInput, expected_version: int, actor: AuthenticatedUser
) -> Condition:
    """Edit a chronic condition; ``ConflictError`` on a concurrent change, ``NotFound`` if it was removed."""
    with _transaction() as session:
        condition = repo.get_condition(session, condition_id)
        if condition is None:
            raise _not_found("condition", condition_id)
        _check_version(condition.version, expected_version)
        clean = _clean_condition(data, condition.patient.date_of_birth)
        before, after = _diff(_condition_values(condition), asdict(clean))
        if after:
            for name, value in asdict(clean).items():
                setattr(condition, name, value)
            session.flush()
            _audit(
                session,
                actor,
                "update",
                "condition",
                condition.id,
                condition.patient.patient_id,
                before=before,
                after=after,
            )
        return _condition(condition)


def remove_condition(condition_id: int, expected_version: int, actor: AuthenticatedUser) -> None:
    """Remove a chronic condition (its last state stays in the audit log)."""
    with _transaction() as session:
        condition = repo.get_condition(session, condition_id)
        if condition is None:
            raise _not_found("condition", condition_id)
        _check_version(condition.version, expected_version)
        before = _condition_values(condition)
        patient_key = condition.patient.patient_id
        repo.delete_row(session, condition)
        _audit(session, actor, "delete", "condition", condition_id, patient_key, before=before)


def _start_of(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.combine(value, time.min, tzinfo=UTC)


def list_audit(
    actor: AuthenticatedUser,
    *,
    username: str | None = None,
    patient_id: str | None = None,
    action: str | None = None,
    date_from: date | datetime | None = None,
    date_to: date | datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> AuditPage:
    """Audit rows, newest first, for admins only (``PermissionDenied`` otherwise).

    Filters combine with AND; ``date_from``/``date_to`` are inclusive (a ``date`` means that whole UTC day;
    a naive datetime is taken as UTC). ``limit`` is capped at 1000.
    """
    require_admin(actor)
    limit = max(1, min(limit, _MAX_LIMIT))
    offset = max(0, offset)
    since = _start_of(date_from) if date_from is not None else None
    until: datetime | None = None
    if isinstance(date_to, datetime):
        until = _start_of(date_to) + timedelta(microseconds=1)
    elif date_to is not None:
        until = _start_of(date_to) + timedelta(days=1)
    if since is not None and until is not None and since >= until:
        raise ValidationError({"date_to": "The end date must not be before the start date."})
    with session_scope() as session:
        rows, total = repo.query_audit(
            session,
            username=(username or "").strip().lower() or None,
            patient_id=normalize_patient_id(patient_id or "") or None,
            action=(action or "").strip() or None,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
        entries = tuple(
            AuditEntry(
                id=r.id,
                at=r.at,
                user_id=r.user_id,
                username=r.username,
                action=r.action,
                entity_type=r.entity_type,
                entity_id=r.entity_id,
                patient_id=r.patient_id,
                before=r.before,
                after=r.after,
                detail=r.detail,
            )
            for r in rows
        )
    return AuditPage(entries=entries, total=total, limit=limit, offset=offset)
