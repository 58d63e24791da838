"""The dashboard in a real browser: ``streamlit run app.py`` driven by Playwright with Debian's chromium.

AppTest (test_pages.py) simulates the frontend; this checks what it cannot: the page really arrives over
the websocket, the widgets are usable by a person, and a click ends up in the database.
The server gets its own Alembic-migrated SQLite file, seeded with one doctor and one patient.
Set ``CXR_BROWSER_SCREENSHOTS=/some/dir`` to keep a screenshot of the record page.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from core.auth import create_user
from core.records import AllergyInput, Demographics, add_allergy, create_patient
from db import models
from db.migrate import upgrade
from db.session import session_scope
from tests.support.browser import (
    STEP_MS,
    Environment,
    choose_option,
    chromium_page,
    log_in,
    running_streamlit,
    throwaway_env,
)
from tests.support.xray_samples import png_variant

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
USERNAME = "dr.browser"
PASSWORD = "a long browser-test password"  # test-only account in a throwaway database
PATIENT_ID = "ED-4242"


@dataclass(frozen=True)
class Server:
    url: str
    database_url: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A migrated, seeded SQLite database (a doctor, a patient with a film waiting to be read) and
    ``streamlit run app.py`` serving it."""
    var_dir = tmp_path_factory.mktemp("browser-var")
    database_url = f"sqlite:///{var_dir / 'cxr.db'}"
    env = throwaway_env(var_dir)

    # Seed in this process through the services, pointed at the server's database.
    with Environment(env):
        upgrade(url=database_url)
        doctor = create_user(USERNAME, PASSWORD, role="doctor", full_name="Dr Browser")
        create_patient(PATIENT_ID, Demographics("Grace", "Hopper", "female", date(1956, 12, 9)), doctor)
        add_allergy(PATIENT_ID, AllergyInput("Latex", "other", "mild", "contact dermatitis"), doctor)
        from core.xray import diagnosis  # late: the imaging stack is needed here only

        diagnosis.diagnose_upload(PATIENT_ID, png_variant(7), "waiting.png", doctor)  # a film waiting

    with running_streamlit(env, var_dir / "streamlit.log") as url:
        yield Server(url, database_url)


@pytest.fixture
def page(server: Server) -> Iterator[object]:  # noqa: ARG001 - the page needs the server running
    with chromium_page(1400, 1000) as page:
        yield page


def _allergies_in_db(database_url: str) -> list[str]:
    with session_scope(database_url) as s:
        patient = s.query(models.Patient).filter_by(patient_id=PATIENT_ID).one()
        return sorted(a.substance for a in patient.allergies)


def test_log_in_find_patient_by_id_and_add_an_allergy(server: Server, page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    log_in(page, server.url, USERNAME, PASSWORD)
    expect(page.get_by_role("heading", name="Patients", exact=True)).to_be_visible(timeout=STEP_MS)
    expect(page.get_by_text("Dr Browser")).to_be_visible()

    page.get_by_label("Patient ID or name").fill(PATIENT_ID.lower())
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("1 match")).to_be_visible(timeout=STEP_MS)
    page.get_by_role("button", name="Open").click()

    expect(page.get_by_role("heading", name="HOPPER, Grace")).to_be_visible(timeout=STEP_MS)
    page.get_by_role("tab", name="Allergies").click()
    page.get_by_text("Add allergy").first.click()  # the expander
    form = page.get_by_test_id("stForm").filter(has=page.get_by_label("Substance *"))
    form.get_by_label("Substance *").fill("Penicillin")
    form.get_by_label("Reaction").fill("anaphylaxis")
    choose_option(page, form.get_by_label("Severity"), "Severe")
    form.get_by_role("button", name="Add allergy").click()

    expect(page.get_by_text("Allergy added.")).to_be_visible(timeout=STEP_MS)
    expect(page.get_by_role("tab", name="Allergies", selected=True)).to_be_visible()
    banner = page.get_by_test_id("stAlert").filter(has_text="Allergies:")
    expect(banner).to_contain_text("Penicillin (Severe)")
    expect(banner).to_contain_text("Latex")
    assert _allergies_in_db(server.database_url) == ["Latex", "Penicillin"]

    shot = tmp_path / "record.png"
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("CXR_BROWSER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "cxr_record_page.png")


def test_a_deep_link_shows_the_login_form_then_the_page(server: Server, page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(f"{server.url}/audit-log")
    expect(page.get_by_label("Username", exact=True)).to_be_visible(timeout=STEP_MS)
    expect(page.get_by_role("heading", name="Audit log")).to_have_count(0)
    # A bookmarked record page: the login form first, then the page that was asked for.
    log_in(page, server.url, USERNAME, PASSWORD, "patient")
    expect(page.get_by_text("No patient selected.")).to_be_visible(timeout=STEP_MS)


def test_the_landing_page_focuses_the_search_and_lists_the_waiting_films(server: Server, page) -> None:  # type: ignore[no-untyped-def]
    """Issue 12: after login the search box has the focus (type an ID at once) and the films waiting to be
    read are listed under it, the patient's name a link to the film."""
    from playwright.sync_api import expect

    log_in(page, server.url, USERNAME, PASSWORD)
    expect(page.get_by_role("heading", name="Patients", exact=True)).to_be_visible(timeout=STEP_MS)
    expect(page.get_by_label("Patient ID or name")).to_be_focused(timeout=STEP_MS)
    films = page.locator(".st-key-home-films")
    expect(page.get_by_text("1 film waiting")).to_be_visible(timeout=STEP_MS)
    film = films.get_by_role("link", name=f"{PATIENT_ID} · HOPPER, Grace")
    expect(film).to_be_visible(timeout=STEP_MS)
    expect(page.get_by_label("Patient ID or name")).to_be_focused()  # the list did not take the focus
    keep = os.environ.get("CXR_BROWSER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(keep) / "cxr_landing_page.png"))
    film.click()
    expect(page.get_by_text("Overall:", exact=True)).to_be_visible(timeout=STEP_MS)  # the film's result
