"""Issue 14, the referral pages through AppTest (SQLite and PostgreSQL): the crew's proposal and sending, the
department's alert on the worklist and the referrals page, accept/decline, the crew's view of the answers,
and the admin's sites view."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core.auth import AuthenticatedUser
from core.referral import crew, service, sites
from core.xray import diagnosis as dx
from tests.support.apptest import login, texts
from tests.support.db import TestAccount
from tests.support.xray_samples import png_variant

MakeUser = Callable[..., TestAccount]


class Deployment:
    def __init__(self, make_user: MakeUser, admin: AuthenticatedUser) -> None:
        sites.sync_sites(admin)
        self.crew = make_user("crew.one", role="ambulance")
        sites.assign_user("crew.one", "AMB-1", admin)
        self.city = make_user("dr.city", role="doctor")
        sites.assign_user("dr.city", "ZH-CITY", admin)
        self.wint = make_user("dr.wint", role="doctor")
        sites.assign_user("dr.wint", "WINT", admin)
        self.patient = crew.quick_register("female", 70, self.crew.user)
        self.study = dx.diagnose_upload(self.patient.patient_id, png_variant(11), "field.png", self.crew.user)


@pytest.fixture
def deployment(make_user: MakeUser, admin: AuthenticatedUser) -> Deployment:
    return Deployment(make_user, admin)


def _page(account: TestAccount, **params: str) -> AppTest:
    at = login(account)
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page("pages/referrals.py").run()
    assert not at.exception, at.exception
    return at


def test_the_crew_sees_the_proposal_with_reasons_and_sends_it(deployment: Deployment) -> None:
    at = _page(deployment.crew)
    assert "Your recent films" in [h.value for h in at.subheader]
    assert deployment.patient.patient_id in texts(at)
    at.button(key=f"ref.film.{deployment.study.study_id}").click().run()
    assert not at.exception, at.exception
    shown = texts(at)
    proposal = service.propose(deployment.study.study_id, deployment.crew.user)
    for suggestion in proposal.proposed:
        assert suggestion.name in shown
    assert "km away" in shown
    assert "Quick registration of a patient" in [e.label for e in at.expander]
    chosen = at.multiselect(key="ref.targets")
    assert chosen.value == [s.code for s in proposal.proposed]
    chosen.set_value(["WINT", "ZH-CITY"])
    at.text_area(key="ref.note").set_value("Dyspnoea after a fall")
    at.button(key=f"FormSubmitter:ref.send.{deployment.study.study_id}-Send referral").click().run()
    assert not at.exception, at.exception
    assert "sent to 2 department(s)" in texts(at)
    (sent,) = service.sent_by(deployment.crew.user)
    assert {t.site_code for t in sent.targets} == {"WINT", "ZH-CITY"} and sent.note == "Dyspnoea after a fall"
    assert "Referral" in texts(at) and "waiting" in texts(at)


def test_the_department_is_alerted_answers_and_the_crew_sees_it(deployment: Deployment) -> None:
    d = deployment
    referral_id = service.create_referral(d.study.study_id, ["ZH-CITY", "WINT"], "Fall", d.crew.user)
    worklist = login(d.city)
    worklist.switch_page("pages/worklist.py").run()
    assert not worklist.exception, worklist.exception
    assert "1 incoming referral waiting" in texts(worklist)
    at = _page(d.city)
    shown = texts(at)
    assert "1 incoming referral waiting" in shown and d.patient.patient_id in shown and "Crew note" in shown
    at.button(key=f"ref.decline.{referral_id}").click().run()
    assert "Say why the department declines" in texts(at)
    at.text_input(key=f"ref.reason.{referral_id}").set_value("No thoracic surgeon tonight")
    at.button(key=f"ref.decline.{referral_id}").click().run()
    assert not at.exception, at.exception
    assert "declined" in texts(at) and "incoming referral waiting" not in texts(at)
    other = _page(d.wint)
    other.button(key=f"ref.accept.{referral_id}").click().run()
    assert not other.exception, other.exception
    assert f"Referral {referral_id} accepted" in texts(other)
    crew_at = _page(d.crew)
    seen = texts(crew_at)
    assert "Accepted by Winterthur Cantonal Emergency Department" in seen
    assert "No thoracic surgeon tonight" in seen and "time to first answer" in seen


@pytest.mark.usefixtures("deployment")
def test_a_doctor_without_a_site_and_the_admins_sites_view(make_user: MakeUser) -> None:
    loner = make_user("dr.loner", role="doctor")
    assert "belongs to no department" in texts(_page(loner))
    boss = make_user("boss", role="admin")
    at = _page(boss)
    assert at.dataframe[0].value["Code"].tolist()[:2] == ["AMB-1", "WINT"]
    at.button(key="ref.sync").click().run()
    assert "Sites synced: 0 added, 0 updated, 0 deactivated" in texts(at)
    at.text_input(key="ref.assign.user").set_value("dr.loner")
    at.selectbox(key="ref.assign.site").set_value("ZH-LAKE")
    at.button(key="FormSubmitter:ref.assign-Assign the site").click().run()
    assert not at.exception, at.exception
    site = sites.user_site(loner.user.id)
    assert site is not None and site.code == "ZH-LAKE"


def test_the_result_page_links_the_film_to_its_referral(deployment: Deployment) -> None:
    at = login(deployment.crew)
    at.query_params["patient"] = deployment.patient.patient_id
    at.query_params["study"] = str(deployment.study.study_id)
    at.switch_page("pages/xray.py").run()
    assert not at.exception, "\n".join(at.exception[0].stack_trace) if at.exception else ""
    links = [element.proto for element in at.get("page_link")]
    refer = [link for link in links if link.label == "Refer to an emergency department"]
    assert len(refer) == 1 and refer[0].query_string == f"refer={deployment.study.study_id}"
