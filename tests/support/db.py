"""The test database and account types, the cheap password context, and PostgreSQL test schemas.

``tests/conftest.py`` builds its fixtures from these; tests import the types and helpers from here.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest
from passlib.context import CryptContext
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core import auth
from core.auth import AuthenticatedUser

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEST_PASSWORD = "correct horse battery staple"  # test-only; product code has no default password
PRODUCTION_PWD_CONTEXT = auth.pwd_context  # kept so a test can check the real cost parameters
# Same scheme (argon2id), a fraction of the cost: the production parameters take ~0.1-0.3 s per hash on a
# 2-core machine, which dominates a suite that creates and logs in hundreds of users.
FAST_PWD_CONTEXT = CryptContext(
    schemes=["argon2"], argon2__rounds=1, argon2__memory_cost=1024, argon2__parallelism=1
)


@dataclass(frozen=True)
class TestDatabase:
    """The database a test runs against."""

    __test__ = False  # not a test class, despite the name

    backend: str  # "sqlite" | "postgresql"
    url: str
    schema: str | None = None  # PostgreSQL only


@dataclass(frozen=True)
class TestAccount:
    """A user made by ``make_user``: ``.user`` is the actor for services, ``.password`` logs in."""

    __test__ = False

    user: AuthenticatedUser
    password: str

    @property
    def username(self) -> str:
        """Shortcut for ``user.username``."""
        return self.user.username


# ------------------------------------------------------------------ PostgreSQL schemas


def postgres_base_url() -> str:
    """The PostgreSQL server URL tests use (without a schema)."""
    return os.environ.get("CXR_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def postgres_enabled() -> bool:
    """False when ``CXR_TEST_POSTGRES=0`` asks to skip PostgreSQL tests."""
    return os.environ.get("CXR_TEST_POSTGRES", "1").strip().lower() not in ("0", "false", "no")


def require_postgres() -> str:
    """The server URL, or skip (disabled) / fail (unreachable) the calling test."""
    if not postgres_enabled():
        pytest.skip("PostgreSQL tests disabled by CXR_TEST_POSTGRES=0")
    url = postgres_base_url()
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any connection problem means the same thing here
        pytest.fail(
            f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} is unreachable ({exc}). "
            "Start it, set CXR_TEST_POSTGRES_URL, or set CXR_TEST_POSTGRES=0 to skip these tests.",
            pytrace=False,
        )
    finally:
        engine.dispose()
    return url


def create_postgres_schema(prefix: str = "cxr_test") -> tuple[str, str]:
    """Create a fresh, uniquely named schema; return (schema, URL whose search_path is that schema)."""
    base = require_postgres()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    # search_path puts every table (and alembic_version) in the schema without any code knowing about it.
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return schema, url.render_as_string(hide_password=False)


def drop_postgres_schema(schema: str) -> None:
    """Drop a schema made by :func:`create_postgres_schema` and everything in it."""
    engine = create_engine(postgres_base_url())
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()
