"""Declarative base, naming convention and the column types shared by every model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, MetaData, String, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

# Named constraints make Alembic migrations (and SQLite batch mode, which recreates tables) deterministic:
# unnamed constraints get server-generated names that differ between SQLite and PostgreSQL.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of all ORM models; its metadata is what Alembic migrations describe."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime (the only kind the database stores)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite has no time zones and would hand back naive datetimes; PostgreSQL's ``timestamptz``
    returns the session's zone. Both are normalised to UTC here so comparisons never mix naive and
    aware values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use db.base.utcnow() or an aware value")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002 - SQLAlchemy passes it
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def code_string(length: int) -> String:
    """A string compared byte by byte on every backend.

    Patient IDs and normalised names are searched by prefix with a range query (``>= p AND < p'``); that is
    only equal to "starts with p" under a byte-order collation. SQLite's default BINARY collation is one;
    on PostgreSQL the column is declared ``COLLATE "C"`` so a server created with a linguistic locale
    (en_US.UTF-8 ignores punctuation at first level) still gives correct prefix ranges that use the index.
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")


#: JSON document column: JSONB on PostgreSQL (indexable later), JSON text on SQLite.
JSONDocument: Any = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
