"""The result page in a real browser (Playwright + Debian's chromium at 1440 x 900 and 1920 x 1080).

After an upload the film is the first thing under the patient header: its top edge inside the first viewport
and its height at least 80 % of it, growing with the screen (at 1920 x 1080 at least 75 % of the viewport's
height), with the read beside it. The boxes and their labels are overlays (plotly
shapes and annotations, not pixels): switching them off removes them from the figure's DOM. The previous film
is one click away, side by side with the change of each finding in words and percentages. A viewer click after
the session was revoked shows the login form (the result reruns as a fragment, which checks the sign-in too).

Set ``CXR_BROWSER_SCREENSHOTS=docs/screenshots`` to keep the screenshots (the README shows them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from core.auth import create_user
from core.records import AllergyInput, Demographics, VisitInput, add_allergy, add_visit, create_patient
from db import models
from db.base import utcnow
from db.migrate import upgrade
from db.session import session_scope
from tests.support.browser import (
    STEP_MS,
    Environment,
    Server,
    chromium_page,
    log_in,
    running_streamlit,
    throwaway_env,
)
from tests.support.xray_samples import SAMPLES, png_variant

pytestmark = pytest.mark.browser

USERNAME = "dr.result.browser"
PASSWORD = "a long result-page browser-test password"  # test-only account in a throwaway database
PATIENT_ID = "ED-6262"
BOXED = SAMPLES / "00005869_001.png"  # the active detector marks regions on this one (Lung Opacity)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A migrated SQLite database with a doctor and a patient with a visit, an allergy and an earlier film."""
    var_dir = tmp_path_factory.mktemp("browser-result")
    env = throwaway_env(var_dir)
    with Environment(env):
        from core.xray import diagnosis

        upgrade()
        doctor = create_user(USERNAME, PASSWORD, role="doctor", full_name="Dr Result")
        create_patient(PATIENT_ID, Demographics("Rosalind", "Franklin", "female", date(1950, 7, 25)), doctor)
        add_visit(PATIENT_ID, VisitInput(utcnow().date(), "shortness of breath"), doctor)
        add_allergy(PATIENT_ID, AllergyInput("Penicillin", "drug", "severe", "rash"), doctor)
        earlier = diagnosis.diagnose_upload(PATIENT_ID, png_variant(7), "last-year.png", doctor)
        with session_scope() as s:
            s.execute(
                update(models.Study)
                .where(models.Study.id == earlier.study_id)
                .values(uploaded_at=utcnow() - timedelta(days=365))
            )
    with running_streamlit(env, var_dir / "streamlit.log") as url:
        yield Server(url, env)


def _keep(page, name: str) -> None:  # type: ignore[no-untyped-def]
    keep = os.environ.get("CXR_BROWSER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(1500)  # let plotly draw
        page.screenshot(path=str(Path(keep) / name))


def _film_box(page) -> dict[str, float]:  # type: ignore[no-untyped-def]
    box = page.locator(".js-plotly-plot").first.bounding_box()
    assert box is not None
    return box


def _overlay_count(page, selector: str) -> int:  # type: ignore[no-untyped-def]
    return int(page.locator(".js-plotly-plot").first.locator(selector).count())


SIZES = ((1440, 900), (1920, 1080))


def test_the_film_comes_first_large_with_overlays_that_toggle(server: Server) -> None:
    from playwright.sync_api import expect

    with chromium_page(*SIZES[0]) as page:
        log_in(page, server.url, USERNAME, PASSWORD)
        expect(page.get_by_label("Patient ID or name")).to_be_visible(timeout=STEP_MS)
        page.get_by_label("Patient ID or name").fill(PATIENT_ID)
        page.get_by_role("button", name="Search").click()
        page.get_by_role("button", name="Open").click()
        expect(page.get_by_role("heading", name="FRANKLIN, Rosalind")).to_be_visible(timeout=STEP_MS)
        page.get_by_role("link", name="Upload an X-ray").click()
        page.locator("input[type=file]").set_input_files(str(BOXED))
        expect(page.get_by_text("Analysed and saved in")).to_be_visible(timeout=STEP_MS)
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=STEP_MS)
        with Environment(server.env):
            from core.xray import diagnosis

            newest = diagnosis.patient_history(PATIENT_ID)[0]
            view = diagnosis.get_diagnosis(newest.study_id, _doctor(), audit=False)
        assert view.original_filename == BOXED.name and view.boxes  # the detector marked a region

        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(1500)  # let plotly redraw at the new size
            # The film: top edge in the first viewport, at least 80 % of 900 px tall, the read beside it; it
            # grows with the screen (at 1920 x 1080 at least 75 % of the viewport's height, 80 % asked).
            film = _film_box(page)
            print(f"\n{width}x{height}: film top {film['y']:.0f} px, height {film['height']:.0f} px")  # noqa: T201
            assert 0 <= film["y"] < height and film["height"] >= 0.8 * 900
            assert film["height"] >= 0.75 * height
            read = page.get_by_text("Overall:").first.bounding_box()
            assert read is not None and read["x"] > film["x"] + film["width"] / 2
            # beside the film, not under it (how far down depends on the notes above it: upload message,
            # uncertain warning, allergies)
            assert read["y"] + read["height"] < film["y"] + film["height"]
            # Context beside the film: the visit and its reason, the allergies banner.
            expect(page.get_by_text("shortness of breath").first).to_be_visible()
            expect(page.get_by_text("Allergies:").first).to_be_visible()
            _keep(page, f"result_{width}x{height}.png")
        page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})

        # Boxes and labels are overlays: switching them off takes them out of the figure, not the pixels.
        boxes = page.locator(".js-plotly-plot .shapelayer path")
        labels = page.locator(".js-plotly-plot .annotation")
        expect(boxes).to_have_count(len(view.boxes), timeout=STEP_MS)
        expect(labels).to_have_count(len(view.boxes), timeout=STEP_MS)
        page.get_by_text("Labels", exact=True).click()
        expect(labels).to_have_count(0, timeout=STEP_MS)
        expect(boxes).to_have_count(len(view.boxes))
        page.get_by_text("Boxes", exact=True).click()
        expect(boxes).to_have_count(0, timeout=STEP_MS)
        page.get_by_text("Boxes", exact=True).click()
        page.get_by_text("Labels", exact=True).click()
        expect(boxes).to_have_count(len(view.boxes), timeout=STEP_MS)
        expect(labels).to_have_count(len(view.boxes), timeout=STEP_MS)
        # One image under the overlays: the film itself, never a copy with boxes burned in.
        assert _overlay_count(page, "image") == 1

        # The previous film, one click away: side by side, changes in words and percentages.
        page.get_by_role("button", name="Previous film").click()
        expect(page.get_by_text("This film", exact=True)).to_be_visible(timeout=STEP_MS)
        expect(page.locator(".js-plotly-plot")).to_have_count(2, timeout=STEP_MS)
        _keep(page, "compare_1440x900.png")
        page.get_by_role("button", name="Back to this film").click()
        expect(page.locator(".js-plotly-plot")).to_have_count(1, timeout=STEP_MS)

        # The film and the read rerun on their own (a fragment), and each such run checks the sign-in as a
        # whole page run does: once an administrator revokes the session, the next viewer click shows the
        # login form, not the film.
        with Environment(server.env):
            from core import web_sessions

            admin = create_user("admin.result.browser", PASSWORD, role="admin", full_name="Admin")
            assert web_sessions.revoke_user(USERNAME, admin) >= 1
        page.get_by_text("Invert", exact=True).click()
        expect(page.get_by_label("Username", exact=True)).to_be_visible(timeout=STEP_MS)
        expect(page.locator(".js-plotly-plot")).to_have_count(0)


def _doctor():  # type: ignore[no-untyped-def]
    from core.auth import find_active_user

    return find_active_user(USERNAME)
