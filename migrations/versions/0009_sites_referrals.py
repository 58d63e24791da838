"""Sites and referrals between emergency departments.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

* ``sites``: the emergency departments (and ambulance bases) this deployment knows, synced from
  ``config/sites.toml`` by ``core.referral.sites.sync_sites``: a unique ``code``, a name, a location
  (``lat``/``lon``), its ``capabilities`` (a JSON list such as ``["thoracic_surgery", "icu"]``), ``kind``
  (``ed`` receives referrals, ``ambulance`` sends them), an optional ``fhir_url`` of an outside installation,
  and ``active`` (a site removed from the file is deactivated, never deleted: referrals name it).
* ``users.site_id`` (nullable): the site a user works for; ``users.role`` admits ``ambulance`` (a crew with a
  portable X-ray).
* ``referrals``: a film (``study_id``) sent by a crew to up to three departments, with the crew's note and
  location; ``status`` ``open`` until the first acceptance (``accepted``, ``accepted_site_id``) or until
  every department declined (``declined``). The acceptance is one guarded UPDATE (``WHERE status = 'open'``),
  so of two departments accepting at once exactly one wins.
* ``referral_targets``: one row per receiving department: its rank in the proposal, the rule's reasons,
  the distance, and its answer (``pending`` / ``accepted`` / ``declined`` / ``closed`` once another accepted),
  who answered, when and why.

Downgrade drops the tables and the column and restores the role constraint (ambulance users are turned into
doctors first, so the old constraint holds). Written out in full (no application imports), like 0001-0005.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("capabilities", _json(), nullable=False),
        sa.Column("fhir_url", sa.String(500), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('ed', 'ambulance')", name=op.f("ck_sites_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("code", name=op.f("uq_sites_code")),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("site_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_users_site_id_sites"), "sites", ["site_id"], ["id"], ondelete="SET NULL")
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.create_check_constraint("role", "role IN ('doctor', 'admin', 'ambulance')")

    op.create_table(
        "referrals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("from_site_id", sa.Integer(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("note", sa.String(2000), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("accepted_site_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("closed_at", _utc(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("status IN ('open', 'accepted', 'declined')", name=op.f("ck_referrals_status")),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_referrals_study_id_studies"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_referrals_created_by_users")),
        sa.ForeignKeyConstraint(["from_site_id"], ["sites.id"], name=op.f("fk_referrals_from_site_id_sites")),
        sa.ForeignKeyConstraint(
            ["accepted_site_id"], ["sites.id"], name=op.f("fk_referrals_accepted_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
    )
    op.create_index("ix_referrals_study_id", "referrals", ["study_id"])
    op.create_index("ix_referrals_created_by", "referrals", ["created_by"])

    op.create_table(
        "referral_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("referral_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("distance_km", sa.Float(), nullable=False),
        sa.Column("reasons", sa.String(1000), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answered_by", sa.Integer(), nullable=True),
        sa.Column("answered_at", _utc(), nullable=True),
        sa.Column("answer_reason", sa.String(1000), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'declined', 'closed')", name=op.f("ck_referral_targets_status")
        ),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_referral_targets_referral_id_referrals"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_referral_targets_site_id_sites")),
        sa.ForeignKeyConstraint(
            ["answered_by"], ["users.id"], name=op.f("fk_referral_targets_answered_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_targets")),
        sa.UniqueConstraint("referral_id", "site_id", name="uq_referral_targets_referral_site"),
    )
    op.create_index("ix_referral_targets_site_status", "referral_targets", ["site_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_referral_targets_site_status", table_name="referral_targets")
    op.drop_table("referral_targets")
    op.drop_index("ix_referrals_created_by", table_name="referrals")
    op.drop_index("ix_referrals_study_id", table_name="referrals")
    op.drop_table("referrals")
    op.execute("UPDATE users SET role = 'doctor' WHERE role = 'ambulance'")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.create_check_constraint("role", "role IN ('doctor', 'admin')")
        batch.drop_constraint(op.f("fk_users_site_id_sites"), type_="foreignkey")
        batch.drop_column("site_id")
    op.drop_table("sites")
