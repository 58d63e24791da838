"""Benchmark the referral: time from a crew's upload to the referral delivered to the departments.

    .venv/bin/python scripts/bench_referral.py [--runs 15] [--postgresql]

On a fresh temporary SQLite database (``--postgresql``: a throwaway schema on the test PostgreSQL server, as
the tests make, dropped at the end) and data directory: the committed sites (config/sites.toml), a crew at AMB-1 and a doctor at each department. Each run
uploads a distinct variant of the sample film through ``diagnose_upload`` (read by the committed models), asks
``core.referral.service.propose`` for the departments, sends the referral to the three proposed ones
(``create_referral``) and stops the clock when the first proposed department's ``waiting_count`` (what its alert
banner polls) sees it: "delivered". One warm run first. Prints the median and p95 of the whole and of its parts.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{name}: median {statistics.median(ordered):.0f} ms, p95 {p95:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--postgresql", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cxr-bench-referral-"))
    schema = None
    if args.postgresql:
        from tests.support.db import create_postgres_schema, drop_postgres_schema

        schema, url = create_postgres_schema()
    else:
        url = f"sqlite:///{workdir / 'cxr.db'}"
    os.environ.update(CXR_VAR_DIR=str(workdir), CXR_DATABASE_URL=url)
    try:
        return _run(args.runs, url)
    finally:
        if schema is not None:
            from db.session import dispose_engines

            dispose_engines()
            drop_postgres_schema(schema)


def _run(runs: int, url: str) -> int:

    from core.audit import SYSTEM
    from core.auth import create_user
    from core.referral import crew, service, sites
    from core.xray import diagnosis
    from db.migrate import upgrade
    from tests.support.xray_samples import png_variant

    upgrade()
    sites.sync_sites(SYSTEM)
    password = "bench referral password 2026!"
    crew_user = create_user("bench.crew", password, role="ambulance", full_name="Bench crew")
    sites.assign_user("bench.crew", "AMB-1", SYSTEM)
    doctors = {}
    for site in sites.list_sites(kind="ed"):
        doctors[site.code] = create_user(f"bench.{site.code.lower()}", password, role="doctor")
        sites.assign_user(f"bench.{site.code.lower()}", site.code, SYSTEM)
    patient = crew.quick_register("male", 60, crew_user)
    totals: list[float] = []
    reads: list[float] = []
    referrals: list[float] = []
    for run in range(runs + 1):
        data = png_variant(1000 + run)
        t0 = time.perf_counter()
        view = diagnosis.diagnose_upload(patient.patient_id, data, f"field-{run}.png", crew_user)
        t1 = time.perf_counter()
        proposed = [s.code for s in service.propose(view.study_id, crew_user).proposed]
        service.create_referral(view.study_id, proposed, "bench", crew_user)
        delivered = service.waiting_count(doctors[proposed[0]]) > 0
        t2 = time.perf_counter()
        assert delivered
        first = doctors[proposed[0]]  # accept, so the next run's waiting count starts from zero
        service.answer(service.incoming(first)[0].id, first, accept=True)
        if run == 0:
            continue  # warm
        totals.append((t2 - t0) * 1e3)
        reads.append((t1 - t0) * 1e3)
        referrals.append((t2 - t1) * 1e3)
    backend = url.split(":", 1)[0]
    print(
        f"upload -> referral delivered, {runs} runs on {backend}, {platform.node()} ({os.cpu_count()} cores)"
    )
    print(_summary("total (upload + read + save + propose + refer + seen by the department)", totals))
    print(_summary("  upload, read and save (diagnose_upload)", reads))
    print(_summary("  propose + create_referral + department's waiting count", referrals))
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
