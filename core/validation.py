"""Input checks shared by the services: each returns the cleaned value or raises ``ValidationError``.

Limits come from ``db.models.LIMITS`` (the column lengths), so a form can never submit something the
database would truncate or reject halfway through an action.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from datetime import UTC, date, datetime, timedelta

from core.errors import ValidationError
from db.models import LIMITS

EARLIEST_DATE = date(1900, 1, 1)
# Upper case letters, digits and inner hyphens: what hospital MRNs use, and safe in URLs and file names.
PATIENT_ID_PATTERN = re.compile(r"[A-Z0-9](?:[A-Z0-9-]*[A-Z0-9])?")
# What a search box may hold while the user is still typing an ID ("ED-" is a fine prefix).
PATIENT_ID_PREFIX_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9-]*")
USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{2,31}")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE_PATTERN = re.compile(r"[0-9+()./ -]*")
# Control characters other than tab/newline: PostgreSQL rejects NUL outright, the rest corrupt displays.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def latest_today() -> date:
    """Today's date in the easternmost time zone (UTC+14).

    The server usually runs in UTC; a doctor ahead of UTC entering "today" must not be told the date is in
    the future, so "future" means later than today anywhere on Earth (at most one day of leniency).
    """
    return (datetime.now(UTC) + timedelta(hours=14)).date()


def normalize_patient_id(raw: str) -> str:
    """Patient IDs are case-insensitive: stored and compared upper case, without surrounding spaces."""
    return raw.strip().upper()


def normalize_name(raw: str) -> str:
    """Case- and accent-insensitive form of a name for search ('Müller ' -> 'muller')."""
    decomposed = unicodedata.normalize("NFKD", raw)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def check_patient_id(raw: str, field: str = "patient_id") -> str:
    """A well-formed patient ID (normalised), or ``ValidationError``."""
    value = normalize_patient_id(raw or "")
    limit = LIMITS["patient_id"]
    if not value:
        raise ValidationError({field: "Patient ID is required."})
    if len(value) > limit:
        raise ValidationError({field: f"Patient ID must be at most {limit} characters."})
    if not PATIENT_ID_PATTERN.fullmatch(value):
        raise ValidationError(
            {field: "Patient ID may contain only letters, digits and hyphens (not at the start or end)."}
        )
    return value


class Checker:
    """Collects every field error of one form, so the user sees them all at once."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def text(
        self,
        field: str,
        value: str | None,
        limit_key: str,
        *,
        label: str,
        required: bool = False,
        multiline: bool = False,
    ) -> str:
        """Stripped text within the column limit; no control characters (newlines only if ``multiline``)."""
        cleaned = (value or "").strip()
        limit = LIMITS[limit_key]
        if required and not cleaned:
            self.errors[field] = f"{label} is required."
        elif len(cleaned) > limit:
            self.errors[field] = f"{label} must be at most {limit} characters (got {len(cleaned)})."
        elif CONTROL_CHARACTERS.search(cleaned) or (not multiline and ("\n" in cleaned or "\r" in cleaned)):
            self.errors[field] = f"{label} contains characters that are not allowed."
        return cleaned

    def choice(self, field: str, value: str, allowed: Collection[str], *, label: str) -> str:
        """One of ``allowed``."""
        if value not in allowed:
            self.errors[field] = f"{label} must be one of: {', '.join(allowed)}."
        return value

    def past_date(
        self,
        field: str,
        value: date | None,
        *,
        label: str,
        required: bool = True,
        not_before: date | None = None,
        not_before_label: str = "",
    ) -> date | None:
        """A real date not in the future, not before 1900 (or ``not_before``)."""
        if value is None:
            if required:
                self.errors[field] = f"{label} is required."
            return None
        if isinstance(value, datetime) or not isinstance(value, date):
            self.errors[field] = f"{label} must be a date."
            return None
        if value > latest_today():
            self.errors[field] = f"{label} cannot be in the future."
        elif value < EARLIEST_DATE:
            self.errors[field] = f"{label} cannot be before {EARLIEST_DATE.isoformat()}."
        elif not_before is not None and value < not_before:
            self.errors[field] = f"{label} cannot be before {not_before_label or not_before.isoformat()}."
        return value

    def pattern(self, field: str, value: str, pattern: re.Pattern[str], message: str) -> None:
        """Non-empty ``value`` must match ``pattern`` entirely."""
        if value and field not in self.errors and not pattern.fullmatch(value):
            self.errors[field] = message

    def done(self) -> None:
        """Raise ``ValidationError`` with every collected error, if any."""
        if self.errors:
            raise ValidationError(self.errors)
