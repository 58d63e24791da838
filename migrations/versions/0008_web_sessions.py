"""Server-side web sessions: a browser's sign-in survives a refresh and a second tab.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

``web_sessions``: one row per signed-in browser. The browser holds only a random token in an HttpOnly cookie;
the table keeps its SHA-256 (``token_hash``), so a copy of the database opens no session. ``last_seen_at``
drives the idle timeout, ``expires_at`` caps a session's whole life, ``revoked_at`` is set on logout, idle
expiry or an administrator's "sign out everywhere"; ``client`` is where it was opened from. Written out in
full (no application imports), like 0001-0005.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("last_seen_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("revoked_at", _utc(), nullable=True),
        sa.Column("client", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_web_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_sessions_token_hash")),
    )
    op.create_index("ix_web_sessions_user_revoked", "web_sessions", ["user_id", "revoked_at"])


def downgrade() -> None:
    op.drop_index("ix_web_sessions_user_revoked", table_name="web_sessions")
    op.drop_table("web_sessions")
