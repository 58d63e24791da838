"""Benchmark patient lookups on 100,000 patients through the same services the pages call.

    .venv/bin/python scripts/bench_records.py                       # temporary SQLite file
    .venv/bin/python scripts/bench_records.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

On PostgreSQL the run works in a schema of its own (``cxr_bench_<random>``, dropped afterwards unless
``--keep``), so it never touches other tables in that database. Prints median and p95 (milliseconds) of
an exact ID search, opening a record (``get_record``, which also writes its audit row), an ID prefix search
and name searches, over ``--queries`` random queries each. Target: p95 under 20 ms on both backends.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from core.config import get_settings

log = logging.getLogger("bench_records")
SITES = ("ED", "WD", "OP", "IC")  # several ID prefixes, as hospitals that merged MRN ranges have


def _prepare_url(url: str | None, keep: bool) -> tuple[str, Callable[[], None]]:
    """The URL to benchmark on and a cleanup function."""
    if url is None:
        folder = Path(tempfile.mkdtemp(prefix="cxr-bench-"))
        path = folder / "bench.db"

        def remove_file() -> None:
            if not keep:
                for f in folder.iterdir():
                    f.unlink()
                folder.rmdir()

        return f"sqlite:///{path}", remove_file
    sa_url = make_url(url)
    if sa_url.get_backend_name() != "postgresql" or "options" in sa_url.query:
        return url, lambda: None  # a SQLite file or a search_path chosen by the caller: use as given
    if sa_url.drivername == "postgresql":
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    schema = f"cxr_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(sa_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop_schema() -> None:
        if keep:
            print(f"kept schema {schema}")
        else:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    scoped = sa_url.update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False), drop_schema


def _seed(count: int, batch: int) -> list[str]:
    from core.records.demo_data import synthetic_patients
    from core.validation import normalize_name
    from db import repository as repo
    from db.session import session_scope

    ids: list[str] = []
    per_site = -(-count // len(SITES))
    started = time.perf_counter()
    for index, site in enumerate(SITES):
        n = min(per_site, count - len(ids))
        rows = []
        for p in synthetic_patients(
            n, seed=1000 + index, id_prefix=site, first_number=1_000_000, with_history=False
        ):
            rows.append(
                {
                    "patient_id": p.patient_id,
                    "given_name": p.given_name,
                    "family_name": p.family_name,
                    "given_norm": normalize_name(p.given_name),
                    "family_norm": normalize_name(p.family_name),
                    "sex": p.sex,
                    "date_of_birth": p.date_of_birth,
                    "phone": p.phone,
                    "email": p.email,
                    "address": p.address,
                    "special_notes": p.special_notes,
                }
            )
            ids.append(p.patient_id)
        for start in range(0, len(rows), batch):
            with session_scope() as session:
                repo.bulk_insert_patients(session, rows[start : start + batch])
    print(f"inserted {len(ids):,} patients in {time.perf_counter() - started:.1f} s")
    return ids


def _time(label: str, queries: list[str], run: Callable[[str], object]) -> tuple[float, float]:
    for q in queries[:10]:  # warm caches and the connection pool; not measured
        run(q)
    samples = []
    hits = 0
    for q in queries:
        t0 = time.perf_counter()
        result = run(q)
        samples.append((time.perf_counter() - t0) * 1000)
        hits += bool(result)
    samples.sort()
    median = statistics.median(samples)
    p95 = samples[int(0.95 * (len(samples) - 1))]
    print(
        f"{label:<34} n={len(samples):<4} median {median:6.2f} ms   p95 {p95:6.2f} ms   "
        f"max {samples[-1]:6.2f} ms   ({hits}/{len(samples)} with results)"
    )
    return median, p95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300, help="random queries per kind (at least 200)")
    parser.add_argument("--batch", type=int, default=10_000, help="rows per bulk insert")
    parser.add_argument("--keep", action="store_true", help="keep the database / schema afterwards")
    parser.add_argument("--explain", action="store_true", help="print the query plans of the searches")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    url, cleanup = _prepare_url(args.database_url, args.keep)
    os.environ["CXR_DATABASE_URL"] = url  # the services read the database from Settings, like the app
    get_settings.cache_clear()
    try:
        from core import records
        from core.auth import create_user
        from core.records.demo_data import FAMILY_NAMES, GIVEN_NAMES
        from core.validation import normalize_name
        from db.migrate import upgrade
        from db.session import dispose_engines, get_engine

        print(f"database: {make_url(url).render_as_string(hide_password=True)}")
        upgrade(url=url)
        ids = _seed(args.patients, args.batch)
        with get_engine().begin() as conn:
            conn.execute(text("ANALYZE"))  # fresh statistics, as autovacuum / a DBA would give
        actor = create_user("bench", "benchmark-only password", role="doctor")

        rng = random.Random(7)
        n = max(args.queries, 200)
        exact = [rng.choice(ids) for _ in range(n)]
        # Prefixes a typing user produces: 'ED-10', 'WD-1004', ... (7 to 10 characters).
        prefixes = [rng.choice(ids)[: rng.randint(5, 9)] for _ in range(n)]
        given = [g for names in GIVEN_NAMES.values() for g in names]
        family_prefixes = [normalize_name(rng.choice(FAMILY_NAMES))[: rng.randint(3, 6)] for _ in range(n)]
        full_names = [f"{rng.choice(given)[:4]} {rng.choice(FAMILY_NAMES)[:3]}" for _ in range(n)]

        print(f"\n{args.patients:,} patients, {n} random queries per kind (limit 20 results):")
        _time("exact ID  search_patients", exact, lambda q: records.search_patients(q))
        _time("open record  get_record (+audit)", exact, lambda q: records.get_record(q, actor))
        _time("ID prefix  search_patients", prefixes, lambda q: records.search_patients(q))
        _time("family-name prefix  search", family_prefixes, lambda q: records.search_patients(q))
        _time("given + family  search", full_names, lambda q: records.search_patients(q))

        if args.explain:
            _explain(get_engine(), url)
        dispose_engines()
    finally:
        get_settings.cache_clear()
        cleanup()
    return 0


def _explain(engine: Engine, url: str) -> None:
    """Print the plans of the statements the searches run (they must be index range scans, no sort)."""
    from db import repository as repo

    prefix = "EXPLAIN QUERY PLAN " if url.startswith("sqlite") else "EXPLAIN "

    def name_query(tokens: list[str]) -> Any:
        params: dict[str, Any] = {"limit": 20}
        for index, reading in enumerate(repo._name_readings(tokens)):
            if reading.given is not None:
                params.update(repo._bounds(f"b{index}_g", reading.given))
            if reading.family is not None:
                params.update(repo._bounds(f"b{index}_f", reading.family))
        return repo._name_search_statement(len(tokens)).params(params)

    statements = {
        "ID prefix 'ED-10012'": repo._ID_PREFIX.params(repo._bounds("id", "ED-10012")).limit(20),
        "name 'smi'": name_query(["smi"]),
        "name 'joh smi'": name_query(["joh", "smi"]),
    }
    with engine.connect() as conn:
        for label, stmt in statements.items():
            compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
            print(f"\n-- plan: {label}")
            for row in conn.execute(text(prefix + str(compiled))):
                print("  ", " | ".join(str(c) for c in row))


if __name__ == "__main__":
    sys.exit(main())
