"""ORM models of the clinical record.

Every editable table carries a ``version`` column wired to SQLAlchemy's ``version_id_col``: an UPDATE or
DELETE says ``WHERE id = ? AND version = ?``, so two people saving the same row cannot overwrite each other
silently (the second flush raises ``StaleDataError``, which the services turn into ``ConflictError``).

X-ray studies (an uploaded image in a patient's record) and diagnoses (the models' read of a study, naming
the model versions) follow the records. A diagnosis row is written once and never updated: a doctor's
correction is a row of its own (``corrections``) that points at ``diagnoses.id``; corrections are
append-only too, and the newest one of a study is its current reading.
"""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from db.base import Base, JSONDocument, UTCDateTime, code_string, utcnow

ROLES: tuple[str, ...] = ("doctor", "admin", "ambulance")  # ambulance: a crew with a portable X-ray
SEXES: tuple[str, ...] = ("female", "male", "other", "unknown")
ALLERGY_KINDS: tuple[str, ...] = ("drug", "food", "other")
SEVERITIES: tuple[str, ...] = ("mild", "moderate", "severe", "life-threatening")
CONDITION_STATUSES: tuple[str, ...] = ("active", "resolved")
# new: nobody has reviewed the model's read yet (the worklist); reviewed: a doctor agreed with it; corrected: a
# doctor changed a finding or a box (core.review.corrections).
STUDY_STATUSES: tuple[str, ...] = ("new", "reviewed", "corrected")
# What a doctor says about one finding in a correction.
FINDING_LABELS: tuple[str, ...] = ("present", "absent", "uncertain")
#: Who set a reading's label (revision 0007): the doctor, the doctor accepting the model's suggestion
#: unchanged by an explicit action, or nobody (the model's suggestion left unset).
LABEL_SOURCES: tuple[str, ...] = ("doctor", "accepted", "model")
SOURCE_FORMATS: tuple[str, ...] = ("png", "jpeg", "dicom")
# Most pressing first: the worklist sorts by this order (see core.ml.triage).
TRIAGE_LEVELS: tuple[str, ...] = ("urgent", "priority", "routine")

# Column lengths; core.validation checks input against these so the database never truncates or rejects.
LIMITS: dict[str, int] = {
    "username": 32,
    "full_name": 200,
    "password_hash": 255,
    "patient_id": 32,
    "given_name": 100,
    "family_name": 100,
    "phone": 40,
    "email": 254,
    "address": 500,
    "special_notes": 4000,
    "visit_reason": 200,
    "visit_notes": 4000,
    "substance": 200,
    "reaction": 500,
    "condition_name": 200,
    "condition_notes": 2000,
    "audit_action": 40,
    "audit_entity_type": 40,
    "audit_entity_id": 64,
    "audit_detail": 1000,
    "audit_client": 64,
    "stored_path": 300,
    "original_filename": 255,
    "model_version": 64,
    "triage_reason": 1000,
    "correction_note": 2000,
    "amend_reason": 1000,
}


def substance_key(substance: str) -> str:
    """The allergy's substance as compared for "already recorded": case-, accent- and spacing-insensitive
    (the same rule as ``core.validation.normalize_name``, which this module cannot import)."""
    decomposed = unicodedata.normalize("NFKD", substance or "")
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())[: LIMITS["substance"]]


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class User(Base):
    """A person who can log in (doctor, admin or ambulance crew), working for a site or none."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(code_string(LIMITS["username"]), unique=True)
    full_name: Mapped[str] = mapped_column(String(LIMITS["full_name"]))
    role: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="SET NULL"))  # revision 0009
    password_hash: Mapped[str] = mapped_column(String(LIMITS["password_hash"]))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}


SITE_KINDS: tuple[str, ...] = ("ed", "ambulance")  # ed: receives referrals; ambulance: a crew's base
REFERRAL_STATUSES: tuple[str, ...] = ("open", "accepted", "declined")
TARGET_STATUSES: tuple[str, ...] = ("pending", "accepted", "declined", "closed")


class Site(Base):
    """An emergency department or ambulance base of the deployment (revision 0009), synced from
    ``config/sites.toml`` by ``core.referral.sites``; never deleted (referrals name it), only deactivated."""

    __tablename__ = "sites"
    __table_args__ = (CheckConstraint(_in("kind", SITE_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    capabilities: Mapped[list[str]] = mapped_column(JSONDocument)
    fhir_url: Mapped[str | None] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}


class Referral(Base):
    """A film sent by a crew to up to three departments (revision 0009); ``status`` leaves ``open`` once, by
    the first acceptance (a guarded UPDATE in ``core.referral.service``) or when every department declined."""

    __tablename__ = "referrals"
    __table_args__ = (CheckConstraint(_in("status", REFERRAL_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="RESTRICT"), index=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    from_site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    note: Mapped[str] = mapped_column(String(2000), default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    accepted_site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}


class ReferralTarget(Base):
    """One department a referral went to: its rank and the rule's reasons, and its answer (revision 0009)."""

    __tablename__ = "referral_targets"
    __table_args__ = (
        CheckConstraint(_in("status", TARGET_STATUSES), name="status"),
        UniqueConstraint("referral_id", "site_id", name="uq_referral_targets_referral_site"),
        Index("ix_referral_targets_site_status", "site_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referrals.id", ondelete="CASCADE"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    rank: Mapped[int] = mapped_column(Integer)
    distance_km: Mapped[float] = mapped_column(Float)
    reasons: Mapped[str] = mapped_column(String(1000), default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    answered_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    answer_reason: Mapped[str] = mapped_column(String(1000), default="")
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}


class Patient(Base):
    """Demographics and special notes of one patient; ``patient_id`` is the hospital's MRN."""

    __tablename__ = "patients"
    __table_args__ = (
        CheckConstraint(_in("sex", SEXES), name="sex"),
        # Name search is a prefix range on the normalised (casefolded, accent-free) names, listed in
        # (family, given, ID) order: with these two indexes each search branch reads its first rows straight
        # off the index in the order shown and stops at the limit, instead of sorting every match.
        Index("ix_patients_family_given", "family_norm", "given_norm", "patient_id"),
        Index("ix_patients_given_family", "given_norm", "family_norm", "patient_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Unique constraint = the B-tree index that serves exact and prefix (range) lookups.
    patient_id: Mapped[str] = mapped_column(code_string(LIMITS["patient_id"]), unique=True)
    given_name: Mapped[str] = mapped_column(String(LIMITS["given_name"]))
    family_name: Mapped[str] = mapped_column(String(LIMITS["family_name"]))
    given_norm: Mapped[str] = mapped_column(code_string(LIMITS["given_name"]))
    family_norm: Mapped[str] = mapped_column(code_string(LIMITS["family_name"]))
    sex: Mapped[str] = mapped_column(String(16))
    date_of_birth: Mapped[date] = mapped_column(Date)
    phone: Mapped[str] = mapped_column(String(LIMITS["phone"]), default="")
    email: Mapped[str] = mapped_column(String(LIMITS["email"]), default="")
    address: Mapped[str] = mapped_column(String(LIMITS["address"]), default="")
    special_notes: Mapped[str] = mapped_column(String(LIMITS["special_notes"]), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer)

    visits: Mapped[list[Visit]] = relationship(back_populates="patient", passive_deletes=True)
    allergies: Mapped[list[Allergy]] = relationship(back_populates="patient", passive_deletes=True)
    conditions: Mapped[list[ChronicCondition]] = relationship(back_populates="patient", passive_deletes=True)

    __mapper_args__ = {"version_id_col": version}


class Visit(Base):
    """One encounter (an ED visit): the patient's history is the list of these."""

    __tablename__ = "visits"
    __table_args__ = (Index("ix_visits_patient_date", "patient_pk", "visit_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    visit_date: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(String(LIMITS["visit_reason"]))
    notes: Mapped[str] = mapped_column(String(LIMITS["visit_notes"]), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer)

    patient: Mapped[Patient] = relationship(back_populates="visits")

    __mapper_args__ = {"version_id_col": version}


class Allergy(Base):
    """A drug, food or other allergy of a patient; one row per substance (``substance_norm``, revision 0005),
    so two doctors recording the same allergy at once cannot make two rows."""

    __tablename__ = "allergies"
    __table_args__ = (
        CheckConstraint(_in("kind", ALLERGY_KINDS), name="kind"),
        CheckConstraint(_in("severity", SEVERITIES), name="severity"),
        UniqueConstraint("patient_pk", "substance_norm", name="uq_allergies_patient_substance"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    substance: Mapped[str] = mapped_column(String(LIMITS["substance"]))
    # substance_key(substance), kept by the validator below whenever substance is set
    substance_norm: Mapped[str] = mapped_column(String(LIMITS["substance"]))
    kind: Mapped[str] = mapped_column(String(16))
    reaction: Mapped[str] = mapped_column(String(LIMITS["reaction"]), default="")
    severity: Mapped[str] = mapped_column(String(24))
    recorded_on: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer)

    patient: Mapped[Patient] = relationship(back_populates="allergies")

    __mapper_args__ = {"version_id_col": version}

    @validates("substance")
    def _keep_substance_norm(self, _key: str, value: str) -> str:
        self.substance_norm = substance_key(value)
        return value


class ChronicCondition(Base):
    """A long-standing condition (e.g. COPD, diabetes) of a patient."""

    __tablename__ = "chronic_conditions"
    __table_args__ = (CheckConstraint(_in("status", CONDITION_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(LIMITS["condition_name"]))
    onset_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    notes: Mapped[str] = mapped_column(String(LIMITS["condition_notes"]), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer)

    patient: Mapped[Patient] = relationship(back_populates="conditions")

    __mapper_args__ = {"version_id_col": version}


class AuditLog(Base):
    """Append-only trail of logins, record views and changes.

    Holds copies (username, patient MRN) rather than foreign keys so that the trail outlives the rows it
    describes and can never block a deletion. On PostgreSQL a trigger (revision 0005) refuses every UPDATE,
    DELETE and TRUNCATE of it, whatever role the application connects as.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_patient_at", "patient_id", "at"),
        Index("ix_audit_log_username_at", "username", "at"),
        Index("ix_audit_log_action_at", "action", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(LIMITS["username"]))
    action: Mapped[str] = mapped_column(String(LIMITS["audit_action"]))
    entity_type: Mapped[str] = mapped_column(String(LIMITS["audit_entity_type"]))
    entity_id: Mapped[str | None] = mapped_column(String(LIMITS["audit_entity_id"]))
    patient_id: Mapped[str | None] = mapped_column(String(LIMITS["patient_id"]))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    detail: Mapped[str] = mapped_column(String(LIMITS["audit_detail"]), default="")
    # where the action came from (revision 0005): "web:<client address>" or "cli:<os user>@<host>"
    client: Mapped[str | None] = mapped_column(String(LIMITS["audit_client"]))


class Study(Base):
    """One X-ray image uploaded into a patient's record.

    The original bytes are stored once under ``Settings.data_dir`` at ``file_path`` (relative, content
    addressed by ``sha256``); the same image uploaded twice for one patient is the same study (unique
    ``(patient_pk, sha256)``). ``preview_path`` and ``thumbnail_path`` are grey renderings for display.
    ``width``/``height`` are the image as analysed (after any EXIF rotation): the frame of the diagnosis' boxes.
    ``status`` is the only thing that changes later (review, correction), guarded by ``version``.
    A patient with studies cannot be deleted by a cascade: images and their files are clinical records.
    """

    __tablename__ = "studies"
    __table_args__ = (
        CheckConstraint(_in("status", STUDY_STATUSES), name="status"),
        CheckConstraint(_in("source_format", SOURCE_FORMATS), name="source_format"),
        UniqueConstraint("patient_pk", "sha256", name="uq_studies_patient_sha256"),
        Index("ix_studies_patient_uploaded", "patient_pk", "uploaded_at"),
        Index("ix_studies_status_uploaded", "status", "uploaded_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"))
    visit_pk: Mapped[int | None] = mapped_column(ForeignKey("visits.id", ondelete="SET NULL"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    file_path: Mapped[str] = mapped_column(String(LIMITS["stored_path"]))
    preview_path: Mapped[str] = mapped_column(String(LIMITS["stored_path"]))
    thumbnail_path: Mapped[str] = mapped_column(String(LIMITS["stored_path"]))
    original_filename: Mapped[str] = mapped_column(String(LIMITS["original_filename"]), default="")
    source_format: Mapped[str] = mapped_column(String(8))
    byte_size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    dicom: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="new")
    version: Mapped[int] = mapped_column(Integer)
    # when the film was taken (DICOM StudyDate) and its projection (ViewPosition); None for PNG/JPEG (0006)
    acquired_on: Mapped[date | None] = mapped_column(Date)
    projection: Mapped[str | None] = mapped_column(String(16))
    # a film withdrawn from the record (wrong patient, unusable): kept, hidden by default, audited (0006)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    withdrawn_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    withdrawn_reason: Mapped[str | None] = mapped_column(String(500))

    diagnoses: Mapped[list[Diagnosis]] = relationship(back_populates="study", passive_deletes=True)

    __mapper_args__ = {"version_id_col": version}


class Diagnosis(Base):
    """The models' read of one study, exactly as they made it; never updated after the insert.

    Everything needed to explain the result later is kept with it: the model versions, every probability
    and the threshold it was compared with, the boxes, the triage level with its rule, the scope score,
    and timings. ``overlay_path`` is the film with the boxes drawn (``None`` when no detector ran);
    ``heatmap_path`` holds the class activation maps of every finding, rendered on demand.
    """

    __tablename__ = "diagnoses"
    __table_args__ = (
        CheckConstraint(_in("triage_level", TRIAGE_LEVELS), name="triage_level"),
        Index("ix_diagnoses_study", "study_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    classifier_version: Mapped[str] = mapped_column(String(LIMITS["model_version"]))
    detector_version: Mapped[str | None] = mapped_column(String(LIMITS["model_version"]))
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # [{"name", "threshold", "urgent"}, ...] in model card order: the card's findings as this read used them
    thresholds: Mapped[list[Any]] = mapped_column(JSONDocument)
    flagged: Mapped[list[Any]] = mapped_column(JSONDocument)
    top3: Mapped[list[Any]] = mapped_column(JSONDocument)
    detections: Mapped[list[Any]] = mapped_column(JSONDocument)
    triage_level: Mapped[str] = mapped_column(String(16))
    uncertain: Mapped[bool] = mapped_column(Boolean)
    uncertain_reason: Mapped[str] = mapped_column(String(LIMITS["triage_reason"]), default="")
    triage_rule: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    scope_score: Mapped[float] = mapped_column(Float)
    scope_limit: Mapped[float] = mapped_column(Float)
    # triage scores in [0, 1] (v3 on; NULL on diagnoses saved before revision 0004): the worklist's second key
    abnormality: Mapped[float | None] = mapped_column(Float)
    urgency: Mapped[float | None] = mapped_column(Float)
    # what the film check did before the read (rot90/rot180/rot270/inverted); NULL: read as stored
    orientation: Mapped[str | None] = mapped_column(String(16))
    timings: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    overlay_path: Mapped[str | None] = mapped_column(String(LIMITS["stored_path"]))
    heatmap_path: Mapped[str | None] = mapped_column(String(LIMITS["stored_path"]))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))

    study: Mapped[Study] = relationship(back_populates="diagnoses")


class Correction(Base):
    """A doctor's reading of one study, saved beside (never over) the model's read it started from.

    Append-only: every save is a new row and the newest row of a study is its current reading; the model's
    ``diagnoses`` row is never touched. ``labels`` maps every finding of the diagnosis to one of
    ``FINDING_LABELS``; ``boxes`` is ``[{"label", "x1", "y1", "x2", "y2"}, ...]`` in the study's frame
    (``studies.width`` x ``height``, the original image's pixels), labels from the detector's class list.
    ``reviewed`` says the doctor marked the study reviewed with this save (a draft does not);
    ``status`` is the study's status after this save.
    Revision 0007: ``signed_at``/``signed_by`` mark a signed reading (the reader of record); a new signed
    reading that replaces one names it in ``amends_id`` with an ``amend_reason``; ``label_sources`` maps each
    finding to ``LABEL_SOURCES`` (who set the label; NULL on rows saved before 0007).
    """

    __tablename__ = "corrections"
    __table_args__ = (
        CheckConstraint(_in("status", STUDY_STATUSES), name="status"),
        CheckConstraint("(signed_at IS NULL) = (signed_by IS NULL)", name="signed_pair"),
        CheckConstraint(
            "amends_id IS NULL OR (amend_reason IS NOT NULL AND amend_reason <> '')", name="amend_reason"
        ),
        Index("ix_corrections_study", "study_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    diagnosis_id: Mapped[int] = mapped_column(ForeignKey("diagnoses.id", ondelete="CASCADE"), index=True)
    labels: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    boxes: Mapped[list[Any]] = mapped_column(JSONDocument)
    note: Mapped[str] = mapped_column(String(LIMITS["correction_note"]), default="")
    reviewed: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    amends_id: Mapped[int | None] = mapped_column(ForeignKey("corrections.id", ondelete="SET NULL"))
    amend_reason: Mapped[str | None] = mapped_column(String(LIMITS["amend_reason"]))
    label_sources: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)


class WebSession(Base):
    """One signed-in browser (revision 0008): the SHA-256 of the random token its HttpOnly cookie holds.

    ``last_seen_at`` drives the idle timeout, ``expires_at`` caps the session's whole life, ``revoked_at``
    is set on logout, idle expiry or an administrator's "sign out everywhere" (core.web_sessions).
    """

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_user_revoked", "user_id", "revoked_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    client: Mapped[str | None] = mapped_column(String(LIMITS["audit_client"]))


# What became of a film found on the hospital's PACS (revision 0010, core.pacs.sync).
PACS_IMPORT_STATUSES: tuple[str, ...] = ("imported", "unmatched", "refused", "dismissed")


class PacsImport(Base):
    """One DICOM instance found on the PACS (revision 0010): imported into a record, unmatched (no patient
    with its PatientID: the "Unmatched from PACS" list), refused (with the reason), or dismissed by a doctor.

    ``sop_instance_uid`` is unique, so a film is never imported twice; ``sent_at`` is set once the read (SR
    and secondary capture) went back to the PACS, so a sync retries the send of films that have none.
    """

    __tablename__ = "pacs_imports"
    __table_args__ = (
        CheckConstraint(_in("status", PACS_IMPORT_STATUSES), name="status"),
        Index("ix_pacs_imports_status_found", "status", "found_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    dicom_patient_id: Mapped[str] = mapped_column(String(64), default="")
    dicom_patient_name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(1000), default="")
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), index=True)
    found_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}


class PacsExport(Base):
    """One instance this installation stored to the PACS (revision 0010): a study's SR or secondary capture,
    after analysis or after sign-off; a sync never imports these back."""

    __tablename__ = "pacs_exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # "sr" | "sc"
    reason: Mapped[str] = mapped_column(String(16))  # "analysis" | "sign-off" | "manual"
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
