"""The doctor's signed reading as the record.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Placeholder reserved for issue 12 (readings, sign-off, amendments) (filled in by that work). Written out in full (no application imports),
like 0001-0005.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
