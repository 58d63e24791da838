"""Server-side web sessions.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Placeholder reserved for issue 12 (sessions that survive a refresh) (filled in by that work). Written out in full (no application imports),
like 0001-0005.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
