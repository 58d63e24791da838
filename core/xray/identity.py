"""Is this DICOM film of this patient? The header's patient attributes against the record.

An emergency department's worst imaging error is a film in the wrong record. A DICOM header names its patient
(ID, name, sex, birth date); :func:`contradictions` lists, in words, each attribute that contradicts the record,
and the upload (:mod:`core.xray.diagnosis`) refuses the film with :class:`PatientMismatch` until someone
confirms it. Any contradiction counts, not only the ID: a film with the right ID but another patient's name or
birth date is just as likely a wrong film (a mistyped ID at the modality, a merged record).

Lenient where real headers differ harmlessly: names compare without case, accents, or middle names (the
family name and the first given name; ``DOE^JOHN^A`` is John Doe), and blank or placeholder values
("ANONYMOUS", "UNKNOWN", a bare ``^``) and a sex of ``O`` against a record that says otherwise are not
contradictions.
"""

from __future__ import annotations

import unicodedata

from core.errors import AppError
from core.imaging.dicom import HeaderPatient
from core.validation import normalize_patient_id
from db import models

__all__ = ["PatientMismatch", "contradictions"]

_DICOM_SEX = {"M": "male", "F": "female", "O": "other"}
#: Names an anonymiser or a modality writes when it does not know the patient: they name nobody.
_PLACEHOLDER_NAMES = frozenset(
    {"anonymous", "anonymized", "anonymised", "anon", "unknown", "none", "na", "x"}
)


class PatientMismatch(AppError):
    """A DICOM file whose header contradicts the chosen patient's record; saving it needs a confirmation.

    ``contradictions`` lists, in words, every patient attribute of the header that contradicts the record
    (ID, name, sex, birth date), with both values; they are raw values from the file: the page escapes them.
    """

    def __init__(self, dicom_patient_id: str, patient_id: str, contradictions: tuple[str, ...] = ()) -> None:
        self.dicom_patient_id = dicom_patient_id
        self.patient_id = patient_id
        self.contradictions = contradictions
        against = f" The header against the record: {'; '.join(contradictions)}." if contradictions else ""
        other_id = normalize_patient_id(dicom_patient_id or "") != patient_id
        opening = (
            f"This DICOM file names patient ID {_shown(dicom_patient_id)}, not {patient_id}."
            if other_id
            else f"This DICOM file's header does not match {patient_id}'s record."
        )
        super().__init__(
            f"{opening}{against} Check that the image and the patient are the right ones; confirm to save it "
            f"in {patient_id}'s record anyway."
        )


def _shown(value: str) -> str:
    """A header value as the message quotes it: repr-quoted, at most 40 characters (a crafted header can hold
    100,000)."""
    return repr(value if len(value) <= 40 else value[:39] + "…")


def _plain(text: str) -> str:
    """Case- and accent-free, spaces collapsed: "Zoë  " and "ZOE" compare equal."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def _first_word(text: str) -> str:
    words = _plain(text).replace("-", " ").split()
    return words[0] if words else ""


def _name_contradicts(dicom_name: str, patient: models.Patient) -> bool:
    family, _, rest = dicom_name.partition("^")
    given = rest.split("^")[0]
    if _plain(family) in _PLACEHOLDER_NAMES or not _plain(family):
        return False
    if _plain(family) != _plain(patient.family_name):
        return True
    return bool(_first_word(given)) and _first_word(given) != _first_word(patient.given_name)


def contradictions(header: HeaderPatient, patient: models.Patient) -> tuple[str, ...]:
    """Each patient attribute of a DICOM header that contradicts the record, as "what: header (record: ...)"."""
    found = []
    if header.patient_id and normalize_patient_id(header.patient_id) != patient.patient_id:
        found.append(f"patient ID {_shown(header.patient_id)} (record: {patient.patient_id})")
    if header.name and _name_contradicts(header.name, patient):
        found.append(
            f"name {_shown(header.name)} (record: {patient.family_name.upper()}, {patient.given_name})"
        )
    sex = _DICOM_SEX.get((header.sex or "").strip().upper())
    if sex in ("male", "female") and patient.sex in ("male", "female") and sex != patient.sex:
        found.append(f"sex {_shown(header.sex or '')} (record: {patient.sex})")
    if header.birth_date is not None and header.birth_date != patient.date_of_birth:
        found.append(
            f"birth date {header.birth_date.isoformat()} (record: {patient.date_of_birth.isoformat()})"
        )
    return tuple(found)
