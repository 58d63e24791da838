"""An ambulance crew's quick registration: a patient with only what a crew knows on the road.

The patient gets a generated ID (``AMB-YYMMDDHHMMSS-N``), ``Unknown`` names unless given, the sex, and a date of
birth estimated from an age in years (1 January of that year); the department corrects it on arrival through the
ordinary record. Audited like any new patient (``core.records.create_patient``).
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime

from core.auth import AuthenticatedUser
from core.errors import PermissionDenied, ValidationError
from core.records import Demographics, PatientRecord, create_patient

UNKNOWN = "Unknown"


def quick_register(
    sex: str, age_years: int, actor: AuthenticatedUser, *, given_name: str = "", family_name: str = ""
) -> PatientRecord:
    """Create a patient from the crew's minimal fields; returns the record (its ``patient_id`` is new)."""
    if actor.role not in ("ambulance", "doctor", "admin"):
        raise PermissionDenied("Only an ambulance crew or a doctor can register a patient.")
    if not 0 <= age_years <= 120:
        raise ValidationError({"age": "The age must be between 0 and 120 years."})
    now = datetime.now(UTC)
    born = date(now.year - age_years, 1, 1)
    patient_id = f"AMB-{now:%y%m%d%H%M%S}-{secrets.randbelow(1000):03d}"
    demographics = Demographics(given_name.strip() or UNKNOWN, family_name.strip() or UNKNOWN, sex, born)
    return create_patient(patient_id, demographics, actor, special_notes="Registered by an ambulance crew.")
