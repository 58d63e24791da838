"""Command line: ``python -m core COMMAND ...``.

Each command lives in its own module, which exposes ``register(subparsers)``; importing them lazily keeps
``python -m core diagnose`` free of the database stack and ``python -m core db`` free of TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from core import origin

# command name -> module that registers it (see each module's ``register``)
COMMANDS: dict[str, str] = {
    "db": "core.cli.db",
    "seed": "core.cli.seed",
    "create-user": "core.cli.users",
    "diagnose": "core.cli.diagnose",
    "models": "core.cli.models",
    "retrain": "core.cli.retrain",
    "corrections": "core.cli.corrections",
    "users": "core.cli.accounts",
    "storage": "core.cli.storage",
    "report": "core.cli.report",
    "pacs": "core.cli.pacs",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress and debug detail to stderr"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, module in COMMANDS.items():
        if wanted is None or name == wanted:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=f"see `python -m core {name} --help`")
    args = parser.parse_args(argv)
    origin.set_client(origin.cli_origin())  # every audit row of this run names the OS user and host
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # a down database or a full disk: one line, no traceback (paths, SQL)
        from core import failures

        why = failures.reason(exc)
        if why is None:
            raise
        print(f"error: {why}. {failures.ADVICE}", file=sys.stderr)
        return 2 if "database" in why else 1


if __name__ == "__main__":
    sys.exit(main())
