"""Patient use cases: search, open a record, create a patient, edit its demographics and special notes."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core import audit
from core.auth import AuthenticatedUser
from core.errors import NotFound, ValidationError
from core.records import clean
from core.records._store import (
    check_version,
    demographics_of,
    diff,
    full_record,
    load_patient,
    record_of,
    summary_of,
    transaction,
)
from core.records.types import Demographics, PatientRecord, PatientSummary
from core.validation import (
    CONTROL_CHARACTERS,
    PATIENT_ID_PREFIX_PATTERN,
    Checker,
    check_patient_id,
    normalize_name,
    normalize_patient_id,
)
from db import repository as repo
from db.models import LIMITS, Patient
from db.session import session_scope

log = logging.getLogger(__name__)

_MAX_LIMIT = 1000


def search_patients(
    query: str, limit: int = 20, *, actor: AuthenticatedUser | None = None
) -> list[PatientSummary]:
    """Patients whose ID equals or starts with ``query`` (case-insensitive), or whose name matches it.

    Name matching is case- and accent-insensitive on prefixes: the whole query starts the family or the
    given name ("smi", "van der b"), or its words split into a given-name and a family-name prefix in
    either order ("joh smi", "Smith, John"). Exact ID first, then ID prefixes, then names in
    (family, given) order; at most ``limit``. A bare number also finds the ID it is the number of
    ("100001": ED-100001), first. An empty query returns ``[]``.

    Searched by ``actor``, the search is audited (``search``) with the query as typed and the IDs found:
    who looked up which names or birth dates is what a hospital's privacy officer asks, and the audit log is
    the protected place for it (admins only; append-only on PostgreSQL).
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
        if text.isdigit() and len(text) < LIMITS["patient_id"]:
            # A bare number is the number part of an ID ("100001" finds ED-100001), whatever the site prefix.
            numbered = (
                select(Patient).where(Patient.patient_id.like(f"%-{text}")).order_by(Patient.patient_id)
            )
            for numbered_patient in session.scalars(numbered.limit(limit)):
                found.setdefault(numbered_patient.patient_id, summary_of(numbered_patient))
        if len(candidate_id) <= LIMITS["patient_id"] and PATIENT_ID_PREFIX_PATTERN.fullmatch(candidate_id):
            # In ID order an exact match is the first of its own prefix range: one query serves both.
            for p in repo.find_patients_by_id_prefix(session, candidate_id, limit):
                found.setdefault(p.patient_id, summary_of(p))
        # Names hold no digits: an ID-like query skips the name branches (half the work of an ID lookup).
        if tokens and len(found) < limit and not any(ch.isdigit() for ch in text):
            for p in repo.find_patients_by_name(session, tokens, limit):
                found.setdefault(p.patient_id, summary_of(p))
        hits = list(found.values())[:limit]
        if actor is not None:
            after = {"query": text, "found": [h.patient_id for h in hits]}
            audit.write(session, actor, "search", "patient", after=after, detail=f"{len(hits)} found")
    return hits


def get_record(patient_id: str, actor: AuthenticatedUser) -> PatientRecord:
    """The full record of ``patient_id``; writes a 'view' audit row. ``NotFound`` for an unknown ID."""
    with transaction() as session:
        key = normalize_patient_id(patient_id or "")
        rows = repo.load_record_rows(session, key) if key else None
        if rows is None:
            raise NotFound(f"No patient with ID {key or patient_id!r}.")
        audit.write(session, actor, "view", "patient", key, patient_id=key)
        return record_of(*rows)


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
    cleaned = clean.demographics(demographics, check)
    notes = clean.special_notes(special_notes, check)
    check.done()
    duplicate = ValidationError({"patient_id": f"A patient with ID {key!r} already exists."})
    try:
        with transaction() as session:
            if repo.patient_id_exists(session, key):
                raise duplicate
            patient = repo.add_patient(
                session, patient_id=key, special_notes=notes, **clean.patient_fields(cleaned)
            )
            after = {**asdict(cleaned), "special_notes": notes}
            audit.write(session, actor, "create", "patient", key, patient_id=key, after=after)
            record = record_of(patient)
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
    cleaned = clean.demographics(demographics, check)
    check.done()
    with transaction() as session:
        patient = load_patient(session, patient_id, with_history=True)
        check_version(patient.version, expected_version)
        before, after = diff(asdict(demographics_of(patient)), asdict(cleaned))
        if after:
            for name, value in clean.patient_fields(cleaned).items():
                setattr(patient, name, value)
            session.flush()
            key = patient.patient_id
            audit.write(session, actor, "update", "patient", key, patient_id=key, before=before, after=after)
        return full_record(patient)


def update_special_notes(
    patient_id: str, notes: str, expected_version: int, actor: AuthenticatedUser
) -> PatientRecord:
    """Replace the special notes (an empty string removes them); versioned like demographics."""
    check = Checker()
    cleaned = clean.special_notes(notes, check)
    check.done()
    with transaction() as session:
        patient = load_patient(session, patient_id, with_history=True)
        check_version(patient.version, expected_version)
        if cleaned != patient.special_notes:
            before = {"special_notes": patient.special_notes}
            patient.special_notes = cleaned
            session.flush()
            action = "delete" if not cleaned else "update"
            audit.write(
                session,
                actor,
                action,
                "special_notes",
                patient.patient_id,
                patient_id=patient.patient_id,
                before=before,
                after={"special_notes": cleaned},
            )
        return full_record(patient)
