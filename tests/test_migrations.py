"""Alembic migrations upgrade, downgrade and upgrade again on SQLite and PostgreSQL, matching the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from db.base import Base
from db.migrate import alembic_config, downgrade, upgrade
from db.session import create_db_engine
from tests.support.db import create_postgres_schema, drop_postgres_schema

# Every table the models declare, and the newest revision: later revisions need no edit here.
TABLES = set(Base.metadata.tables)
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (a fresh file / a fresh schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    schema, url = create_postgres_schema("cxr_migr")
    try:
        yield url
    finally:
        drop_postgres_schema(schema)


def _tables(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    upgrade(url=empty_url)
    assert _tables(empty_url) == TABLES
    assert _revision(empty_url) == HEAD

    downgrade("base", url=empty_url)
    assert _tables(empty_url) == set()
    assert _revision(empty_url) is None

    upgrade(url=empty_url)
    assert _tables(empty_url) == TABLES


def test_migrated_schema_matches_models(empty_url: str) -> None:
    """The hand-written revision and the ORM models describe the same schema (no pending autogenerate)."""
    upgrade(url=empty_url)
    engine = create_db_engine(empty_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_postgres_search_columns_use_byte_order_collation() -> None:
    """Prefix ranges are only correct under a byte-order collation: the migration must set COLLATE "C"."""
    schema, url = create_postgres_schema("cxr_coll")
    try:
        upgrade(url=url)
        engine = create_db_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT column_name, collation_name FROM information_schema.columns "
                    "WHERE table_schema = :s AND table_name = 'patients' AND collation_name IS NOT NULL"
                ),
                {"s": schema},
            ).all()
        engine.dispose()
        assert dict(rows) == {"patient_id": "C", "given_norm": "C", "family_norm": "C"}
    finally:
        drop_postgres_schema(schema)


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'pragma.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()
