"""The emergency worklist (core.xray.queues.worklist and pages/worklist.py): age/sex and status on each item,
films already read on request, filters by level and "not yet read", and links that open the film."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from sqlalchemy import update

from core.auth import AuthenticatedUser
from core.records import PatientRecord
from core.xray import diagnosis as dx
from core.xray import queues
from db import models
from db.session import session_scope
from tests.support.apptest import login, texts
from tests.support.db import TestAccount
from tests.support.xray_samples import png_variant
from ui import fmt, session

MakePatient = Callable[..., PatientRecord]


def _set(study_id: int, *, level: str | None = None, status: str | None = None) -> None:
    with session_scope() as s:
        if level:
            s.execute(
                update(models.Diagnosis)
                .where(models.Diagnosis.study_id == study_id)
                .values(triage_level=level)
            )
        if status:
            s.execute(update(models.Study).where(models.Study.id == study_id).values(status=status))


def test_worklist_items_carry_age_sex_status_and_read_films_on_request(
    doctor: AuthenticatedUser, make_patient: MakePatient
) -> None:
    make_patient("ED-100001", sex="female", date_of_birth=date(1956, 12, 9))
    waiting = dx.diagnose_upload("ED-100001", png_variant(1), "a.png", doctor)
    read = dx.diagnose_upload("ED-100001", png_variant(2), "b.png", doctor)
    _set(read.study_id, status="reviewed")
    [item] = queues.worklist()
    assert (item.study_id, item.sex, item.date_of_birth, item.status) == (
        waiting.study_id,
        "female",
        date(1956, 12, 9),
        "new",
    )
    both = queues.worklist(include_read=True)
    assert [(i.study_id, i.status) for i in both] == [(waiting.study_id, "new"), (read.study_id, "reviewed")]
    assert queues.worklist(include_read=True, read_hours=0) == (item,)


def test_worklist_page_filters_and_links(
    make_user: Callable[..., TestAccount], make_patient: MakePatient
) -> None:
    account = make_user("dr.worklist")
    make_patient("ED-1", sex="male", date_of_birth=date(1950, 1, 1))
    urgent = dx.diagnose_upload("ED-1", png_variant(3), "u.png", account.user)
    routine = dx.diagnose_upload("ED-1", png_variant(4), "r.png", account.user)
    read = dx.diagnose_upload("ED-1", png_variant(5), "d.png", account.user)
    _set(urgent.study_id, level="urgent")
    _set(routine.study_id, level="routine")
    _set(read.study_id, level="routine", status="corrected")
    at = login(account)
    at.switch_page(session.WORKLIST_PAGE).run()
    assert not at.exception, at.exception

    def shown() -> list[int]:
        return [int(b.key.rsplit(".", 1)[1]) for b in at.button if b.key and b.key.startswith("wl.open.")]

    assert shown() == [urgent.study_id, routine.study_id]
    assert "not yet read" in texts(at) and " y · Male" in texts(at)
    # the read's findings counted in the result page's two tiers, not as "N over threshold"
    [item] = [i for i in queues.worklist() if i.study_id == urgent.study_id]
    assert (item.likely, item.possible) == (urgent.likely, urgent.possible)
    assert item.likely or item.possible  # the sample has findings to count
    assert fmt.tiers(item.likely, item.possible) in texts(at) and "over threshold" not in texts(at)
    links = [(p.proto.page, p.proto.query_string) for p in at.get("page_link")]
    assert any(f"patient=ED-1&study={urgent.study_id}" in q for _, q in links), links
    at.toggle(key="wl.unread").set_value(False).run()
    assert shown() == [urgent.study_id, routine.study_id, read.study_id]
    at.button_group(key="wl.levels").set_value(["routine"]).run()
    assert shown() == [routine.study_id, read.study_id]
    at.button_group(key="wl.levels").set_value(["priority"]).run()
    assert shown() == [] and "No X-ray matches these filters." in texts(at)
