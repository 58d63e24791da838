"""Revision 0010 (PACS) on SQLite and PostgreSQL: upgrade over a database at 0009 holding a study, the
constraints it promises (one row per SOP Instance UID, known statuses, a study's removal unlinks its import),
and a downgrade that removes only its own tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from db.migrate import downgrade, upgrade
from tests.support.migration_rows import NOW, database_at, study_row, user_and_patient_rows


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_at_0009(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    with database_at(request.param, "0009", tmp_path, "cxr_m10") as (url, engine):
        with engine.begin() as conn:
            user_and_patient_rows(conn)
            study_row(conn, visit=None)
        yield url, engine


def _import(conn, sop: str, status: str = "imported", study_id: int | None = 1) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO pacs_imports (sop_instance_uid, study_instance_uid, series_instance_uid,"
            " dicom_patient_id, dicom_patient_name, status, reason, study_id, found_at, version)"
            " VALUES (:sop, '1.2', '1.2.3', 'ED-1', '', :status, '', :study, :now, 1)"
        ),
        {"sop": sop, "status": status, "study": study_id, "now": NOW},
    )


def test_upgrade_constraints_and_downgrade(engine_at_0009: tuple[str, Engine]) -> None:
    url, engine = engine_at_0009
    upgrade("0010", url=url)
    with engine.begin() as conn:
        _import(conn, "1.2.3.4")
        _import(conn, "1.2.3.5", status="unmatched", study_id=None)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _import(conn, "1.2.3.4")  # the same instance twice
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _import(conn, "1.2.3.6", status="lost")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO pacs_exports (study_id, sop_instance_uid, kind, reason, sent_at, sent_by)"
                " VALUES (1, '9.9', 'sr', 'analysis', :now, 1)"
            ),
            {"now": NOW},
        )
        assert conn.execute(text("SELECT count(*) FROM pacs_imports")).scalar_one() == 2

    downgrade("0009", url=url)
    tables = set(inspect(engine).get_table_names(schema=None))
    assert "pacs_imports" not in tables and "pacs_exports" not in tables and "studies" in tables
    upgrade("0010", url=url)
