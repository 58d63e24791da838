"""Triage scores on every diagnosis: abnormality and urgency (rule triage-v3); the film's orientation.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

``diagnoses.abnormality`` (1 - prod(1 - p) over every finding) and ``diagnoses.urgency`` (the same over the
urgent findings), both in [0, 1], so the worklist can order by level, then urgency, then waiting time in
SQL. Diagnoses saved before this revision keep NULL (they sort after scored ones of the same level); their
stored probabilities are never rewritten, as a diagnosis is never updated.

``diagnoses.orientation``: what the film check did before the read (``rot90``, ``rot180``, ``rot270``,
``inverted``; NULL when the film was read as stored), so the page can say so and an export can turn the
stored original the same way as the boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("diagnoses") as batch:
        batch.add_column(sa.Column("abnormality", sa.Float(), nullable=True))
        batch.add_column(sa.Column("urgency", sa.Float(), nullable=True))
        batch.add_column(sa.Column("orientation", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("diagnoses") as batch:
        batch.drop_column("orientation")
        batch.drop_column("urgency")
        batch.drop_column("abnormality")
