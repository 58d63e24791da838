"""Repository functions: queries and writes on a caller's session.

They ``flush()`` (so ids, versions and constraint errors appear inside the caller's transaction) and never
``commit()``: the service that owns the ``session_scope()`` decides when an action is complete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple, TypeAlias, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session, selectinload

from db.base import utcnow
from db.models import (
    Allergy,
    AuditLog,
    ChronicCondition,
    Correction,
    Diagnosis,
    Patient,
    Study,
    User,
    Visit,
)


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """``(prefix, prefix')`` such that ``prefix <= x < prefix'`` exactly when ``x`` starts with ``prefix``.

    ``prefix'`` is ``prefix`` with its last character incremented. Under a byte-order collation (SQLite
    BINARY, PostgreSQL "C", see db.base.code_string) this range is exactly the strings starting with
    ``prefix``; unlike ``LIKE 'p%'`` it needs no escaping of ``%``/``_`` and uses a plain B-tree on both
    backends, whatever the server's locale.
    """
    last = ord(prefix[-1])
    upper = prefix[:-1] + chr(last + 1) if last < 0x10FFFF else prefix + "\U0010ffff"
    return prefix, upper


# ------------------------------------------------------------------ users


def get_user(session: Session, user_id: int) -> User | None:
    """The user with primary key ``user_id``."""
    return session.get(User, user_id)


def get_user_by_username(session: Session, username: str) -> User | None:
    """The user named ``username`` (already normalised to lower case)."""
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def add_user(session: Session, **fields: Any) -> User:
    """Insert a user and flush (raises ``IntegrityError`` for a taken username)."""
    user = User(**fields)
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> Sequence[User]:
    """Every user, by username."""
    return session.scalars(select(User).order_by(User.username)).all()


# Login counting is done by single UPDATE statements rather than read-modify-write through the ORM: each one
# is atomic on both databases (PostgreSQL re-checks the WHERE on the row a concurrent update left; SQLite runs
# one writer at a time), so parallel attempts can neither both take the last try nor lose a count, and no
# version collision has to be retried. Each bumps ``version`` as an ORM update would.
_USERS = cast(Table, User.__table__)
_U = _USERS.c


def _not_locked(now: datetime) -> ColumnElement[bool]:
    return or_(_U.locked_until.is_(None), _U.locked_until <= now)


def claim_login_attempt(session: Session, user_id: int, limit: int, now: datetime) -> int | None:
    """Count one more attempt against the account before its password is checked; the attempt's number
    (1..``limit``), or ``None`` when the account is locked or its ``limit`` tries are all taken."""
    statement = (
        update(_USERS)
        .where(_U.id == user_id, _U.failed_attempts < limit, _not_locked(now))
        .values(failed_attempts=_U.failed_attempts + 1, version=_U.version + 1)
        .returning(_U.failed_attempts)
    )
    return session.execute(statement).scalar_one_or_none()


def lock_if_exhausted(session: Session, user_id: int, limit: int, now: datetime, until: datetime) -> bool:
    """After a wrong password: lock the account until ``until`` if ``limit`` failures are counted (and it is
    not locked yet), resetting the count; True when this call locked it."""
    statement = (
        update(_USERS)
        .where(_U.id == user_id, _U.failed_attempts >= limit, _not_locked(now))
        .values(locked_until=until, failed_attempts=0, version=_U.version + 1)
        .returning(_U.id)
    )
    return session.execute(statement).scalar_one_or_none() is not None


def update_user_fields(session: Session, user_id: int, **values: Any) -> bool:
    """Set columns of one user in one statement (and bump its version); False when there is no such user."""
    statement = (
        update(_USERS).where(_U.id == user_id).values(**values, version=_U.version + 1).returning(_U.id)
    )
    return session.execute(statement).scalar_one_or_none() is not None


def count_active_admins(session: Session) -> int:
    """How many active admin accounts there are."""
    return session.scalar(select(func.count()).where(_U.role == "admin", _U.active.is_(True))) or 0


# ------------------------------------------------------------------ patients


def count_patients(session: Session) -> int:
    """Number of patients."""
    return session.scalar(select(func.count()).select_from(Patient)) or 0


def get_patient(session: Session, patient_id: str, *, with_history: bool = False) -> Patient | None:
    """The patient with MRN ``patient_id`` (normalised), optionally with visits, allergies and conditions
    loaded in three extra queries (no lazy loading after the session closes)."""
    stmt = select(Patient).where(Patient.patient_id == patient_id)
    if with_history:
        stmt = stmt.options(
            selectinload(Patient.visits), selectinload(Patient.allergies), selectinload(Patient.conditions)
        )
    return session.scalars(stmt).one_or_none()


def get_patient_by_pk(session: Session, pk: int) -> Patient:
    """The patient with primary key ``pk`` (which a foreign key guarantees exists)."""
    return session.get_one(Patient, pk)


class RecordRows(NamedTuple):
    """A patient row and its history rows, as read for display (plain rows, not ORM objects)."""

    patient: Any
    visits: Sequence[Any]
    allergies: Sequence[Any]
    conditions: Sequence[Any]


_PATIENT_BY_MRN = select(Patient.__table__).where(Patient.__table__.c.patient_id == bindparam("mrn"))
_VISITS_OF = select(Visit.__table__).where(Visit.__table__.c.patient_pk == bindparam("pk"))
_ALLERGIES_OF = select(Allergy.__table__).where(Allergy.__table__.c.patient_pk == bindparam("pk"))
_CONDITIONS_OF = select(ChronicCondition.__table__).where(
    ChronicCondition.__table__.c.patient_pk == bindparam("pk")
)


def load_record_rows(session: Session, patient_id: str) -> RecordRows | None:
    """Read-only load of a whole record in four indexed queries, or ``None`` for an unknown MRN.

    Opening a record is the most frequent action; prebuilt Core statements avoid the ORM's per-object
    bookkeeping, which costs more than the queries themselves. Edits use :func:`get_patient` instead.
    """
    patient = session.execute(_PATIENT_BY_MRN, {"mrn": patient_id}).one_or_none()
    if patient is None:
        return None
    pk = {"pk": patient.id}
    return RecordRows(
        patient,
        session.execute(_VISITS_OF, pk).all(),
        session.execute(_ALLERGIES_OF, pk).all(),
        session.execute(_CONDITIONS_OF, pk).all(),
    )


def patient_id_exists(session: Session, patient_id: str) -> bool:
    """True when a patient already has this MRN."""
    return session.scalar(select(Patient.id).where(Patient.patient_id == patient_id)) is not None


def add_patient(session: Session, **fields: Any) -> Patient:
    """Insert a patient and flush (raises ``IntegrityError`` for a duplicate MRN)."""
    patient = Patient(**fields)
    session.add(patient)
    session.flush()
    return patient


def bulk_insert_patients(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert many patients in one executemany (seed and benchmark); rows need every non-default column."""
    now = utcnow()
    session.execute(
        insert(Patient), [{"created_at": now, "updated_at": now, "version": 1, **row} for row in rows]
    )


# Search statements are built once with bound parameters: constructing and cache-keying a fresh statement
# costs more than running the indexed query itself (~1 ms against ~0.3 ms on SQLite), and search runs on
# every keystroke-submit. Core columns (not ORM entities) skip the identity map for rows that are only shown.
_P = Patient.__table__.c
SummaryRow: TypeAlias = Row[*tuple[Any, ...]]
_SUMMARY = (
    _P.patient_id, _P.given_name, _P.family_name, _P.sex, _P.date_of_birth, _P.family_norm, _P.given_norm
)  # fmt: skip
_BY_FAMILY = (_P.family_norm, _P.given_norm, _P.patient_id)  # the order of ix_patients_family_given
_BY_GIVEN = (_P.given_norm, _P.family_norm, _P.patient_id)  # the order of ix_patients_given_family


def _in_range(column: Any, name: str) -> ColumnElement[bool]:
    return and_(column >= bindparam(f"{name}_lo"), column < bindparam(f"{name}_hi"))


_ID_PREFIX = select(*_SUMMARY).where(_in_range(_P.patient_id, "id")).order_by(_P.patient_id)


def _bounds(name: str, prefix: str) -> dict[str, str]:
    lower, upper = prefix_bounds(prefix)
    return {f"{name}_lo": lower, f"{name}_hi": upper}


class _Reading(NamedTuple):
    given: str | None  # given-name prefix, if this reading constrains it
    family: str | None  # family-name prefix, if this reading constrains it
    given_first: bool  # the words start with the given name: range over ix_patients_given_family


def _name_readings(tokens: Sequence[str]) -> list[_Reading]:
    """Every way the words can be read as name prefixes (see :func:`find_patients_by_name`)."""
    whole = " ".join(tokens)
    readings = [_Reading(None, whole, False), _Reading(whole, None, True)]
    for split in range(1, len(tokens)):
        first, rest = " ".join(tokens[:split]), " ".join(tokens[split:])
        readings += [_Reading(first, rest, True), _Reading(rest, first, False)]
    return readings


@lru_cache(maxsize=8)
def _name_search_statement(words: int) -> Any:
    """One UNION ALL over the readings of a ``words``-word query (one round trip, compiled once).

    Each branch is its own limited subquery ordered like the composite index it ranges over, so the
    database reads at most ``:limit`` matching index entries per branch and never sorts every match.
    """
    branches = []
    for index, reading in enumerate(_name_readings(["w"] * words)):
        conditions = []
        if reading.given is not None:
            conditions.append(_in_range(_P.given_norm, f"b{index}_g"))
        if reading.family is not None:
            conditions.append(_in_range(_P.family_norm, f"b{index}_f"))
        order = _BY_GIVEN if reading.given_first else _BY_FAMILY
        branch = (
            select(*_SUMMARY).where(*conditions).order_by(*order).limit(bindparam("limit", type_=Integer))
        )
        branches.append(select(*branch.subquery(f"b{index}").c))
    return union_all(*branches)


def find_patients_by_id_prefix(session: Session, prefix: str, limit: int) -> Sequence[SummaryRow]:
    """Summary rows (patient_id, given_name, family_name, sex, date_of_birth, family_norm, given_norm) of
    patients whose MRN starts with ``prefix``, in MRN order (so an exact match comes first)."""
    return session.execute(_ID_PREFIX.limit(limit), _bounds("id", prefix)).all()


def find_patients_by_name(session: Session, tokens: Sequence[str], limit: int) -> list[SummaryRow]:
    """Summary rows of patients matching normalised name ``tokens``, in (family, given, ID) order.

    A patient matches when the whole text is a prefix of the family or of the given name ("van der b",
    "mary ann"), or when the tokens split into a given-name prefix and a family-name prefix, in either order
    ("joh smi", "smith john"). Each reading is a branch that walks one composite index in display order
    and stops at ``limit``, so a common prefix ("smi" among 100,000 patients) costs no more than a rare one;
    the few rows are merged here. Not found: words inside a name ("berg" for "Van der Berg").
    """
    params: dict[str, Any] = {"limit": limit}
    for index, reading in enumerate(_name_readings(tokens)):
        if reading.given is not None:
            params.update(_bounds(f"b{index}_g", reading.given))
        if reading.family is not None:
            params.update(_bounds(f"b{index}_f", reading.family))
    found: dict[str, SummaryRow] = {}
    for row in session.execute(_name_search_statement(len(tokens)), params):
        found.setdefault(row.patient_id, row)
    ordered = sorted(found.values(), key=lambda r: (r.family_norm, r.given_norm, r.patient_id))
    return ordered[:limit]


# ------------------------------------------------------------------ visits, allergies, conditions


def get_visit(session: Session, visit_id: int) -> Visit | None:
    """A visit by primary key (its patient is loaded with it)."""
    return session.get(Visit, visit_id, options=[selectinload(Visit.patient)])


def get_allergy(session: Session, allergy_id: int) -> Allergy | None:
    """An allergy by primary key."""
    return session.get(Allergy, allergy_id, options=[selectinload(Allergy.patient)])


def get_condition(session: Session, condition_id: int) -> ChronicCondition | None:
    """A chronic condition by primary key."""
    return session.get(ChronicCondition, condition_id, options=[selectinload(ChronicCondition.patient)])


def add_row(session: Session, row: Visit | Allergy | ChronicCondition) -> None:
    """Insert a child row of a patient and flush."""
    session.add(row)
    session.flush()


def delete_row(session: Session, row: Visit | Allergy | ChronicCondition) -> None:
    """Delete a row and flush; the version check makes a concurrently edited row raise ``StaleDataError``."""
    session.delete(row)
    session.flush()


# ------------------------------------------------------------------ audit


def add_audit(
    session: Session,
    *,
    user_id: int | None,
    username: str,
    action: str,
    entity_type: str,
    entity_id: str | None = None,
    patient_id: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    detail: str = "",
    at: datetime | None = None,
    client: str | None = None,
) -> None:
    """Append an audit row in the caller's transaction (so it commits or rolls back with the change).

    A Core INSERT rather than an ORM object: the row is never read back, and every record view writes one.
    """
    session.execute(
        insert(AuditLog).values(
            at=at or utcnow(),
            user_id=user_id,
            username=username,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            patient_id=patient_id,
            before=dict(before) if before is not None else None,
            after=dict(after) if after is not None else None,
            detail=detail,
            client=client,
        )
    )


def query_audit(
    session: Session,
    *,
    username: str | None = None,
    patient_id: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[Sequence[AuditLog], int]:
    """Audit rows matching every given filter (``until`` exclusive), newest first, and their total count."""
    filters: list[ColumnElement[bool]] = []
    if username:
        filters.append(AuditLog.username == username)
    if patient_id:
        filters.append(AuditLog.patient_id == patient_id)
    if action:
        filters.append(AuditLog.action == action)
    if since is not None:
        filters.append(AuditLog.at >= since)
    if until is not None:
        filters.append(AuditLog.at < until)
    total = session.scalar(select(func.count()).select_from(AuditLog).where(*filters)) or 0
    rows = session.scalars(
        select(AuditLog)
        .where(*filters)
        .order_by(AuditLog.at.desc(), AuditLog.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, total


# ------------------------------------------------------------------ studies and diagnoses


def find_study(session: Session, patient_pk: int, sha256: str) -> Study | None:
    """The patient's study of the image with this sha256, if it was uploaded before."""
    return session.scalars(
        select(Study).where(Study.patient_pk == patient_pk, Study.sha256 == sha256)
    ).one_or_none()


def get_study(session: Session, study_id: int) -> Study | None:
    """A study by primary key."""
    return session.get(Study, study_id)


def add_study(session: Session, **fields: Any) -> Study:
    """Insert a study and flush (raises ``IntegrityError`` if the patient already has this image)."""
    study = Study(**fields)
    session.add(study)
    session.flush()
    return study


def add_diagnosis(session: Session, **fields: Any) -> Diagnosis:
    """Insert a diagnosis and flush. Diagnoses are never updated afterwards."""
    diagnosis = Diagnosis(**fields)
    session.add(diagnosis)
    session.flush()
    return diagnosis


def _latest_diagnosis_id() -> Any:
    # Correlated: the newest diagnosis of the outer query's study (served by ix_diagnoses_study).
    return (
        select(func.max(Diagnosis.id))
        .where(Diagnosis.study_id == Study.id)
        .correlate(Study)
        .scalar_subquery()
    )


def latest_diagnosis(session: Session, study_id: int) -> Diagnosis | None:
    """The newest diagnosis of a study (a study has one per model run; the newest is shown)."""
    return session.scalars(
        select(Diagnosis).where(Diagnosis.study_id == study_id).order_by(Diagnosis.id.desc()).limit(1)
    ).first()


def studies_with_latest_diagnosis(
    session: Session, patient_pk: int, *, withdrawn: bool = False
) -> Sequence[Row[Study, Diagnosis]]:
    """(study, its newest diagnosis) pairs of one patient, newest first: by the day the film was taken when
    its header says (DICOM StudyDate), else by the upload; withdrawn films only when ``withdrawn``."""
    stmt = select(Study, Diagnosis).join(Diagnosis, Diagnosis.id == _latest_diagnosis_id())
    stmt = stmt.where(Study.patient_pk == patient_pk)
    if not withdrawn:
        stmt = stmt.where(Study.withdrawn_at.is_(None))
    rows = session.execute(stmt.order_by(Study.uploaded_at.desc(), Study.id.desc())).all()
    # one patient's films: sorted here, the same on both databases (a date against a timestamp)
    return sorted(
        rows,
        key=lambda r: (r[0].acquired_on or r[0].uploaded_at.date(), r[0].uploaded_at, r[0].id),
        reverse=True,
    )


def unreviewed_studies(
    session: Session, levels: Sequence[str], limit: int
) -> Sequence[Row[Study, Diagnosis, Patient]]:
    """(study, newest diagnosis, patient) of studies nobody has reviewed, most pressing triage level first
    (in the order of ``levels``), then the highest urgency score (unscored diagnoses last), then longest
    waiting first."""
    rank = case({level: i for i, level in enumerate(levels)}, value=Diagnosis.triage_level, else_=len(levels))
    return session.execute(
        select(Study, Diagnosis, Patient)
        .join(Diagnosis, Diagnosis.id == _latest_diagnosis_id())
        .join(Patient, Patient.id == Study.patient_pk)
        .where(Study.status == "new", Study.withdrawn_at.is_(None))
        .order_by(rank, Diagnosis.urgency.desc().nulls_last(), Study.uploaded_at, Study.id)
        .limit(limit)
    ).all()


def recently_read_studies(
    session: Session, since: datetime, limit: int
) -> Sequence[Row[Study, Diagnosis, Patient]]:
    """(study, newest diagnosis, patient) of studies a doctor has read (status not 'new') uploaded since
    ``since``, newest first: the worklist's "read" rows."""
    return session.execute(
        select(Study, Diagnosis, Patient)
        .join(Diagnosis, Diagnosis.id == _latest_diagnosis_id())
        .join(Patient, Patient.id == Study.patient_pk)
        .where(Study.status != "new", Study.uploaded_at >= since, Study.withdrawn_at.is_(None))
        .order_by(Study.uploaded_at.desc(), Study.id.desc())
        .limit(limit)
    ).all()


def stored_path_in_use(session: Session, relpath: str) -> bool:
    """Whether any saved study or diagnosis refers to the stored file ``relpath``."""
    study_cols = (Study.file_path, Study.preview_path, Study.thumbnail_path)
    diagnosis_cols = (Diagnosis.overlay_path, Diagnosis.heatmap_path)
    in_studies = select(Study.id).where(or_(*(c == relpath for c in study_cols))).limit(1)
    in_diagnoses = select(Diagnosis.id).where(or_(*(c == relpath for c in diagnosis_cols))).limit(1)
    return session.scalar(in_studies) is not None or session.scalar(in_diagnoses) is not None


def stored_paths(session: Session) -> set[str]:
    """Every stored file that a saved study or diagnosis refers to (for the garbage collector)."""
    paths: set[str] = set()
    for cols in (
        (Study.file_path, Study.preview_path, Study.thumbnail_path),
        (Diagnosis.overlay_path, Diagnosis.heatmap_path),
    ):
        for row in session.execute(select(*cols)):
            paths.update(p for p in row if p)
    return paths


# ------------------------------------------------------------------ corrections


def add_correction(session: Session, **fields: Any) -> Correction:
    """Insert a correction and flush. Corrections are never updated: a new save is a new row."""
    correction = Correction(**fields)
    session.add(correction)
    session.flush()
    return correction


def current_signed_correction(session: Session, study_id: int) -> Correction | None:
    """The study's newest reviewed correction if it is signed (issue 12: then only a signed amendment may
    follow), else ``None``."""
    newest = session.scalars(
        select(Correction)
        .where(Correction.study_id == study_id, Correction.reviewed.is_(True))
        .order_by(Correction.id.desc())
        .limit(1)
    ).first()
    return newest if newest is not None and newest.signed_at is not None else None


def corrections_of_study(session: Session, study_id: int) -> Sequence[Row[Correction, str]]:
    """(correction, author's username) pairs of one study, newest first."""
    return session.execute(
        select(Correction, User.username)
        .join(User, User.id == Correction.created_by)
        .where(Correction.study_id == study_id)
        .order_by(Correction.id.desc())
    ).all()


def new_studies_with_latest_diagnosis(
    session: Session, limit: int
) -> Sequence[Row[Study, Diagnosis, Patient]]:
    """(study, newest diagnosis, patient) of at most ``limit`` studies still 'new', oldest upload first."""
    return session.execute(
        select(Study, Diagnosis, Patient)
        .join(Diagnosis, Diagnosis.id == _latest_diagnosis_id())
        .join(Patient, Patient.id == Study.patient_pk)
        .where(Study.status == "new", Study.withdrawn_at.is_(None))
        .order_by(Study.uploaded_at, Study.id)
        .limit(limit)
    ).all()


def reviewed_studies_for_export(session: Session) -> Sequence[Row[Study, Patient, Correction, str]]:
    """(study, patient, newest reviewed correction, its author's username) of every study a doctor has
    reviewed or corrected, in study order."""
    latest_reviewed = (
        select(func.max(Correction.id))
        .where(Correction.study_id == Study.id, Correction.reviewed.is_(True))
        .correlate(Study)
        .scalar_subquery()
    )
    return session.execute(
        select(Study, Patient, Correction, User.username)
        .join(Correction, Correction.id == latest_reviewed)
        .join(Patient, Patient.id == Study.patient_pk)
        .join(User, User.id == Correction.created_by)
        .where(Study.status.in_(("reviewed", "corrected")))
        .order_by(Study.id)
    ).all()
