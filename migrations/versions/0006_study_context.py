"""Study context: acquisition date, projection, a film withdrawn.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

* ``studies.acquired_on`` (the DICOM header's StudyDate: when the film was taken, apart from the upload time)
  and ``studies.projection`` (ViewPosition, e.g. PA, AP), back-filled from the stored ``studies.dicom``
  document; NULL for PNG/JPEG films and headers without them. The history and comparisons order by
  ``coalesce(acquired_on, uploaded_at)``.
* ``studies.withdrawn_at``, ``withdrawn_by`` (a user), ``withdrawn_reason``: a film withdrawn from the record
  (wrong patient, unusable) is kept, hidden from the worklist and history by default; the audit log keeps
  who and why.

Downgrade drops the columns (withdrawn films become ordinary ones again; the audit log still says they were
withdrawn). Written out in full (no application imports), like 0001-0005.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROJECTION_LIMIT = 16  # ViewPosition is a CS value: at most 16 characters
REASON_LIMIT = 500


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


_studies = sa.table(
    "studies",
    sa.column("id", sa.Integer()),
    sa.column("dicom", _json()),
    sa.column("acquired_on", sa.Date()),
    sa.column("projection", sa.String()),
)


def acquisition(document: object) -> tuple[date | None, str | None]:
    """(StudyDate, ViewPosition) of a stored DICOM document (ISO date text and a code), None where absent or
    unreadable."""
    if not isinstance(document, dict):
        return None, None
    taken = None
    raw = document.get("study_date")
    if isinstance(raw, str):
        try:
            taken = date.fromisoformat(raw[:10])
        except ValueError:
            taken = None
    view = document.get("view_position")
    projection = str(view).strip().upper()[:PROJECTION_LIMIT] or None if view else None
    return taken, projection


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("acquired_on", sa.Date(), nullable=True))
        batch.add_column(sa.Column("projection", sa.String(PROJECTION_LIMIT), nullable=True))
        batch.add_column(sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("withdrawn_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("withdrawn_reason", sa.String(REASON_LIMIT), nullable=True))
        batch.create_foreign_key("fk_studies_withdrawn_by_users", "users", ["withdrawn_by"], ["id"])
    bind = op.get_bind()
    rows = bind.execute(sa.select(_studies.c.id, _studies.c.dicom).where(_studies.c.dicom.is_not(None)))
    for study_id, document in rows.all():
        taken, projection = acquisition(document)
        if taken is not None or projection is not None:
            bind.execute(
                sa.update(_studies)
                .where(_studies.c.id == study_id)
                .values(acquired_on=taken, projection=projection)
            )


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_constraint("fk_studies_withdrawn_by_users", type_="foreignkey")
        batch.drop_column("withdrawn_reason")
        batch.drop_column("withdrawn_by")
        batch.drop_column("withdrawn_at")
        batch.drop_column("projection")
        batch.drop_column("acquired_on")
