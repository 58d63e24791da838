"""The X-ray flow in a real browser (Playwright + Debian's chromium against ``streamlit run app.py``).

Logs in, opens a patient, uploads a sample PNG and the sample DICOM (whose PatientID differs from the
patient's: the mismatch is confirmed) and a normal film (routine), sees the likely findings (and the boxes, when a detector is
active), then finds both studies in the imaging history (newest first) and in the emergency worklist in
triage order. Uses the active models of the models directory, like the app. Set
``CXR_BROWSER_SCREENSHOTS=/some/dir`` to keep screenshots of the result, history and worklist pages.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from core.auth import create_user
from core.records import Demographics, create_patient
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
from tests.support.xray_samples import DICOM, DICOM_PATIENT_ID, PNG, ROUTINE_PNG, png_variant

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
USERNAME = "dr.xray.browser"
PASSWORD = "a long x-ray browser-test password"  # test-only account in a throwaway database
PATIENT_ID = "ED-4343"
OTHER_PATIENT = "ED-5151"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A migrated SQLite database with a doctor, the patient, and another patient's two waiting films."""
    var_dir = tmp_path_factory.mktemp("browser-xray")
    env = throwaway_env(var_dir)
    with Environment(env):
        from core.xray import diagnosis

        upgrade()
        doctor = create_user(USERNAME, PASSWORD, role="doctor", full_name="Dr Xray")
        create_patient(PATIENT_ID, Demographics("Grace", "Hopper", "female", date(1956, 12, 9)), doctor)
        create_patient(OTHER_PATIENT, Demographics("Alan", "Turing", "male", date(1954, 6, 23)), doctor)
        # Another patient's films, one urgent and one routine, both waiting longer than today's uploads.
        for index, (level, minutes) in enumerate((("urgent", 120), ("routine", 240))):
            view = diagnosis.diagnose_upload(OTHER_PATIENT, png_variant(index), f"seed-{level}.png", doctor)
            with session_scope() as s:
                s.execute(
                    update(models.Diagnosis)
                    .where(models.Diagnosis.study_id == view.study_id)
                    .values(triage_level=level)
                )
                s.execute(
                    update(models.Study)
                    .where(models.Study.id == view.study_id)
                    .values(uploaded_at=utcnow() - timedelta(minutes=minutes))
                )

    with running_streamlit(env, var_dir / "streamlit.log") as url:
        yield Server(url, env)


@pytest.fixture
def page(server: Server) -> Iterator[object]:  # noqa: ARG001 - the page needs the server running
    with chromium_page(1400, 1100) as page:
        yield page


def _screenshot(page, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    # Streamlit scrolls inside its own container, so a full-page shot is one viewport: make it tall.
    page.set_viewport_size({"width": 1400, "height": 2000})
    page.wait_for_timeout(1500)  # let plotly draw
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1100})
    keep = os.environ.get("CXR_BROWSER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / name)


def _badge(level: str) -> re.Pattern[str]:
    """The triage badge's text: its material icon's name, then the level."""
    return re.compile(rf"^([a-z_]+ )?{level.capitalize()}$")


def _ordered_ids(page, prefix: str) -> list[int]:  # type: ignore[no-untyped-def]
    """Study IDs of the buttons keyed ``prefix<id>``, in page order. Streamlit gives each keyed widget the
    class ``st-key-<key>`` with every character other than letters, digits, _ and - replaced by -."""
    prefix = re.sub(r"[^a-zA-Z0-9_-]", "-", prefix)
    classes = page.locator(f'[class*="st-key-{prefix}"]').evaluate_all("els => els.map(e => e.className)")
    return [int(m.group(1)) for c in classes if (m := re.search(rf"st-key-{re.escape(prefix)}(\d+)", c))]


def test_upload_png_and_dicom_then_history_and_worklist(server: Server, page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    from core.ml.registry import read_registry

    log_in(page, server.url, USERNAME, PASSWORD)
    page.get_by_label("Patient ID or name").fill(PATIENT_ID)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_role("heading", name="HOPPER, Grace")).to_be_visible(timeout=STEP_MS)
    page.get_by_role("link", name="Upload an X-ray").click()
    expect(page.get_by_text(f"HOPPER, Grace · {PATIENT_ID}")).to_be_visible(timeout=STEP_MS)

    # The PNG: saved, with its top three findings and (when a detector is active) its boxes.
    page.locator("input[type=file]").set_input_files(str(PNG))
    expect(page.get_by_text("Analysed and saved in")).to_be_visible(timeout=STEP_MS)
    with Environment(server.env):
        from core.xray import diagnosis

        [png_study] = diagnosis.patient_history(PATIENT_ID)
        png_view = diagnosis.get_diagnosis(png_study.study_id, _doctor(), audit=False)
        detector = bool(read_registry().get("detector"))
    for name in png_view.likely:
        f = next(f for f in png_view.findings if f.name == name)
        expect(page.locator("p", has_text=f"{f.label} {f.probability:.0%}").first).to_be_visible()
    expect(page.get_by_text("Likely findings")).to_be_visible()
    # an abnormal sample (pneumothorax and pneumonia) is not routine
    assert png_view.triage_level != "routine"
    expect(page.get_by_text(_badge(png_view.triage_level)).first).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=STEP_MS)  # the zoomable film
    if detector:
        for box in png_view.boxes:
            expect(page.get_by_text(f"{box.label} {box.confidence:.0%}").first).to_be_visible()
    else:
        expect(page.get_by_text("No detector model is active")).to_be_visible()
    _screenshot(page, tmp_path, "cxr_xray_result.png")

    # The report: made when the button is clicked, a one-page PDF of this film.
    with page.expect_download(timeout=STEP_MS) as download:
        page.get_by_role("button", name="Report (PDF)").click()
    pdf = Path(download.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF") and download.value.suggested_filename.endswith(".pdf")
    from pypdf import PdfReader

    report_text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert PATIENT_ID in report_text and "Decision aid, not a diagnosis" in report_text

    # A normal sample (NIH "No Finding", a test-split film the model reads as likely normal): routine.
    page.locator("input[type=file]").set_input_files(str(ROUTINE_PNG))
    expect(page.get_by_text("Analysed and saved in")).to_be_visible(timeout=STEP_MS)
    expect(page.get_by_text(_badge("routine")).first).to_be_visible(timeout=STEP_MS)
    expect(page.get_by_text("likely normal").first).to_be_visible()
    _screenshot(page, tmp_path, "cxr_xray_routine.png")

    # The DICOM names another patient: a warning, nothing saved until the doctor confirms.
    page.locator("input[type=file]").set_input_files(str(DICOM))
    expect(page.get_by_text(f"names patient ID '{DICOM_PATIENT_ID}'")).to_be_visible(timeout=STEP_MS)
    page.get_by_text(f"I confirm this image belongs to patient {PATIENT_ID}").click()
    page.get_by_role("button", name="Analyse and save").click()
    expect(page.get_by_text("Analysed and saved in")).to_be_visible(timeout=STEP_MS)
    expect(page.get_by_text("on the uploader's confirmation")).to_be_visible()

    # History: the three films, newest (the DICOM) first.
    page.get_by_role("link", name="Imaging history").first.click()
    expect(page.get_by_text("3 films, newest first")).to_be_visible(timeout=STEP_MS)
    with Environment(server.env):
        history = [s.study_id for s in diagnosis.patient_history(PATIENT_ID)]
        expected_worklist = [item.study_id for item in diagnosis.worklist()]
    expect(page.locator('[class*="st-key-xr-open-"]')).to_have_count(len(history), timeout=STEP_MS)
    assert _ordered_ids(page, "xr.open.") == history and history[2] == png_study.study_id
    _screenshot(page, tmp_path, "cxr_history.png")

    # Worklist: the seeded urgent film first, the seeded routine one last, today's films by triage.
    page.get_by_role("link", name="Emergency worklist").click()
    expect(page.get_by_role("heading", name="Emergency worklist")).to_be_visible(timeout=STEP_MS)
    # the rows arrive over the websocket one after the other: wait for all of them
    expect(page.locator('[class*="st-key-wl-open-"]')).to_have_count(len(expected_worklist), timeout=STEP_MS)
    shown = _ordered_ids(page, "wl.open.")
    assert shown == expected_worklist and set(history) <= set(shown) and len(shown) == 5
    _screenshot(page, tmp_path, "cxr_worklist.png")
    page.locator(f".st-key-wl-open-{png_study.study_id} button").click()
    expect(page.get_by_text(f"HOPPER, Grace · {PATIENT_ID}")).to_be_visible(timeout=STEP_MS)
    expect(page.get_by_text("Likely findings")).to_be_visible(timeout=STEP_MS)


def _doctor():  # type: ignore[no-untyped-def]
    from core.auth import find_active_user

    return find_active_user(USERNAME)
