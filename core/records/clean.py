"""Checking and normalising what a record form submits; each function raises ``ValidationError`` with one
message per field (through ``core.validation.Checker``) or returns the cleaned input."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Any

from core.records.types import AllergyInput, ConditionInput, Demographics, VisitInput
from core.validation import EMAIL_PATTERN, PHONE_PATTERN, Checker, normalize_name
from db.models import ALLERGY_KINDS, CONDITION_STATUSES, SEVERITIES, SEXES


def demographics(d: Demographics, check: Checker) -> Demographics:
    """Names required, a known sex, a birth date in the past, a phone and an email that look like one."""
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


def special_notes(text: str, check: Checker) -> str:
    """The special notes (free text, may be empty)."""
    return check.text("special_notes", text, "special_notes", label="Special notes", multiline=True)


def patient_fields(d: Demographics) -> dict[str, Any]:
    """The patient columns for cleaned demographics, with the normalised names used by search."""
    return {
        **asdict(d),
        "given_norm": normalize_name(d.given_name),
        "family_norm": normalize_name(d.family_name),
    }


def visit(data: VisitInput, born: date) -> VisitInput:
    """A visit dated between the birth and today, with a reason."""
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


def allergy(data: AllergyInput) -> AllergyInput:
    """An allergy with a substance, known kind and severity, recorded today at the latest (default today)."""
    check = Checker()
    substance = check.text("substance", data.substance, "substance", label="Substance", required=True)
    kind = check.choice("kind", data.kind, ALLERGY_KINDS, label="Kind")
    severity = check.choice("severity", data.severity, SEVERITIES, label="Severity")
    reaction = check.text("reaction", data.reaction, "reaction", label="Reaction", multiline=True)
    recorded = check.past_date("recorded_on", data.recorded_on or date.today(), label="Date recorded")
    check.done()
    assert recorded is not None
    return AllergyInput(substance, kind, severity, reaction, recorded)


def condition(data: ConditionInput, born: date) -> ConditionInput:
    """A named condition with a known status and, if given, an onset between the birth and today."""
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
