"""The first visitor of a freshly started server who arrives by a link gets the login form, then that page.

Streamlit routes the first script run of a process v1-style (by file name in ``pages/``) until the first
``st.navigation`` call; serve.py switches that off at start. Without it, this test's first request got "Page
not found" over the login form (seen by a doctor following a link from another hospital system).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from core.auth import create_user
from core.records import Demographics, create_patient
from db.migrate import upgrade
from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    STEP_MS,
    Environment,
    Server,
    log_in,
    running_streamlit,
    throwaway_env,
)

pytestmark = pytest.mark.browser

USERNAME = "dr.first.link"
PASSWORD = "a long first-link browser-test password"  # test-only account in a throwaway database
PATIENT_ID = "ED-100001"


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server nobody has visited yet (no health check opens a session)."""
    var_dir = tmp_path_factory.mktemp("browser-first-link")
    env = throwaway_env(var_dir)
    with Environment(env):
        upgrade()
        doctor = create_user(USERNAME, PASSWORD, role="doctor", full_name="Dr First Link")
        create_patient(PATIENT_ID, Demographics("Grace", "Hopper", "female", date(1956, 12, 9)), doctor)
    with running_streamlit(env, var_dir / "streamlit.log") as url:
        yield Server(url, env)


def test_a_link_as_a_fresh_servers_first_request_shows_the_login_then_the_patient(
    fresh_server: Server,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{fresh_server.url}/patient?patient={PATIENT_ID}")
            expect(page.get_by_label("Password", exact=True)).to_be_visible(timeout=STEP_MS)
            page.wait_for_timeout(1500)  # a "Page not found" dialog arrives with the first script run
            assert page.get_by_text("Page not found").count() == 0
            log_in(page, fresh_server.url, USERNAME, PASSWORD, path=f"patient?patient={PATIENT_ID}")
            expect(page.get_by_text(PATIENT_ID).first).to_be_visible(timeout=STEP_MS)
            expect(page.get_by_text("HOPPER").first).to_be_visible(timeout=STEP_MS)
            assert page.get_by_text("Page not found").count() == 0
        finally:
            chromium.close()
