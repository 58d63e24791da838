"""Doctors' corrections of the models' reads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

``corrections``: a doctor's reading of a study (a label per finding, boxes in the original image's pixels,
a note), pointing at the diagnosis it corrects. Append-only: each save is a new row and the newest row of a
study is its current reading; the diagnosis is never updated. ``status`` is the study's status after the
save (``studies.status`` is set in the same transaction, guarded by ``studies.version``).
Written out in full (no application imports), like 0001 and 0002.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("diagnosis_id", sa.Integer(), nullable=False),
        sa.Column("labels", _json(), nullable=False),
        sa.Column("boxes", _json(), nullable=False),
        sa.Column("note", sa.String(2000), nullable=False),
        sa.Column("reviewed", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.CheckConstraint("status IN ('new', 'reviewed', 'corrected')", name=op.f("ck_corrections_status")),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_corrections_study_id_studies"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["diagnosis_id"],
            ["diagnoses.id"],
            name=op.f("fk_corrections_diagnosis_id_diagnoses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_corrections_created_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corrections")),
    )
    op.create_index("ix_corrections_study", "corrections", ["study_id", "id"])
    op.create_index("ix_corrections_diagnosis_id", "corrections", ["diagnosis_id"])
    op.create_index("ix_corrections_created_by", "corrections", ["created_by"])


def downgrade() -> None:
    # Dropping the table drops its indexes and constraints on both backends; studies keep their status
    # column (it predates this revision), so a 'corrected' study stays 'corrected' after a downgrade.
    op.drop_table("corrections")
