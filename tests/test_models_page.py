"""The Models page (admins only) through AppTest, on SQLite and PostgreSQL, over a temporary models folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from core.ml import promotion as mp
from db import models
from db.session import session_scope
from tests.support.apptest import ROOT, TIMEOUT, login, shows_login_form, start, texts
from tests.support.db import TestAccount
from tests.support.model_versions import V1, ModelsDir, temporary_models_dir
from ui import session

PAGE = "pages/models.py"
REASON = "Reviewed by the imaging board: better on our pneumothorax audit."


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelsDir]:
    yield from temporary_models_dir(tmp_path, monkeypatch)


@pytest.fixture
def boss(make_user: object) -> TestAccount:
    return make_user("boss", role="admin")  # type: ignore[operator, no-any-return]


def open_page(account: TestAccount) -> AppTest:
    at = login(account)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def promote_button(at: AppTest, kind: str = "classifier"):  # type: ignore[no-untyped-def]
    return at.button(key=f"models.{kind}.promote")


def actions() -> list[str]:
    with session_scope() as s:
        return list(
            s.scalars(
                select(models.AuditLog.action)
                .where(models.AuditLog.entity_type == "model")
                .order_by(models.AuditLog.id)
            )
        )


def test_admin_sees_versions_side_by_side_with_the_chart(models_dir: ModelsDir, boss: TestAccount) -> None:
    models_dir.classifier("cand-better", delta=0.02, created="2026-11-22T09:00:00+00:00")
    models_dir.detector("det-a", 0.31)
    at = open_page(boss)
    assert [t.value for t in at.title] == ["Models"]
    classifier_table, detector_table = (df.value for df in at.dataframe)
    assert list(classifier_table["Version"]) == [V1, "cand-better"]
    assert list(classifier_table["Active"]) == ["✓", ""]
    assert classifier_table["test mean AUC (95% CI)"].iloc[0] == "0.754 (0.714–0.794)"
    assert list(classifier_table["Parent"]) == ["—", V1]
    assert list(classifier_table["Created"]) == ["—", "2026-11-22"]
    assert list(detector_table["test mAP50 (95% CI)"]) == ["0.310"]
    assert at.selectbox(key="models.classifier.candidate").value == "cand-better"
    assert "cand-better measures better than the active classifier" in texts(at)
    assert at.get("plotly_chart")  # per-finding AUC, active vs candidate
    assert "No detector version is active yet; det-a would be the first." in texts(at)
    assert not at.text_area  # nothing is worse: no reason asked for


def test_promoting_a_better_version(models_dir: ModelsDir, boss: TestAccount) -> None:
    models_dir.classifier("cand-better", delta=0.02)
    at = open_page(boss)
    promote_button(at).click().run()
    assert not at.exception, at.exception
    assert "cand-better is now the active classifier (was cxr14-lite0-224-v1)" in texts(at)
    assert models_dir.registry()["classifier"] == "cand-better" and actions() == ["promote"]
    assert list(at.dataframe[0].value["Active"]) == ["✓", ""]  # redrawn: the new one first and active
    assert list(at.dataframe[0].value["Version"])[0] == "cand-better"


def test_a_worse_version_asks_for_a_reason(models_dir: ModelsDir, boss: TestAccount) -> None:
    models_dir.classifier("cand-worse", delta=-0.02)
    at = open_page(boss)
    assert "cand-worse measures worse than the active classifier" in [w.value for w in at.warning][0]
    (reason,) = at.text_area
    promote_button(at).click().run()
    assert "Promotion refused" in [e.value for e in at.error][0]
    assert models_dir.registry()["classifier"] == V1

    at.text_area(key="models.classifier.reason").set_value(REASON)
    promote_button(at).click().run()
    assert not at.exception, at.exception
    assert "Promoted over the rules with the reason recorded" in texts(at)
    assert models_dir.registry()["classifier"] == "cand-worse"
    assert actions() == ["promote_refused", "promote"]
    with session_scope() as s:
        last = s.scalars(select(models.AuditLog).order_by(models.AuditLog.id.desc())).first()
        assert last is not None and last.after is not None and last.after["override_reason"] == REASON


def test_someone_else_promoting_meanwhile_is_a_conflict(models_dir: ModelsDir, boss: TestAccount) -> None:
    models_dir.classifier("cand-a", delta=0.01)
    models_dir.classifier("cand-b", delta=0.02)
    at = open_page(boss)
    at.selectbox(key="models.classifier.candidate").set_value("cand-a").run()
    other = boss.user  # another admin's session: the service, between this admin's look and click
    mp.promote("classifier", "cand-b", other)
    promote_button(at).click().run()
    assert "changed from cxr14-lite0-224-v1 to cand-b" in [w.value for w in at.warning][0]
    assert models_dir.registry()["classifier"] == "cand-b"


@pytest.mark.usefixtures("models_dir")
def test_the_models_page_is_for_admins_only(make_user: object) -> None:
    doctor = login(make_user("dr.curious"))  # type: ignore[operator]
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        doctor.switch_page(PAGE)
    direct = AppTest.from_file(ROOT / PAGE, default_timeout=TIMEOUT)
    direct.session_state[session.USER] = doctor.session_state[session.USER]
    direct.run()
    assert "Only administrators can see and promote model versions." in [e.value for e in direct.error]
    assert not direct.dataframe and not direct.button

    signed_out = start()
    signed_out.switch_page(PAGE).run()
    assert shows_login_form(signed_out) and "Models" not in [t.value for t in signed_out.title]
