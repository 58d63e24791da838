"""PACS import state and the unmatched list.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Placeholder reserved for issue 14 (PACS) (filled in by that work). Written out in full (no application imports),
like 0001-0005.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
