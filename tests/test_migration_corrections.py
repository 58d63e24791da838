"""Revision 0003 (corrections) on SQLite and PostgreSQL: upgrade over existing studies, the constraints it
promises, and a downgrade that removes only its own table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from db.migrate import downgrade, upgrade
from tests.support.migration_rows import NOW, database_at, diagnosis_row, study_row, user_and_patient_rows


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_at_0002(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A database at revision 0002 holding a user, a patient, a 'new' study and its diagnosis."""
    with database_at(request.param, "0002", tmp_path, "cxr_m3") as (url, engine):
        with engine.begin() as conn:
            user_and_patient_rows(conn)
            study_row(conn, visit=None)
            diagnosis_row(conn)
        yield url, engine


def _correction(conn, study_id: int = 1, diagnosis_id: int = 1, status: str = "corrected") -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO corrections (study_id, diagnosis_id, labels, boxes, note, reviewed, status,"
            " created_by, created_at) VALUES (:s, :d, :labels, :boxes, 'n', :r, :status, 1, :now)"
        ),
        {
            "s": study_id,
            "d": diagnosis_id,
            "labels": '{"Effusion": "present"}',
            "boxes": '[{"label": "Effusion", "x1": 1, "y1": 2, "x2": 30, "y2": 40}]',
            "r": True,
            "status": status,
            "now": NOW,
        },
    )


def test_upgrade_keeps_studies_and_downgrade_removes_only_corrections(engine_at_0002) -> None:  # type: ignore[no-untyped-def]
    url, engine = engine_at_0002
    upgrade("0003", url=url)
    assert "corrections" in set(inspect(engine).get_table_names())
    columns = {c["name"] for c in inspect(engine).get_columns("corrections")}
    assert columns == {
        "id",
        "study_id",
        "diagnosis_id",
        "labels",
        "boxes",
        "note",
        "reviewed",
        "status",
        "created_by",
        "created_at",
    }
    with engine.begin() as conn:
        _correction(conn)
        conn.execute(text("UPDATE studies SET status = 'corrected', version = 2 WHERE id = 1"))
    downgrade("0002", url=url)
    tables = set(inspect(engine).get_table_names())
    assert "corrections" not in tables and {"studies", "diagnoses"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM studies")).scalars().all() == ["corrected"]
        assert conn.execute(text("SELECT count(*) FROM diagnoses")).scalar() == 1
    upgrade("head", url=url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM corrections")).scalar() == 0


def test_constraints(engine_at_0002) -> None:  # type: ignore[no-untyped-def]
    url, engine = engine_at_0002
    upgrade("0003", url=url)
    with engine.begin() as conn:
        _correction(conn)
        _correction(conn, status="reviewed")  # append-only history: many rows per study
    for bad in (
        lambda c: _correction(c, status="done"),
        lambda c: _correction(c, study_id=99),
        lambda c: _correction(c, diagnosis_id=99),
    ):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            bad(conn)
    # Corrections go with their study (as its diagnoses do).
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM studies WHERE id = 1"))
        assert conn.execute(text("SELECT count(*) FROM corrections")).scalar() == 0
