"""Revision 0002 (studies, diagnoses) on SQLite and PostgreSQL: upgrade over existing records, the
constraints it promises, and a downgrade that removes only its own tables."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from db.migrate import downgrade, upgrade
from tests.support.migration_rows import NOW, database_at, diagnosis_row, study_row, user_and_patient_rows


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_at_0001(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A database at revision 0001 holding one user, one patient and one visit."""
    with database_at(request.param, "0001", tmp_path, "cxr_m2") as (url, engine):
        with engine.begin() as conn:
            user_and_patient_rows(conn)
            conn.execute(
                text(
                    "INSERT INTO visits (id, patient_pk, visit_date, reason, notes, created_at, updated_at, version)"
                    " VALUES (1, 1, :d, 'cough', '', :now, :now, 1)"
                ),
                {"d": date(2026, 11, 23), "now": NOW},
            )
        yield url, engine


def test_upgrade_keeps_records_and_downgrade_removes_only_studies(engine_at_0001) -> None:  # type: ignore[no-untyped-def]
    url, engine = engine_at_0001
    upgrade("0002", url=url)
    assert {"studies", "diagnoses"} <= set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        study_row(conn)
        diagnosis_row(conn)
    downgrade("0001", url=url)
    tables = set(inspect(engine).get_table_names())
    assert "studies" not in tables and "diagnoses" not in tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT patient_id FROM patients")).scalars().all() == ["ED-1"]
    upgrade("head", url=url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM studies")).scalar() == 0


def test_constraints(engine_at_0001) -> None:  # type: ignore[no-untyped-def]
    url, engine = engine_at_0001
    upgrade("0002", url=url)
    with engine.begin() as conn:
        study_row(conn)
        diagnosis_row(conn)
    # The same image twice for one patient is one study.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        study_row(conn, study_id=2)
    for bad in (
        lambda c: study_row(c, sha="b" * 64, study_id=3, status="done"),
        lambda c: diagnosis_row(c, level="stat"),
    ):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            bad(conn)
    # A patient with images is not deleted by a cascade; a removed visit only unlinks its studies.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("DELETE FROM patients WHERE id = 1"))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM visits WHERE id = 1"))
        assert conn.execute(text("SELECT visit_pk FROM studies WHERE id = 1")).scalar() is None
    # Diagnoses go with their study.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM studies WHERE id = 1"))
        assert conn.execute(text("SELECT count(*) FROM diagnoses")).scalar() == 0
