"""``python -m core create-user --username NAME [--role admin] [--full-name ...] [--password-stdin]``.

The way to make the first admin: there is no default password anywhere. The password is typed twice at a
hidden prompt, or read from standard input (one line) for scripts, so it never appears in shell history
or the process list.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from core.errors import ValidationError
from db.models import ROLES


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``create-user`` command."""
    parser = subparsers.add_parser("create-user", help="create a doctor or admin account")
    parser.add_argument("--username", required=True)
    parser.add_argument("--role", choices=ROLES, default="doctor")
    parser.add_argument("--full-name", default="")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )
    parser.set_defaults(func=run)


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        print("No terminal to prompt on: pass the password with --password-stdin.", file=sys.stderr)
        return None
    first = getpass.getpass("Password (at least 12 characters): ")
    if getpass.getpass("Repeat password: ") != first:
        print("The passwords differ; nothing was created.", file=sys.stderr)
        return None
    return first


def run(args: argparse.Namespace) -> int:
    """Create the user; exit status 1 with the reasons on stderr if the input is rejected."""
    from core.auth import create_user  # keeps `python -m core --help` light

    password = _read_password(args.password_stdin)
    if password is None:
        return 1
    try:
        user = create_user(args.username, password, role=args.role, full_name=args.full_name)
    except ValidationError as exc:
        for field, message in exc.errors.items():
            print(f"{field}: {message}", file=sys.stderr)
        return 1
    print(f"Created {user.role} {user.username!r} (id {user.id}).")
    return 0
