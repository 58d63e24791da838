"""``python -m core seed [--if-empty] [--patients 50]``: synthetic demo patients and the demo accounts.

The accounts' random passwords are printed here once and never stored in clear anywhere.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.exc import OperationalError, ProgrammingError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``seed`` command."""
    parser = subparsers.add_parser("seed", help="load synthetic demo patients and demo accounts")
    parser.add_argument("--patients", type=int, default=50, help="how many patients (default 50)")
    parser.add_argument("--if-empty", action="store_true", help="do nothing if the database has patients")
    parser.add_argument("--seed", type=int, default=20240101, help="random seed (default fixed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Seed, then print what was done and the new credentials."""
    from core.records.demo_data import SeedRefused, seed_demo

    if args.patients < 1:
        print("--patients must be at least 1", file=sys.stderr)
        return 2
    try:
        result = seed_demo(args.patients, if_empty=args.if_empty, seed=args.seed)
    except SeedRefused as exc:
        print(exc, file=sys.stderr)
        return 1
    except (OperationalError, ProgrammingError) as exc:
        # Typically "no such table": the schema was never created.
        print(
            f"The database is not ready ({exc.orig}). Run `python -m core db upgrade` first.", file=sys.stderr
        )
        return 1
    if result.skipped_reason:
        print(f"Nothing seeded: {result.skipped_reason}.")
        return 0
    print(f"Seeded {result.patients_added} synthetic patients.")
    for username, password in result.accounts.items():
        if password is None:
            print(f"  account {username!r} already exists; its password was not changed.")
        else:
            print(f"  account {username!r}  password: {password}")
    if any(result.accounts.values()):
        print("These passwords are shown only once: note them now.")
    return 0
