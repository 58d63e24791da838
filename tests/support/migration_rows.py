"""Raw rows for the migration tests, written with SQL so they do not depend on today's ORM models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import Engine, text

from db.migrate import upgrade
from db.session import create_db_engine
from tests.support.db import create_postgres_schema, drop_postgres_schema

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@contextmanager
def database_at(backend: str, revision: str, folder: Path, prefix: str) -> Iterator[tuple[str, Engine]]:
    """A fresh database (a SQLite file in ``folder``, or a PostgreSQL schema named from ``prefix``) migrated to
    ``revision``: its URL and an engine, both cleaned up afterwards."""
    schema = None
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'm.db'}"
    else:
        schema, url = create_postgres_schema(prefix)
    try:
        upgrade(revision, url=url)
        engine = create_db_engine(url)
        try:
            yield url, engine
        finally:
            engine.dispose()
    finally:
        if schema is not None:
            drop_postgres_schema(schema)


def user_and_patient_rows(conn) -> None:  # type: ignore[no-untyped-def]
    """User 1 (a doctor) and patient 1 ('ED-1'): what every study row of these tests refers to."""
    conn.execute(
        text(
            "INSERT INTO users (id, username, full_name, role, password_hash, failed_attempts, active,"
            " created_at, version) VALUES (1, 'u', 'U', 'doctor', 'x', 0, :t, :now, 1)"
        ),
        {"t": True, "now": NOW},
    )
    conn.execute(
        text(
            "INSERT INTO patients (id, patient_id, given_name, family_name, given_norm, family_norm, sex,"
            " date_of_birth, phone, email, address, special_notes, created_at, updated_at, version)"
            " VALUES (1, 'ED-1', 'A', 'B', 'a', 'b', 'female', :dob, '', '', '', '', :now, :now, 1)"
        ),
        {"dob": date(1970, 1, 1), "now": NOW},
    )


def study_row(
    conn, sha: str = "a" * 64, study_id: int = 1, status: str = "new", visit: int | None = 1
) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO studies (id, patient_pk, visit_pk, sha256, file_path, preview_path, thumbnail_path,"
            " original_filename, source_format, byte_size, width, height, dicom, uploaded_by, uploaded_at,"
            " status, version) VALUES (:id, 1, :visit, :sha, 'originals/aa/x.png', 'renders/p.jpg',"
            " 'renders/t.jpg', 'x.png', 'png', 10, 1024, 1024, NULL, 1, :now, :status, 1)"
        ),
        {"id": study_id, "sha": sha, "now": NOW, "status": status, "visit": visit},
    )


def diagnosis_row(conn, study_id: int = 1, level: str = "urgent") -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO diagnoses (study_id, classifier_version, detector_version, probabilities, thresholds,"
            " flagged, top3, detections, triage_level, uncertain, uncertain_reason, triage_rule, scope_score,"
            " scope_limit, timings, overlay_path, heatmap_path, created_at, created_by) VALUES (:s, 'v1',"
            " NULL, '{}', '{}', '[]', '[]', '[]', :level, :f, '', '{}', 1.0, 2.0, '{}', NULL, NULL, :now, 1)"
        ),
        {"s": study_id, "level": level, "f": False, "now": NOW},
    )
