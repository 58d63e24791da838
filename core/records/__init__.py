"""Patient records: search, view, create and edit, with audit — the public face of the package.

Every public function is one user action: it opens its own transaction, writes its audit row
(``core.audit``) in that same transaction, and returns frozen DTOs — never ORM objects — so pages can
keep them in ``st.session_state`` safely. Edits take the ``version`` the user saw (``expected_version``)
and raise ``ConflictError`` if someone else saved in between. Nothing here imports Streamlit.

The package is split by job: ``types`` (the DTOs), ``clean`` (checking form input), ``patients`` (search,
record, demographics, special notes), ``entries`` (visits, allergies and conditions through one generic
add/update/remove), ``_store`` (transaction, loading, ORM rows to DTOs) and ``demo_data``.

Why a facade rather than making callers import the modules: "records" is the one idea pages, widgets,
scripts and tests use (``records.add_visit``, ``records.PatientRecord``, 20-odd call sites), and which
module a function lives in is an implementation detail that may change again. This file re-exports the
public API and holds no logic, so ``from core import records`` stays the single door.
"""

from __future__ import annotations

from core.records.entries import (
    add_allergy,
    add_condition,
    add_visit,
    remove_allergy,
    remove_condition,
    remove_visit,
    update_allergy,
    update_condition,
    update_visit,
)
from core.records.patients import (
    create_patient,
    get_record,
    search_patients,
    update_demographics,
    update_special_notes,
)
from core.records.types import (
    Allergy,
    AllergyInput,
    Condition,
    ConditionInput,
    Demographics,
    PatientRecord,
    PatientSummary,
    Visit,
    VisitInput,
)
from db.models import ALLERGY_KINDS, CONDITION_STATUSES, LIMITS, SEVERITIES, SEXES

__all__ = [
    "ALLERGY_KINDS",
    "CONDITION_STATUSES",
    "LIMITS",
    "SEVERITIES",
    "SEXES",
    "Allergy",
    "AllergyInput",
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
