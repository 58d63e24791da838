"""Server-side cost of the landing page's two lists on a busy database: "My recent patients"
(core.records.recent, a grouped read of the user's audit rows) and the waiting count (core.xray.queues.waiting),
median of N runs, printed. A throwaway SQLite database (or ``--url`` for another, e.g. a PostgreSQL scratch
database) gets PATIENTS patients and AUDIT audit rows spread over 30 days and 40 users.

    .venv/bin/python scripts/bench_landing.py [--runs N] [--patients 5000] [--audit 200000] [--url URL]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _median_ms(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--audit", type=int, default=200_000)
    parser.add_argument("--url")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="bench-landing-")
    os.environ["CXR_DATABASE_URL"] = args.url or f"sqlite:///{scratch}/bench.db"
    os.environ.setdefault("CXR_DATA_DIR", f"{scratch}/data")

    from sqlalchemy import insert

    from core.audit import Actor
    from core.records.recent import recent_patients
    from core.xray import queues
    from db import models
    from db.base import utcnow
    from db.migrate import upgrade
    from db.session import session_scope

    upgrade()
    rng = random.Random(12)
    now = utcnow()
    with session_scope() as s:
        s.execute(
            insert(models.Patient),
            [
                {
                    "patient_id": f"ED-{100000 + n}",
                    "given_name": f"Given{n}",
                    "family_name": f"Family{n}",
                    "given_norm": f"given{n}",
                    "family_norm": f"family{n}",
                    "sex": "female",
                    "date_of_birth": date(1950, 1, 1) + timedelta(days=n),
                }
                for n in range(args.patients)
            ],
        )
        actions = ("view", "view", "view", "create", "diagnose", "list", "search", "correct")
        s.execute(
            insert(models.AuditLog),
            [
                {
                    "at": now - timedelta(minutes=rng.randrange(30 * 24 * 60)),
                    "user_id": (user := rng.randrange(40)) + 1,
                    "username": f"dr.{user + 1}",
                    "action": rng.choice(actions),
                    "entity_type": "patient",
                    "patient_id": f"ED-{100000 + rng.randrange(args.patients)}",
                    "detail": "",
                }
                for _ in range(args.audit)
            ],
        )
    doctor = Actor(1, "dr.1")
    shown = recent_patients(doctor)
    print(f"{platform.node()} · {os.cpu_count()} cores · {os.environ['CXR_DATABASE_URL'].split(':')[0]}")
    print(f"{args.patients} patients, {args.audit} audit rows (40 users, 30 days); median of {args.runs}")
    print(
        f"recent_patients: {_median_ms(lambda: recent_patients(doctor), args.runs):.1f} ms ({len(shown)} shown)"
    )
    print(f"queues.waiting:  {_median_ms(queues.waiting, args.runs):.1f} ms")


if __name__ == "__main__":
    main()
