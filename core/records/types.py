"""What record services take (the ``*Input`` forms and :class:`Demographics`) and return (frozen DTOs).

Plain values only — never ORM objects — so pages can keep them in ``st.session_state`` safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

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
