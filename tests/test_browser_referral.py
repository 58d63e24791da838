"""The referral in a real browser (Playwright + Debian's chromium against ``streamlit run``): an ambulance crew
registers a patient quickly, uploads a film, refers it from the Referrals page (the proposed three departments),
two department doctors in two other browser contexts answer (one declines with a reason, one accepts), and the
crew's screen, polling, shows the acceptance and the time to first answer. Then the database: the referral is
accepted by the second department, the third one's target closed. Set ``CXR_BROWSER_SCREENSHOTS=DIR`` to keep
the screenshots (the README's docs/screenshots/referral_*.png come from there)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from core.audit import SYSTEM
from core.auth import create_user
from db import models
from db.migrate import upgrade
from db.session import session_scope
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
from tests.support.xray_samples import PNG

pytestmark = pytest.mark.browser

PASSWORD = "a long referral browser-test password"  # test-only accounts in a throwaway database
CREW, DECLINER, ACCEPTER = "crew.browser", "dr.decline", "dr.accept"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A migrated SQLite database with the committed sites, a crew at AMB-1 and two doctors (sites set later)."""
    var_dir = tmp_path_factory.mktemp("browser-referral")
    env = throwaway_env(var_dir)
    with Environment(env):
        from core.referral import sites

        upgrade()
        sites.sync_sites(SYSTEM)
        create_user(CREW, PASSWORD, role="ambulance", full_name="Crew Alpha")
        sites.assign_user(CREW, "AMB-1", SYSTEM)
        create_user(DECLINER, PASSWORD, role="doctor", full_name="Dr Decline")
        create_user(ACCEPTER, PASSWORD, role="doctor", full_name="Dr Accept")
    with running_streamlit(env, var_dir / "streamlit.log") as url:
        yield Server(url, env)


def _keep(page, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("CXR_BROWSER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / name)


def test_crew_refers_two_departments_answer_and_the_crew_sees_the_acceptance(
    server: Server, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = []
            for _ in range(3):  # the crew and the two departments: separate cookies, separate sessions
                context = browser.new_context(viewport={"width": 1400, "height": 1400})
                context.set_default_timeout(STEP_MS)
                pages.append(context.new_page())
            crew, decliner, accepter = pages

            # The crew: quick registration, then the upload on the X-ray page it lands on.
            log_in(crew, server.url, CREW, PASSWORD)
            crew.get_by_role("link", name="Referrals").click()
            expect(crew.get_by_text("Quick registration of a patient")).to_be_visible(timeout=STEP_MS)
            crew.get_by_label("Estimated age (years)").fill("67")
            crew.get_by_role("button", name="Register").click()
            expect(crew.get_by_text("upload the film on the X-ray page")).to_be_visible(timeout=STEP_MS)
            crew.locator("input[type=file]").set_input_files(str(PNG))
            expect(crew.get_by_text("Analysed and saved in")).to_be_visible(timeout=STEP_MS)

            # Refer it: the proposal with its reasons, confirmed as proposed, with a note.
            crew.get_by_role("link", name="Referrals").click()
            crew.get_by_role("button", name="Refer").click()
            expect(crew.get_by_text("km away").first).to_be_visible(timeout=STEP_MS)
            crew.get_by_label("Note for the departments").fill("Fell from a ladder, SpO2 89%")
            _keep(crew, tmp_path, "referral_proposal.png")
            crew.get_by_role("button", name="Send referral").click()
            expect(crew.get_by_text("sent to 3 department(s)")).to_be_visible(timeout=STEP_MS)

            with Environment(server.env):
                from core.referral import sites

                with session_scope() as s:
                    referral = s.scalars(select(models.Referral)).one()
                    targets = s.scalars(
                        select(models.ReferralTarget)
                        .where(models.ReferralTarget.referral_id == referral.id)
                        .order_by(models.ReferralTarget.rank)
                    ).all()
                    codes = [s.get_one(models.Site, t.site_id).code for t in targets]
                    names = {
                        c: s.scalars(select(models.Site.name).where(models.Site.code == c)).one()
                        for c in codes
                    }
                assert len(codes) == 3 and referral.note == "Fell from a ladder, SpO2 89%"
                sites.assign_user(DECLINER, codes[0], SYSTEM)
                sites.assign_user(ACCEPTER, codes[1], SYSTEM)

            # First department: alerted on its worklist, declines with a reason.
            log_in(decliner, server.url, DECLINER, PASSWORD)
            decliner.get_by_role("link", name="Emergency worklist").click()
            expect(decliner.get_by_text("1 incoming referral waiting")).to_be_visible(timeout=STEP_MS)
            decliner.get_by_role("link", name="Answer the referrals").click()
            expect(decliner.get_by_text("Fell from a ladder, SpO2 89%")).to_be_visible(timeout=STEP_MS)
            _keep(decliner, tmp_path, "referral_department.png")
            decliner.get_by_label("Reason to decline").fill("No thoracic surgeon on call")
            decliner.get_by_label("Reason to decline").press("Enter")
            decliner.get_by_role("button", name="Decline").click()
            expect(decliner.get_by_text(f"Referral {referral.id} declined")).to_be_visible(timeout=STEP_MS)

            # Second department accepts.
            log_in(accepter, server.url, ACCEPTER, PASSWORD)
            accepter.get_by_role("link", name="Referrals").click()
            accepter.get_by_role("button", name="Accept the patient").click()
            expect(accepter.get_by_text(f"Referral {referral.id} accepted")).to_be_visible(timeout=STEP_MS)

            # The crew's screen (never reloaded) shows both answers as they come.
            expect(crew.get_by_text(f"Accepted by {names[codes[1]]}")).to_be_visible(timeout=STEP_MS)
            expect(crew.get_by_text("No thoracic surgeon on call")).to_be_visible(timeout=STEP_MS)
            expect(crew.get_by_text("time to first answer").first).to_be_visible()
            _keep(crew, tmp_path, "referral_crew.png")
        finally:
            browser.close()

    with Environment(server.env), session_scope() as s:
        referral = s.get_one(models.Referral, referral.id)
        assert referral.status == "accepted"
        statuses = [
            t.status
            for t in s.scalars(
                select(models.ReferralTarget)
                .where(models.ReferralTarget.referral_id == referral.id)
                .order_by(models.ReferralTarget.rank)
            )
        ]
        assert statuses == ["declined", "accepted", "closed"]
