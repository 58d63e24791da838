"""X-ray studies and diagnoses.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

``studies``: an uploaded image in a patient's record (original file content addressed under the data
directory, unique per patient by sha256), with its review status. ``diagnoses``: the models' read of a
study, written once and never updated (corrections, next revision, are rows of their own pointing here).
Written out in full (no application imports), like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("visit_pk", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("file_path", sa.String(300), nullable=False),
        sa.Column("preview_path", sa.String(300), nullable=False),
        sa.Column("thumbnail_path", sa.String(300), nullable=False),
        sa.Column("original_filename", sa.String(255), nullable=False),
        sa.Column("source_format", sa.String(8), nullable=False),
        sa.Column("byte_size", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("dicom", _json(), nullable=True),
        sa.Column("uploaded_by", sa.Integer(), nullable=False),
        sa.Column("uploaded_at", _utc(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("status IN ('new', 'reviewed', 'corrected')", name=op.f("ck_studies_status")),
        sa.CheckConstraint(
            "source_format IN ('png', 'jpeg', 'dicom')", name=op.f("ck_studies_source_format")
        ),
        sa.ForeignKeyConstraint(
            ["patient_pk"], ["patients.id"], name=op.f("fk_studies_patient_pk_patients"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["visit_pk"], ["visits.id"], name=op.f("fk_studies_visit_pk_visits"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["uploaded_by"], ["users.id"], name=op.f("fk_studies_uploaded_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("patient_pk", "sha256", name="uq_studies_patient_sha256"),
    )
    op.create_index("ix_studies_patient_uploaded", "studies", ["patient_pk", "uploaded_at"])
    op.create_index("ix_studies_status_uploaded", "studies", ["status", "uploaded_at"])
    op.create_index("ix_studies_visit_pk", "studies", ["visit_pk"])

    op.create_table(
        "diagnoses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("classifier_version", sa.String(64), nullable=False),
        sa.Column("detector_version", sa.String(64), nullable=True),
        sa.Column("probabilities", _json(), nullable=False),
        sa.Column("thresholds", _json(), nullable=False),
        sa.Column("flagged", _json(), nullable=False),
        sa.Column("top3", _json(), nullable=False),
        sa.Column("detections", _json(), nullable=False),
        sa.Column("triage_level", sa.String(16), nullable=False),
        sa.Column("uncertain", sa.Boolean(), nullable=False),
        sa.Column("uncertain_reason", sa.String(1000), nullable=False),
        sa.Column("triage_rule", _json(), nullable=False),
        sa.Column("scope_score", sa.Float(), nullable=False),
        sa.Column("scope_limit", sa.Float(), nullable=False),
        sa.Column("timings", _json(), nullable=False),
        sa.Column("overlay_path", sa.String(300), nullable=True),
        sa.Column("heatmap_path", sa.String(300), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "triage_level IN ('urgent', 'priority', 'routine')", name=op.f("ck_diagnoses_triage_level")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_diagnoses_study_id_studies"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_diagnoses_created_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_diagnoses")),
    )
    op.create_index("ix_diagnoses_study", "diagnoses", ["study_id", "id"])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes and constraints on both backends.
    op.drop_table("diagnoses")
    op.drop_table("studies")
