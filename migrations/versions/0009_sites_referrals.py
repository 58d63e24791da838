"""Sites and referrals between emergency departments.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Placeholder reserved for issue 14 (referral) (filled in by that work). Written out in full (no application imports),
like 0001-0005.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
