"""Two dashboard processes on one PostgreSQL database and one data directory, taking uploads at once (issue 13):
two `streamlit run serve.py` servers, a doctor in chromium on each, the same films uploaded into the same
records at the same moment. Afterwards every saved study's files are on disk, each film is one study per
patient, and nothing is left unreferenced but what a failed save may leave for `storage gc`."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.auth import create_user
from core.imaging import storage
from core.records import Demographics, create_patient
from db import models
from db import repository as repo
from db.migrate import upgrade
from db.session import session_scope
from tests.support.browser import (
    STEP_MS,
    Environment,
    chromium_page,
    log_in,
    running_streamlit,
    throwaway_env,
)
from tests.support.db import create_postgres_schema, drop_postgres_schema
from tests.support.xray_samples import PNG, ROUTINE_PNG

pytestmark = pytest.mark.browser

USERNAME = "dr.two.dashboards"
PASSWORD = "a long two-dashboards test password"  # test-only account in a throwaway schema
PATIENTS = ("ED-7001", "ED-7002")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    var_dir = tmp_path_factory.mktemp("two-dashboards")
    schema, url = create_postgres_schema("cxr_two_dash")
    env = throwaway_env(var_dir)
    env.pop("DATABASE_URL", None)
    env["CXR_DATABASE_URL"] = url
    try:
        with Environment({**env, "DATABASE_URL": url}):
            upgrade(url=url)
            doctor = create_user(USERNAME, PASSWORD, role="doctor", full_name="Dr Two")
            for pid, given in zip(PATIENTS, ("Ada", "Alan"), strict=True):
                create_patient(pid, Demographics(given, "Parallel", "female", date(1960, 1, 1)), doctor)
        yield {**env, "DATABASE_URL": url}
    finally:
        drop_postgres_schema(schema)


def _upload(
    url: str, patient_id: str, films: tuple[Path, ...], start: threading.Barrier, errors: list[str]
) -> None:
    from playwright.sync_api import expect

    try:
        with chromium_page(1400, 1100) as page:
            log_in(page, url, USERNAME, PASSWORD)
            page.get_by_label("Patient ID or name").fill(patient_id)
            page.get_by_role("button", name="Search").click()
            page.get_by_role("button", name="Open").click()
            page.get_by_role("link", name="Upload an X-ray").click()
            expect(page.locator("input[type=file]")).to_have_count(1, timeout=STEP_MS)
            start.wait(timeout=STEP_MS / 1000)  # both doctors upload at the same moment
            for film in films:
                uploader = page.locator("input[type=file]")
                expect(uploader).to_have_count(1, timeout=STEP_MS)  # not mid-rerun
                uploader.set_input_files(str(film))
                # the result line names the film shown (saved now, or already saved by the other dashboard)
                expect(page.get_by_text(re.compile(re.escape(film.name) + " ·")).first).to_be_visible(
                    timeout=STEP_MS
                )
                expect(page.get_by_text("Traceback")).to_have_count(0)
    except Exception as exc:  # reported by the test, with which server it was
        errors.append(f"{url} {patient_id}: {exc}")


def test_two_dashboards_take_the_same_films_at_once(env: dict[str, str], tmp_path: Path) -> None:
    films = (PNG, ROUTINE_PNG)
    with (
        running_streamlit(env, tmp_path / "a.log") as url_a,
        running_streamlit(env, tmp_path / "b.log") as url_b,
    ):
        start = threading.Barrier(4)
        errors: list[str] = []
        workers = [
            threading.Thread(target=_upload, args=(url, pid, films, start, errors))
            for url in (url_a, url_b)
            for pid in PATIENTS
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert errors == []

    with Environment(env), session_scope() as s:
        per_patient = dict(
            s.execute(
                select(models.Patient.patient_id, func.count(models.Study.id))
                .join(models.Study, models.Study.patient_pk == models.Patient.id)
                .group_by(models.Patient.patient_id)
            ).all()
        )
        paths = repo.stored_paths(s)
        store = storage.FileStore()
        missing = [p for p in paths if not store.exists(p)]
    assert per_patient == {pid: len(films) for pid in PATIENTS}  # each film once per patient, 4 uploads each
    assert missing == []
