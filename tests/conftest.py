"""Shared fixtures: an Alembic-migrated database (SQLite and PostgreSQL) and factories.

Backends: every test that uses ``database`` (directly or through ``make_user``/``make_patient``) runs once
on a temporary SQLite file and once on PostgreSQL. PostgreSQL comes from ``CXR_TEST_POSTGRES_URL``
(default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each test session creates its own
schema there, migrates it, and drops it at the end, so it never touches other data in that database.
If the server is unreachable the PostgreSQL tests fail; ``CXR_TEST_POSTGRES=0`` skips them instead.
Select one backend with ``-k sqlite`` or ``-k postgresql``.

Each test starts from empty tables (rows are deleted before it runs); the schema is migrated once per
session per backend. ``get_settings()`` points at the test database for the test's duration.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression
from sqlalchemy import delete, text

from core import auth
from core.auth import AuthenticatedUser, create_user
from core.config import get_settings
from core.records import (
    AllergyInput,
    ConditionInput,
    Demographics,
    PatientRecord,
    VisitInput,
    add_allergy,
    add_condition,
    add_visit,
    create_patient,
)
from db.base import Base
from db.migrate import upgrade
from db.session import dispose_engines, get_engine
from tests.support.db import (
    FAST_PWD_CONTEXT,
    TEST_PASSWORD,
    TestAccount,
    TestDatabase,
    create_postgres_schema,
    drop_postgres_schema,
)

# A bug inside a page is shown to the doctor as a plain sentence (ui/errors.py); in tests it is raised as well,
# so `assert not at.exception` still catches it (the dashboards the browser tests start inherit this too).
os.environ["CXR_RERAISE_ERRORS"] = "1"

# ------------------------------------------------------------------ native load order


def pytest_configure(config: pytest.Config) -> None:
    """Load torch's compiler first when the run may include the ``slow`` (training) tests.

    TensorFlow and Triton (which torch imports for its compiler, and Ultralytics' training reaches through
    torch.use_deterministic_algorithms) each bring their own LLVM; Triton loaded after TensorFlow segfaults the
    process, the other way round works. The product never needs both in one process (serving uses LiteRT and
    ONNX Runtime; training runs one model per command), but one pytest process can collect the Keras tests
    (test_effnet_port imports TensorFlow at collection) and then train the detector (the ``slow`` tests), so
    Triton must be loaded before collection starts. The import costs about 4 s, so it is skipped when the mark
    expression deselects ``slow`` (``make test-fast``); no other test reaches Triton.
    """
    markexpr = config.option.markexpr
    if markexpr and not Expression.compile(markexpr).evaluate(lambda name, **_kwargs: name == "slow"):
        return
    import torch._inductor.config  # noqa: F401


def _use_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("CXR_DATABASE_URL", url)
    get_settings.cache_clear()


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session", autouse=True)
def no_keras_reset_after_script_runs() -> Iterator[None]:
    """Keep Streamlit from resetting Keras after every AppTest script run.

    After each script run Streamlit calls ``keras.backend.clear_session()`` whenever ``keras`` is imported,
    and that runs a full ``gc.collect()``: in a test process that has loaded TensorFlow and torch (the Keras
    tests, ``test_effnet_port`` at collection) that costs ~0.4 s per run, and made the page tests 10-20x
    slower than alone. The dashboard never has Keras loaded (it serves through LiteRT), so the tests lose
    nothing by skipping it; matplotlib figures are still closed as Streamlit does.
    """
    from streamlit.runtime.scriptrunner import script_runner

    def close_pyplot_figures() -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close("all")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(script_runner, "_clean_problem_modules", close_pyplot_figures)
        yield


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2 parameters for every test (see FAST_PWD_CONTEXT); real ones are tested explicitly."""
    monkeypatch.setattr(auth, "pwd_context", FAST_PWD_CONTEXT)
    auth._dummy_hash.cache_clear()
    auth.THROTTLE.clear()  # the per-client login throttle is process-wide: no test inherits another's failures


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def migrated_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestDatabase]:
    """A database migrated to head once per test session and backend."""
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    else:
        schema, url = create_postgres_schema()
    try:
        upgrade(url=url)
        yield TestDatabase(request.param, url, schema)
    finally:
        dispose_engines()
        if schema is not None:
            drop_postgres_schema(schema)


@pytest.fixture
def database(
    migrated_database: TestDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[TestDatabase]:
    """The migrated database with empty tables, set as the application's database for this test."""
    monkeypatch.setenv("CXR_VAR_DIR", str(tmp_path / "var"))
    _use_database(monkeypatch, migrated_database.url)
    with get_engine(migrated_database.url).begin() as conn:
        if migrated_database.backend == "postgresql":
            # audit_log is append-only (revision 0005's triggers): only a superuser switching triggers off
            # for this transaction may empty it, as a test does between tests.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
    yield migrated_database
    get_settings.cache_clear()


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """``configure(lockout_attempts=3, ...)``: set ``CXR_*`` settings for this test and re-read them."""

    def apply(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"CXR_{name.upper()}", str(value))
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()


@pytest.fixture
def make_user(database: TestDatabase) -> Callable[..., TestAccount]:  # noqa: ARG001 - users go there
    """Factory: ``make_user(username=None, role="doctor", password=TEST_PASSWORD, full_name=None)``."""
    counter = itertools.count(1)

    def make(
        username: str | None = None,
        *,
        role: str = "doctor",
        password: str = TEST_PASSWORD,
        full_name: str | None = None,
    ) -> TestAccount:
        name = username or f"{role}{next(counter)}"
        user = create_user(name, password, role=role, full_name=full_name or f"Test {name}")
        return TestAccount(user, password)

    return make


@pytest.fixture
def doctor(make_user: Callable[..., TestAccount]) -> AuthenticatedUser:
    """A signed-in doctor (actor for record services)."""
    return make_user("dr.house", role="doctor").user


@pytest.fixture
def admin(make_user: Callable[..., TestAccount]) -> AuthenticatedUser:
    """A signed-in admin."""
    return make_user("root.admin", role="admin").user


@pytest.fixture
def make_patient(
    database: TestDatabase,  # noqa: ARG001 - requested for its effect: the patients go there
    make_user: Callable[..., TestAccount],
) -> Callable[..., PatientRecord]:
    """Factory creating a patient (and optional history) through the services; returns its record.

    ``make_patient("ED-1", given_name=..., visits=[VisitInput(...)], allergies=[...], conditions=[...])``.
    Writes the same audit rows a doctor's actions would (as user ``factory``), but no 'view' row.
    """
    counter = itertools.count(1)
    actor: list[AuthenticatedUser] = []

    def make(
        patient_id: str | None = None,
        *,
        given_name: str = "Ada",
        family_name: str = "Lovelace",
        sex: str = "female",
        date_of_birth: date = date(1960, 5, 17),
        phone: str = "",
        email: str = "",
        address: str = "",
        special_notes: str = "",
        visits: Iterable[VisitInput] = (),
        allergies: Iterable[AllergyInput] = (),
        conditions: Iterable[ConditionInput] = (),
        actor_user: AuthenticatedUser | None = None,
    ) -> PatientRecord:
        if actor_user is None:
            if not actor:
                actor.append(make_user("factory").user)
            actor_user = actor[0]
        demographics = Demographics(given_name, family_name, sex, date_of_birth, phone, email, address)
        key = patient_id or f"T-{next(counter):05d}"
        record = create_patient(key, demographics, actor_user, special_notes=special_notes)
        made_visits = [add_visit(key, v, actor_user) for v in visits]
        made_allergies = [add_allergy(key, a, actor_user) for a in allergies]
        made_conditions = [add_condition(key, c, actor_user) for c in conditions]
        return replace(
            record,
            visits=tuple(sorted(made_visits, key=lambda v: (v.visit_date, v.id), reverse=True)),
            allergies=tuple(made_allergies),
            conditions=tuple(made_conditions),
        )

    return make
