"""PACS import state and the unmatched list.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

* ``pacs_imports``: one row per DICOM instance found on the hospital's PACS (``sop_instance_uid`` unique, so a
  film is never imported twice), with what became of it: ``imported`` (``study_id`` set), ``unmatched`` (no
  patient has its PatientID: the "Unmatched from PACS" list), ``refused`` (``reason``) or ``dismissed``;
  ``resolved_at``/``resolved_by`` for a doctor's attach or dismiss, ``sent_at`` once the read went back.
* ``pacs_exports``: the SR and secondary-capture instances this installation stored to the PACS (a sync never
  imports them back).

Downgrade drops both tables. Written out in full (no application imports), like 0001-0005.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("imported", "unmatched", "refused", "dismissed")


def upgrade() -> None:
    op.create_table(
        "pacs_imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("dicom_patient_id", sa.String(64), nullable=False),
        sa.Column("dicom_patient_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.Integer(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN (" + ", ".join(repr(s) for s in STATUSES) + ")", name="ck_pacs_imports_status"
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name="fk_pacs_imports_study_id_studies", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["resolved_by"], ["users.id"], name="fk_pacs_imports_resolved_by_users"),
        sa.PrimaryKeyConstraint("id", name="pk_pacs_imports"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_pacs_imports_sop_instance_uid"),
    )
    op.create_index("ix_pacs_imports_status_found", "pacs_imports", ["status", "found_at"])
    op.create_index("ix_pacs_imports_study_id", "pacs_imports", ["study_id"])
    op.create_table(
        "pacs_exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name="fk_pacs_exports_study_id_studies", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["sent_by"], ["users.id"], name="fk_pacs_exports_sent_by_users"),
        sa.PrimaryKeyConstraint("id", name="pk_pacs_exports"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_pacs_exports_sop_instance_uid"),
    )
    op.create_index("ix_pacs_exports_study_id", "pacs_exports", ["study_id"])


def downgrade() -> None:
    op.drop_index("ix_pacs_exports_study_id", table_name="pacs_exports")
    op.drop_table("pacs_exports")
    op.drop_index("ix_pacs_imports_study_id", table_name="pacs_imports")
    op.drop_index("ix_pacs_imports_status_found", table_name="pacs_imports")
    op.drop_table("pacs_imports")
