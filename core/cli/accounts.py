"""``python -m core users list|unlock|deactivate|activate|reset-password|revoke-sessions``: account management.

Run by whoever can run commands on the server, and audited as ``cli:<os user>`` (with ``cli:<os user>@<host>``
in the audit's client column). No dashboard password is asked on purpose: anyone who can run this command can
already read the database URL and its credentials (or the SQLite file) and change any row directly, so a prompt
would add friction, not protection, and the command must work when every admin account is locked or forgotten
(it is how an installation recovers). What it adds is the trail: every change names the operating-system
account that made it. ``reset-password`` reads the new password at a hidden prompt (twice) or, with
``--password-stdin``, from the first line of standard input. Exit status 0 done, 1 refused (with the reason on
stderr), 2 no such user.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from core.cli.users import _read_password

if TYPE_CHECKING:
    from core.audit import Actor


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``users`` command and its actions."""
    parser = subparsers.add_parser("users", help="list, unlock, (de)activate accounts, reset a password")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every account, its role, state and last login").set_defaults(
        func=run_list
    )
    for name, text in (
        ("unlock", "end a lock after failed logins"),
        ("deactivate", "stop an account from logging in"),
        ("activate", "let a deactivated account log in again"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("username")
        action.set_defaults(func=run_change, change=name)
    reset = actions.add_parser(
        "reset-password", help="set a new password (hidden prompt or --password-stdin)"
    )
    reset.add_argument("username")
    reset.add_argument("--password-stdin", action="store_true", help="read it from the first line of stdin")
    reset.set_defaults(func=run_reset)
    revoke = actions.add_parser("revoke-sessions", help="sign an account out of every browser now")
    revoke.add_argument("username")
    revoke.set_defaults(func=run_revoke)


def _actor() -> Actor:
    from core import audit, origin

    return audit.Actor(None, origin.cli_user())


def _fail(exc: Exception) -> int:
    from core.errors import NotFound, ValidationError

    if isinstance(exc, ValidationError):
        for field, message in exc.errors.items():
            print(f"{field}: {message}", file=sys.stderr)
        return 1
    print(f"error: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, NotFound) else 1


def run_list(_args: argparse.Namespace) -> int:
    """Print one line per account."""
    from core.auth import list_users
    from db.base import utcnow

    now = utcnow()
    print(f"{'username':<32} {'role':<7} {'state':<22} {'failed':>6}  last login (UTC)")
    for u in list_users(_actor()):
        state = "active" if u.active else "deactivated"
        if u.locked_until is not None and u.locked_until > now:
            state = f"locked to {u.locked_until:%H:%M}"
        last = f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "never"
        print(f"{u.username:<32} {u.role:<7} {state:<22} {u.failed_attempts:>6}  {last}")
    return 0


def run_change(args: argparse.Namespace) -> int:
    """unlock / deactivate / activate."""
    from core import accounts
    from core.errors import AppError

    change = {"unlock": accounts.unlock, "deactivate": accounts.deactivate, "activate": accounts.activate}
    try:
        change[args.change](args.username, _actor())
    except AppError as exc:
        return _fail(exc)
    print(f"{args.change}: {args.username.strip().lower()} done.")
    return 0


def run_reset(args: argparse.Namespace) -> int:
    """Set a new password."""
    from core import accounts
    from core.errors import AppError

    password = _read_password(args.password_stdin)
    if password is None:
        return 1
    try:
        accounts.reset_password(args.username, password, _actor())
    except AppError as exc:
        return _fail(exc)
    print(f"New password set for {args.username.strip().lower()}; any lock is cleared.")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Sign an account out everywhere (core.web_sessions.revoke_user)."""
    from core import web_sessions
    from core.errors import AppError

    try:
        count = web_sessions.revoke_user(args.username, _actor())
    except AppError as exc:
        return _fail(exc)
    print(f"{args.username.strip().lower()}: {count} session(s) signed out.")
    return 0
