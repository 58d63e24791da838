"""Issue 14, the referral: sites from the configuration file, the ambulance role, the proposal rule, delivery,
accept/decline, the first acceptance closing the referral (also under a race of threads), audit rows, and the
quick registration. On SQLite and PostgreSQL, with real films read by the committed models."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from core import audit
from core.auth import AuthenticatedUser
from core.errors import ConflictError, PermissionDenied, ValidationError
from core.referral import crew, rule, service, sites
from core.xray import diagnosis as dx
from db import models
from db.session import session_scope
from tests.support.db import TestAccount
from tests.support.xray_samples import png_variant

MakeUser = Callable[..., TestAccount]

ROOT = Path(__file__).resolve().parents[1]
ZURICH = (47.3769, 8.5417)


def _places() -> list[rule.Place]:
    return [
        rule.Place("NEAR", "Near, no surgery", 47.38, 8.54, ("cardiology", "ct")),
        rule.Place("MID", "Mid, surgery", 47.42, 8.55, ("thoracic_surgery", "ct")),
        rule.Place("FAR", "Far, everything", 47.50, 8.72, ("thoracic_surgery", "cardiology", "icu", "ct")),
        rule.Place("FAR2", "Farther, surgery", 47.60, 8.90, ("thoracic_surgery",)),
    ]


def test_haversine_matches_a_known_distance() -> None:
    # Paris (Notre-Dame) to London (Charing Cross): 343.5 km great-circle
    assert rule.haversine_km(48.8530, 2.3499, 51.5080, -0.1247) == pytest.approx(343.5, abs=1.0)
    assert rule.haversine_km(*ZURICH, *ZURICH) == 0.0


def test_pneumothorax_prefers_thoracic_surgery_then_distance() -> None:
    proposed = rule.propose(_places(), ["Pneumothorax"], *ZURICH)
    assert [s.code for s in proposed] == ["MID", "FAR", "FAR2"]  # the nearest lacks thoracic surgery
    assert "thoracic surgery for Pneumothorax" in proposed[0].reasons
    assert "km away" in proposed[0].reasons
    last = rule.rank(_places(), ["Pneumothorax"], *ZURICH)[-1]
    assert last.code == "NEAR" and "no thoracic surgery (Pneumothorax)" in last.reasons


def test_more_needed_capabilities_beat_distance_and_no_finding_means_nearest() -> None:
    both = rule.propose(_places(), ["Pneumothorax", "Cardiomegaly"], *ZURICH)
    assert both[0].code == "FAR"  # the only one with both thoracic surgery and cardiology
    nothing = rule.propose(_places(), [], *ZURICH)
    assert [s.code for s in nothing] == ["NEAR", "MID", "FAR"]
    assert "no urgent finding needs a particular service" in nothing[0].reasons


# ---------------------------------------------------------------- sites


@pytest.mark.usefixtures("database")
def test_the_committed_sites_file_syncs_and_a_removed_site_is_deactivated(
    admin: AuthenticatedUser, tmp_path: Path
) -> None:
    first = sites.sync_sites(admin)
    eds = sites.list_sites(kind="ed")
    assert len(eds) >= 4 and set(first.added) >= {s.code for s in eds}
    assert all(s.capabilities for s in eds)
    again = sites.sync_sites(admin)
    assert again == sites.SyncResult((), (), ())
    shorter = tmp_path / "sites.toml"
    text = (ROOT / "config" / "sites.toml").read_text()
    shorter.write_text(text.split('[[site]]\ncode = "ZH-WEST"')[0])  # drops ZH-WEST and AMB-1
    result = sites.sync_sites(admin, shorter)
    assert set(result.deactivated) == {"ZH-WEST", "AMB-1"}
    assert "ZH-WEST" not in {s.code for s in sites.list_sites()}
    assert "ZH-WEST" in {s.code for s in sites.list_sites(active_only=False)}
    with session_scope() as s:
        rows = s.scalars(select(models.AuditLog).where(models.AuditLog.entity_type == "sites")).all()
        assert len(rows) == 3 and rows[0].username == admin.username


def test_a_bad_sites_file_is_refused_with_a_sentence() -> None:
    with pytest.raises(ValidationError, match="between -90 and 90"):
        sites.parse('[[site]]\ncode = "X"\nname = "X"\nlat = 100\nlon = 0\n')
    with pytest.raises(ValidationError, match="appears twice"):
        sites.parse(
            '[[site]]\ncode="A"\nname="A"\nlat=1\nlon=1\n[[site]]\ncode="a"\nname="B"\nlat=1\nlon=1\n'
        )
    with pytest.raises(ValidationError, match="not valid TOML"):
        sites.parse("[[site]\n")


def test_only_an_admin_syncs_sites_and_assigns_users(
    doctor: AuthenticatedUser, admin: AuthenticatedUser
) -> None:
    with pytest.raises(PermissionDenied):
        sites.sync_sites(doctor)
    sites.sync_sites(admin)
    with pytest.raises(PermissionDenied):
        sites.assign_user(doctor.username, "ZH-CITY", doctor)
    sites.assign_user(doctor.username, "ZH-CITY", admin)
    site = sites.user_site(doctor.id)
    assert site is not None and site.code == "ZH-CITY"


def test_the_database_admits_the_ambulance_role_and_nothing_else(make_user: MakeUser) -> None:
    crew_user = make_user("crew.one", role="ambulance").user
    assert crew_user.role == "ambulance"
    with session_scope() as s:
        s.get_one(models.User, crew_user.id).role = "pilot"
        with pytest.raises(Exception, match="(?i)check|constraint"):
            s.flush()
        s.rollback()


# ---------------------------------------------------------------- the referral


class Crew:
    """A synced deployment: an ambulance crew at AMB-1 and one doctor at each department."""

    def __init__(self, make_user: MakeUser, admin: AuthenticatedUser) -> None:
        sites.sync_sites(admin)
        self.crew = make_user("crew.one", role="ambulance").user
        sites.assign_user(self.crew.username, "AMB-1", admin)
        self.doctors: dict[str, AuthenticatedUser] = {}
        for site in sites.list_sites(kind="ed"):
            user = make_user(f"dr.{site.code.lower()}", role="doctor").user
            sites.assign_user(user.username, site.code, admin)
            self.doctors[site.code] = user
        self.patient = crew.quick_register("male", 54, self.crew)
        self.study = dx.diagnose_upload(self.patient.patient_id, png_variant(7), "field.png", self.crew)


@pytest.fixture
def deployment(make_user: MakeUser, admin: AuthenticatedUser) -> Crew:
    return Crew(make_user, admin)


def test_quick_registration_makes_an_audited_patient_from_sex_and_age(deployment: Crew) -> None:
    record = deployment.patient
    assert record.patient_id.startswith("AMB-")
    assert record.demographics.family_name == crew.UNKNOWN
    with pytest.raises(ValidationError, match="between 0 and 120"):
        crew.quick_register("female", 130, deployment.crew)
    with session_scope() as s:
        row = s.scalars(
            select(models.AuditLog).where(
                models.AuditLog.action == "create", models.AuditLog.patient_id == record.patient_id
            )
        ).first()
        assert row is not None and row.username == "crew.one"


def test_the_proposal_follows_the_rule_on_the_films_read(deployment: Crew) -> None:
    proposal = service.propose(deployment.study.study_id, deployment.crew)
    amb = next(s for s in sites.list_sites() if s.code == "AMB-1")
    assert (proposal.lat, proposal.lon) == (amb.lat, amb.lon)  # the crew's base by default
    view = dx.get_diagnosis(deployment.study.study_id, deployment.crew)
    assert proposal.findings == service.rule_findings(view)
    places = [rule.Place(s.code, s.name, s.lat, s.lon, s.capabilities) for s in sites.list_sites(kind="ed")]
    assert proposal.proposed == rule.propose(places, proposal.findings, amb.lat, amb.lon)
    assert len(proposal.proposed) == 3 and "AMB-1" not in {s.code for s in proposal.ranked}


def test_deliver_decline_accept_and_the_first_acceptance_closes(deployment: Crew) -> None:
    d = deployment
    referral_id = service.create_referral(
        d.study.study_id, ["ZH-CITY", "zh-north", "WINT"], "  Fall, SpO2 88%  ", d.crew
    )
    for code in ("ZH-CITY", "ZH-NORTH", "WINT"):
        assert service.waiting_count(d.doctors[code]) == 1
        (seen,) = service.incoming(d.doctors[code])
        assert seen.id == referral_id and seen.note == "Fall, SpO2 88%"
        assert seen.patient_id == d.patient.patient_id and seen.sex == "male" and seen.age in (53, 54)
        assert seen.triage_level == d.study.triage_level and seen.likely == d.study.likely
    assert service.waiting_count(d.doctors["ZH-LAKE"]) == 0 and service.incoming(d.doctors["ZH-LAKE"]) == ()
    with pytest.raises(PermissionDenied):
        service.answer(referral_id, d.doctors["ZH-LAKE"], accept=True)
    with pytest.raises(ValidationError, match="why"):
        service.answer(referral_id, d.doctors["ZH-NORTH"], accept=False, reason=" ")
    after_decline = service.answer(referral_id, d.doctors["ZH-NORTH"], accept=False, reason="No bed in resus")
    assert after_decline.status == "open" and after_decline.seconds_to_first_answer is not None
    accepted = service.answer(referral_id, d.doctors["WINT"], accept=True)
    assert accepted.status == "accepted" and accepted.closed_at is not None
    assert accepted.accepted_by_site == "Winterthur Cantonal Emergency Department"
    assert {t.site_code: t.status for t in accepted.targets} == {
        "ZH-CITY": "closed",
        "ZH-NORTH": "declined",
        "WINT": "accepted",
    }
    assert accepted.target("ZH-NORTH").answer_reason == "No bed in resus"  # type: ignore[union-attr]
    with pytest.raises(ConflictError, match="Winterthur"):
        service.answer(referral_id, d.doctors["ZH-CITY"], accept=True)
    assert service.waiting_count(d.doctors["ZH-CITY"]) == 0
    (crew_view,) = service.sent_by(d.crew)
    assert crew_view.status == "accepted" and crew_view.first_answer_at == after_decline.first_answer_at
    with session_scope() as s:
        rows = s.scalars(
            select(models.AuditLog)
            .where(
                models.AuditLog.entity_type == "referral", models.AuditLog.action.in_(("create", "update"))
            )
            .order_by(models.AuditLog.id)
        ).all()
        assert [(r.action, r.detail, r.username) for r in rows] == [
            ("create", "referred to " + ", ".join(t.site_code for t in accepted.targets), "crew.one"),
            ("update", "declined", "dr.zh-north"),
            ("update", "accepted", "dr.wint"),
        ]
        assert all(r.patient_id == d.patient.patient_id for r in rows)


def test_every_department_declining_closes_the_referral_as_declined(deployment: Crew) -> None:
    d = deployment
    referral_id = service.create_referral(d.study.study_id, ["ZH-CITY", "WINT"], "", d.crew)
    service.answer(referral_id, d.doctors["ZH-CITY"], accept=False, reason="CT down")
    last = service.answer(referral_id, d.doctors["WINT"], accept=False, reason="Full")
    assert last.status == "declined" and last.closed_at is not None
    with pytest.raises(ConflictError):
        service.answer(referral_id, d.doctors["WINT"], accept=True)


def test_bad_referrals_are_refused(deployment: Crew) -> None:
    d = deployment
    with pytest.raises(ValidationError, match="between 1 and 3"):
        service.create_referral(d.study.study_id, ["ZH-CITY", "WINT", "ZH-LAKE", "ZH-NORTH"], "", d.crew)
    with pytest.raises(ValidationError, match="AMB-1"):
        service.create_referral(d.study.study_id, ["AMB-1"], "", d.crew)
    with pytest.raises(ValidationError, match="location"):
        service.create_referral(d.study.study_id, ["WINT"], "", d.doctors["WINT"], lat=95.0, lon=0.0)
    with pytest.raises(PermissionDenied):
        service.get_referral(
            service.create_referral(d.study.study_id, ["WINT"], "", d.crew), d.doctors["ZH-CITY"]
        )


def test_two_departments_accepting_at_once_exactly_one_wins(deployment: Crew) -> None:
    d = deployment
    for round_ in range(4):
        referral_id = service.create_referral(
            d.study.study_id, ["ZH-CITY", "WINT", "ZH-LAKE"], f"r{round_}", d.crew
        )
        barrier = threading.Barrier(3)
        outcomes: dict[str, str] = {}

        def accept(
            code: str,
            rid: int = referral_id,
            barrier: threading.Barrier = barrier,
            outcomes: dict[str, str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                service.answer(rid, d.doctors[code], accept=True)
                outcomes[code] = "won"
            except ConflictError:
                outcomes[code] = "closed"
            except BaseException as exc:
                outcomes[code] = repr(exc)

        threads = [threading.Thread(target=accept, args=(c,)) for c in ("ZH-CITY", "WINT", "ZH-LAKE")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes.values()) == ["closed", "closed", "won"], outcomes
        view = service.get_referral(referral_id, d.crew, audit_read=False)
        winner = next(code for code, outcome in outcomes.items() if outcome == "won")
        assert view.status == "accepted" and [
            t.site_code for t in view.targets if t.status == "accepted"
        ] == [winner]
        assert sorted(t.status for t in view.targets) == ["accepted", "closed", "closed"]
        with session_scope() as s:
            answers = s.scalars(
                select(models.AuditLog).where(
                    models.AuditLog.entity_type == "referral",
                    models.AuditLog.entity_id == str(referral_id),
                    models.AuditLog.action == "update",
                )
            ).all()
            assert len(answers) == 1


@pytest.mark.usefixtures("database")
def test_system_actor_can_sync_for_a_fresh_installation() -> None:
    sites.ensure_sites()
    assert sites.list_sites()
    sites.ensure_sites()  # no second sync
    with session_scope() as s:
        rows = s.scalars(select(models.AuditLog).where(models.AuditLog.entity_type == "sites")).all()
        assert [r.username for r in rows] == [audit.SYSTEM.username]
