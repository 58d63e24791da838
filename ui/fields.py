"""The inputs of each record form. Names are the service's field names (so its error messages land under
the right widget); the choices come from the service layer, so a new severity or allergy kind needs no
change here."""

from __future__ import annotations

from core import records
from ui.forms import Field

PATIENT_ID = Field("patient_id", "Patient ID / MRN", required=True, placeholder="e.g. ED-2024-00017")

DEMOGRAPHICS = (
    Field("given_name", "Given name", required=True),
    Field("family_name", "Family name", required=True),
    Field("sex", "Sex", "choice", records.SEXES),
    Field("date_of_birth", "Date of birth", "date", required=True),
    Field("phone", "Phone"),
    Field("email", "Email"),
    Field("address", "Address", "area"),
)

SPECIAL_NOTES = (
    Field(
        "special_notes",
        "Special notes",
        "area",
        placeholder="e.g. hearing impaired, needs interpreter, Jehovah's Witness, DNR on file",
    ),
)

VISIT = (
    Field("visit_date", "Visit date", "date", required=True, today_default=True),
    Field("reason", "Reason", required=True, placeholder="e.g. chest pain, shortness of breath"),
    Field("notes", "Notes", "area"),
)

ALLERGY = (
    Field("substance", "Substance", required=True, placeholder="e.g. penicillin, peanuts, latex"),
    Field("kind", "Kind", "choice", records.ALLERGY_KINDS),
    Field("severity", "Severity", "choice", records.SEVERITIES, required=True, choose=True),  # no default
    Field("reaction", "Reaction", placeholder="e.g. hives, anaphylaxis"),
    Field("recorded_on", "Date recorded (empty: today)", "date"),
)

CONDITION = (
    Field("name", "Condition", required=True, placeholder="e.g. COPD, type 2 diabetes"),
    Field("status", "Status", "choice", records.CONDITION_STATUSES),
    Field("onset_date", "Onset date (if known)", "date"),
    Field("notes", "Notes", "area"),
)
