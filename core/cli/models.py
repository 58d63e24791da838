"""``python -m core models list|compare|promote``: model versions from the command line, for IT staff.

    python -m core models list [KIND]
    python -m core models compare KIND VERSION [--against VERSION]
    python -m core models promote KIND VERSION --user USERNAME [--override-reason TEXT]

``promote`` follows the same rules as the Models page (``core.ml.promotion.promote``): a version that
measures worse than the active one, or was measured on another test split, is refused unless a reason of
at least 10 characters is given; the promotion or the refusal is audited as ``--user`` (an admin).
Exit status: 0 done, 1 promotion refused (or someone else promoted meanwhile), 2 bad kind, version or user.
"""

from __future__ import annotations

import argparse
import sys

from core.ml.registry import KINDS  # files and cards only: no database, no torch


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``models`` command and its subcommands."""
    parser = sub.add_parser(
        "models",
        help="list, compare and promote model versions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every version of each kind with its headline metrics")
    listing.add_argument("kind", nargs="?", choices=KINDS, help="one kind only")
    listing.set_defaults(func=run_list)

    comparing = actions.add_parser("compare", help="measure a version against the active one")
    comparing.add_argument("kind", choices=KINDS)
    comparing.add_argument("version")
    comparing.add_argument("--against", metavar="VERSION", help="another version instead of the active one")
    comparing.set_defaults(func=run_compare)

    promoting = actions.add_parser("promote", help="make a version the active one (audited)")
    promoting.add_argument("kind", choices=KINDS)
    promoting.add_argument("version")
    promoting.add_argument("--user", metavar="USERNAME", required=True, help="the admin it is done as")
    promoting.add_argument(
        "--override-reason", metavar="TEXT", help="why to promote a version the rules would refuse"
    )
    promoting.set_defaults(func=run_promote)


def _fmt(value: float | None, ci95: tuple[float, float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} [{ci95[0]:.3f}, {ci95[1]:.3f}]" if ci95 else f"{value:.3f}"


def run_list(args: argparse.Namespace) -> int:
    """Print each kind's versions, active first."""
    from core.ml.registry import list_versions

    for kind in [args.kind] if args.kind else KINDS:
        versions = list_versions(kind)
        print(f"{kind}: {len(versions)} version(s)")
        for v in versions:
            print(
                f"  {'*' if v.active else ' '} {v.version}  {v.metric} {_fmt(v.value, v.ci95)}  "
                f"{v.val_metric} {_fmt(v.val_value)}  test images {v.test_images or '-'}  "
                f"parent {v.parent or '-'}  created {v.created or '-'}"
            )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Print the comparison and whether promotion would need a reason."""
    from core.errors import AppError
    from core.ml.registry import compare

    try:
        comparison = compare(args.kind, args.version, args.against)
    except AppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(comparison.summary())
    for note in comparison.notes:
        print(note)
    for name, theirs, mine in comparison.per_finding():
        print(f"  {name:<20} {_fmt(theirs):>6} -> {_fmt(mine):>6}")
    if comparison.needs_override:
        print("Promoting it needs --override-reason.")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    """Promote as ``--user``; refusals go to stderr with the reason."""
    from core.auth import find_active_user
    from core.errors import AppError, ConflictError
    from core.ml.promotion import PromotionRefused, promote

    try:
        actor = find_active_user(args.user)
        done = promote(args.kind, args.version, actor, override_reason=args.override_reason)
    except (PromotionRefused, ConflictError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except AppError as exc:  # no such user or version, not an admin, a reason too long
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(done.message())
    return 0
