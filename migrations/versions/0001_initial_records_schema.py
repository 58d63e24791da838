"""Initial records schema: users, patients, visits, allergies, chronic conditions, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written out in full (no application imports) so that this revision keeps meaning the same thing when the
models evolve. Patient IDs, usernames and normalised names use COLLATE "C" on PostgreSQL so prefix range
queries are correct and indexed whatever the server's locale (see db.base.code_string).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _code(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _timestamps_and_version() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", _code(32), nullable=False),
        sa.Column("full_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", _utc(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("last_login_at", _utc(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("role IN ('doctor', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )

    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", _code(32), nullable=False),
        sa.Column("given_name", sa.String(100), nullable=False),
        sa.Column("family_name", sa.String(100), nullable=False),
        sa.Column("given_norm", _code(100), nullable=False),
        sa.Column("family_norm", _code(100), nullable=False),
        sa.Column("sex", sa.String(16), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("phone", sa.String(40), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("address", sa.String(500), nullable=False),
        sa.Column("special_notes", sa.String(4000), nullable=False),
        *_timestamps_and_version(),
        sa.CheckConstraint("sex IN ('female', 'male', 'other', 'unknown')", name=op.f("ck_patients_sex")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("patient_id", name=op.f("uq_patients_patient_id")),
    )
    op.create_index("ix_patients_family_given", "patients", ["family_norm", "given_norm", "patient_id"])
    op.create_index("ix_patients_given_family", "patients", ["given_norm", "family_norm", "patient_id"])

    op.create_table(
        "visits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("visit_date", sa.Date(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("notes", sa.String(4000), nullable=False),
        *_timestamps_and_version(),
        sa.ForeignKeyConstraint(
            ["patient_pk"], ["patients.id"], name=op.f("fk_visits_patient_pk_patients"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visits")),
    )
    op.create_index("ix_visits_patient_date", "visits", ["patient_pk", "visit_date"])

    op.create_table(
        "allergies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("substance", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reaction", sa.String(500), nullable=False),
        sa.Column("severity", sa.String(24), nullable=False),
        sa.Column("recorded_on", sa.Date(), nullable=False),
        *_timestamps_and_version(),
        sa.CheckConstraint("kind IN ('drug', 'food', 'other')", name=op.f("ck_allergies_kind")),
        sa.CheckConstraint(
            "severity IN ('mild', 'moderate', 'severe', 'life-threatening')", name=op.f("ck_allergies_severity")
        ),
        sa.ForeignKeyConstraint(
            ["patient_pk"], ["patients.id"], name=op.f("fk_allergies_patient_pk_patients"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allergies")),
    )
    op.create_index("ix_allergies_patient_pk", "allergies", ["patient_pk"])

    op.create_table(
        "chronic_conditions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("onset_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("notes", sa.String(2000), nullable=False),
        *_timestamps_and_version(),
        sa.CheckConstraint("status IN ('active', 'resolved')", name=op.f("ck_chronic_conditions_status")),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name=op.f("fk_chronic_conditions_patient_pk_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chronic_conditions")),
    )
    op.create_index("ix_chronic_conditions_patient_pk", "chronic_conditions", ["patient_pk"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("entity_type", sa.String(40), nullable=False),
        sa.Column("entity_id", sa.String(64), nullable=True),
        sa.Column("patient_id", sa.String(32), nullable=True),
        sa.Column("before", _json(), nullable=True),
        sa.Column("after", _json(), nullable=True),
        sa.Column("detail", sa.String(1000), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_patient_at", "audit_log", ["patient_id", "at"])
    op.create_index("ix_audit_log_username_at", "audit_log", ["username", "at"])
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes on both backends.
    for table in ("audit_log", "chronic_conditions", "allergies", "visits", "patients", "users"):
        op.drop_table(table)
