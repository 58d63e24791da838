"""``python -m core db upgrade|downgrade|current``: Alembic migrations against the configured database."""

from __future__ import annotations

import argparse
import logging

from sqlalchemy.engine import make_url

from core.config import get_settings

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``db`` command."""
    parser = subparsers.add_parser("db", help="database migrations (Alembic)")
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = sub.add_parser("upgrade", help="apply migrations (default: to the latest)")
    up.add_argument("revision", nargs="?", default="head")
    down = sub.add_parser("downgrade", help="revert migrations (default: the last one; 'base' = all)")
    down.add_argument("revision", nargs="?", default="-1")
    current = sub.add_parser("current", help="show the database's revision")
    current.add_argument("--verbose", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen migration action."""
    # Alembic announces each of its plugins at INFO when imported; that is noise at a terminal.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # Imported here so `python -m core --help` does not pay for Alembic.
    from db import migrate

    url = get_settings().sqlalchemy_url
    # Never log a password that may be part of the URL.
    log.info("database: %s", make_url(url).render_as_string(hide_password=True))
    if args.db_command == "upgrade":
        migrate.upgrade(args.revision)
    elif args.db_command == "downgrade":
        migrate.downgrade(args.revision)
    else:
        migrate.current(verbose=args.verbose)
    return 0
