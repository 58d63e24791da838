"""Run Alembic migrations from Python (the CLI and the tests); the app itself never calls create_all."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from core.config import PROJECT_ROOT, get_settings


def alembic_config(url: str | None = None) -> Config:
    """Alembic config for the repository's ``alembic.ini``, targeting ``url`` (default: the settings' URL)."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["url"] = url or get_settings().sqlalchemy_url
    config.attributes["configure_logger"] = False
    return config


def upgrade(revision: str = "head", url: str | None = None) -> None:
    """Upgrade the database at ``url`` to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(revision: str = "-1", url: str | None = None) -> None:
    """Downgrade the database at ``url`` to ``revision`` ("base" removes every table)."""
    command.downgrade(alembic_config(url), revision)


def current(url: str | None = None, verbose: bool = False) -> None:
    """Print the database's current revision (Alembic writes it to stdout)."""
    command.current(alembic_config(url), verbose=verbose)
