"""Alembic environment: the URL comes from core.config Settings, never from alembic.ini."""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import Connection

import db.models  # noqa: F401  (registers every table on Base.metadata)
from core.config import get_settings
from db.base import Base
from db.session import create_db_engine

config = context.config
# Only when run as the `alembic` command: python -m core configures logging itself.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    # Callers (tests, the CLI) may pass an explicit URL; otherwise the application's own setting.
    return config.attributes.get("url") or get_settings().sqlalchemy_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode recreates the table instead.
        render_as_batch=True,
        compare_type=True,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`)."""
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against the configured database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_db_engine(_url())
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # Batch mode recreates a table (copy, DROP, rename); with foreign keys enforced, dropping a
                # table that other rows refer to (users, studies) fails or fires their ON DELETE actions.
                # SQLite only changes this pragma outside a transaction; the keys are checked afterwards.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            try:
                _configure(connection=conn)
                with context.begin_transaction():
                    context.run_migrations()
                    if sqlite:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise RuntimeError(f"migration left rows with broken foreign keys: {broken[:5]}")
            finally:
                if sqlite:
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
