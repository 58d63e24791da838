"""The doctor's signed reading as the record: sign-off, amendments and label provenance on ``corrections``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

A reading stays a ``corrections`` row (append-only, beside the model's read, which is never changed). Added:

* ``signed_at`` / ``signed_by``: set when the doctor pressed "Save and sign" (the reader of record);
* ``amends_id`` / ``amend_reason``: a signed reading can be replaced only by a new signed reading that
  names the one it amends and says why (both rows kept);
* ``label_sources``: per finding, who set the label: ``doctor`` (set by the doctor), ``accepted`` (the
  model's suggestion accepted unchanged by an explicit action) or ``model`` (left unset: the model's
  suggestion, not a doctor's label). NULL on rows saved before this revision (provenance unknown).

Downgrade drops the columns (the readings themselves stay). Written out in full (no application imports),
like 0001-0005.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("corrections") as batch:
        batch.add_column(sa.Column("signed_at", _utc(), nullable=True))
        batch.add_column(sa.Column("signed_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("amends_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("amend_reason", sa.String(1000), nullable=True))
        batch.add_column(sa.Column("label_sources", _json(), nullable=True))
        batch.create_foreign_key(op.f("fk_corrections_signed_by_users"), "users", ["signed_by"], ["id"])
        batch.create_foreign_key(
            op.f("fk_corrections_amends_id_corrections"), "corrections", ["amends_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_check_constraint("signed_pair", "(signed_at IS NULL) = (signed_by IS NULL)")
        batch.create_check_constraint(
            "amend_reason", "amends_id IS NULL OR (amend_reason IS NOT NULL AND amend_reason <> '')"
        )


def downgrade() -> None:
    with op.batch_alter_table("corrections") as batch:
        batch.drop_constraint(op.f("ck_corrections_amend_reason"), type_="check")
        batch.drop_constraint(op.f("ck_corrections_signed_pair"), type_="check")
        batch.drop_constraint(op.f("fk_corrections_amends_id_corrections"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_corrections_signed_by_users"), type_="foreignkey")
        batch.drop_column("label_sources")
        batch.drop_column("amend_reason")
        batch.drop_column("amends_id")
        batch.drop_column("signed_by")
        batch.drop_column("signed_at")
