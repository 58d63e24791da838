"""Hardening: one allergy per substance, where an audited action came from, an append-only audit log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

* ``allergies.substance_norm`` (the substance casefolded, accents and extra spaces removed: the rule the
  service already used for "already recorded") with the unique constraint
  ``uq_allergies_patient_substance (patient_pk, substance_norm)``: two doctors adding the same allergy at
  the same moment can no longer both succeed. Duplicates already saved are merged first: the oldest row of a
  patient's substance is kept, raised to the most severe severity of the group, with the other rows'
  reactions appended; each removed row is written to the audit log (action ``delete``, user ``migration``,
  its values in ``before``), so nothing clinical is lost.
* ``audit_log.client``: where the action came from (``web:<address>``, ``cli:<os user>@<host>``), e.g. the
  source of failed logins.
* PostgreSQL: triggers on ``audit_log`` that raise on every UPDATE, DELETE and TRUNCATE, for any role that
  does not deliberately switch triggers off (``session_replication_role = replica``, superusers only).
  SQLite has no roles: a file-based database is only as protected as its file.

Downgrade removes the column, the constraint and the triggers; merged duplicate allergies stay merged (their
removed rows are in the audit log). Written out in full (no application imports), like 0001-0004.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEVERITIES = ("mild", "moderate", "severe", "life-threatening")  # least to most severe
REACTION_LIMIT = 500
SUBSTANCE_LIMIT = 200

_allergies = sa.table(
    "allergies",
    sa.column("id", sa.Integer()),
    sa.column("patient_pk", sa.Integer()),
    sa.column("substance", sa.String()),
    sa.column("substance_norm", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("reaction", sa.String()),
    sa.column("severity", sa.String()),
    sa.column("recorded_on", sa.Date()),
    sa.column("version", sa.Integer()),
)
_patients = sa.table("patients", sa.column("id", sa.Integer()), sa.column("patient_id", sa.String()))


def _audit_table() -> sa.TableClause:
    json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    return sa.table(
        "audit_log",
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("user_id", sa.Integer()),
        sa.column("username", sa.String()),
        sa.column("action", sa.String()),
        sa.column("entity_type", sa.String()),
        sa.column("entity_id", sa.String()),
        sa.column("patient_id", sa.String()),
        sa.column("before", json),
        sa.column("after", json),
        sa.column("detail", sa.String()),
    )


APPEND_ONLY_FUNCTION = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def _substance_key(substance: str) -> str:
    decomposed = unicodedata.normalize("NFKD", substance or "")
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())[:SUBSTANCE_LIMIT]


def _merge_duplicates(bind: sa.Connection) -> None:
    """Fill substance_norm and merge each patient's duplicate substances into its oldest row."""
    rows = bind.execute(
        sa.select(_allergies, _patients.c.patient_id)
        .join(_patients, _patients.c.id == _allergies.c.patient_pk)
        .order_by(_allergies.c.id)
    ).all()
    groups: dict[tuple[int, str], list[Any]] = {}
    for row in rows:
        groups.setdefault((row.patient_pk, _substance_key(row.substance)), []).append(row)
    at = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        at = at.replace(tzinfo=None)  # stored naive UTC, as the application's UTCDateTime does
    audit = _audit_table()
    for (_pk, key), group in groups.items():
        kept, *extra = group
        values: dict[str, Any] = {"substance_norm": key}
        if extra:
            severity = max((r.severity for r in group), key=SEVERITIES.index)
            reactions = [r.reaction for r in group if r.reaction]
            reaction = "; ".join(dict.fromkeys(reactions))[:REACTION_LIMIT]
            values.update(severity=severity, reaction=reaction, version=kept.version + 1)
            for row in extra:
                bind.execute(
                    audit.insert().values(
                        at=at,
                        user_id=None,
                        username="migration",
                        action="delete",
                        entity_type="allergy",
                        entity_id=str(row.id),
                        patient_id=row.patient_id,
                        before={
                            "substance": row.substance,
                            "kind": row.kind,
                            "reaction": row.reaction,
                            "severity": row.severity,
                            "recorded_on": row.recorded_on.isoformat(),
                        },
                        after=None,
                        detail=f"duplicate of allergy {kept.id}, merged into it by revision 0005",
                    )
                )
                bind.execute(sa.delete(_allergies).where(_allergies.c.id == row.id))
        bind.execute(sa.update(_allergies).where(_allergies.c.id == kept.id).values(**values))


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("client", sa.String(64), nullable=True))
    with op.batch_alter_table("allergies") as batch:
        batch.add_column(sa.Column("substance_norm", sa.String(SUBSTANCE_LIMIT), nullable=True))
    _merge_duplicates(bind)
    with op.batch_alter_table("allergies") as batch:
        batch.alter_column("substance_norm", existing_type=sa.String(SUBSTANCE_LIMIT), nullable=False)
        batch.create_unique_constraint("uq_allergies_patient_substance", ["patient_pk", "substance_norm"])
    if bind.dialect.name == "postgresql":
        op.execute(APPEND_ONLY_FUNCTION)
        op.execute(
            "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    with op.batch_alter_table("allergies") as batch:
        batch.drop_constraint("uq_allergies_patient_substance", type_="unique")
        batch.drop_column("substance_norm")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("client")
