"""Model versions: listing, comparison, the promotion rules and their audit rows (SQLite and PostgreSQL),
the race of two admins, the inference cache following the registry, and ``python -m core models``.

Every test works on a temporary models folder (tests/model_versions.py); the real registry is checked
to be untouched after each one.
"""

from __future__ import annotations

import io
import json
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.__main__ import main
from core.auth import AuthenticatedUser
from core.config import PROJECT_ROOT
from core.errors import ConflictError, PermissionDenied, ValidationError
from core.ml import inference
from core.ml import promotion as mp
from core.ml import registry as mr
from db import models
from db.models import LIMITS
from db.session import session_scope
from tests.support.model_versions import REAL_CLASSIFIER, V1, V1_AUC, ModelsDir, temporary_models_dir

REASON = "Better sensitivity on pneumothorax in our own audit; reviewed by the imaging board."


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelsDir]:
    yield from temporary_models_dir(tmp_path, monkeypatch)


def audit_rows() -> list[models.AuditLog]:
    with session_scope() as s:
        return list(
            s.scalars(
                select(models.AuditLog)
                .where(models.AuditLog.entity_type == "model")
                .order_by(models.AuditLog.id)
            )
        )


# ------------------------------------------------------------------ listing and comparison


def test_list_versions_reads_each_card_and_puts_the_active_first(models_dir: ModelsDir) -> None:
    models_dir.classifier("v-older", delta=-0.01, created="2026-10-01T00:00:00+00:00")
    models_dir.classifier("v-newer", delta=0.02, split_hash="abc", created="2026-11-22T00:00:00+00:00")
    versions = mr.list_versions("classifier")
    assert [v.version for v in versions] == [V1, "v-newer", "v-older"]
    active, newer, _ = versions
    assert active.active and not newer.active
    assert active.metric == "test mean AUC" and active.value == pytest.approx(V1_AUC)
    assert active.ci95 is not None and active.ci95[0] < active.value < active.ci95[1]
    assert active.val_value == pytest.approx(0.7369, abs=1e-4) and active.test_images == 490
    assert active.parent is None and active.created is None and len(active.per_finding) == 14
    assert newer.value == pytest.approx(V1_AUC + 0.02) and newer.parent == V1
    assert newer.test_split_sha256 == "abc" and str(newer.created) == "2026-11-22"
    assert newer.path == models_dir.root / "classifier" / "v-newer"


def test_list_detector_versions_reads_map50(models_dir: ModelsDir) -> None:
    assert mr.list_versions("detector") == []
    models_dir.detector("det-a", 0.31)
    (det,) = mr.list_versions("detector")
    assert (det.metric, det.value, det.val_value) == ("test mAP50", 0.31, pytest.approx(0.30))
    assert det.test_images == 120 and det.finding_values() == {"Nodule": 0.31} and not det.active


def test_unreadable_cards_are_left_out_and_kinds_and_names_are_checked(models_dir: ModelsDir) -> None:
    broken = models_dir.root / "classifier" / "broken"
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    assert [v.version for v in mr.list_versions("classifier")] == [V1]
    with pytest.raises(ValidationError, match="Unknown model kind"):
        mr.list_versions("segmenter")
    for bad in ("../classifier", "a/b", "", "x" * 65):
        with pytest.raises(ValidationError):
            mr.compare("classifier", bad)
    with pytest.raises(mr.ModelNotAvailable):
        mr.compare("classifier", "not-there")
    # a diagnosis stores the version name: a longer name than the column could never be saved
    assert LIMITS["model_version"] == mr.MAX_VERSION_CHARS


@pytest.mark.parametrize(
    ("delta", "verdict", "needs_reason"),
    [(0.02, "better", False), (-0.02, "worse", True), (0.0, "equal", False)],
)
def test_compare_with_the_active_version(
    models_dir: ModelsDir, delta: float, verdict: str, needs_reason: bool
) -> None:
    models_dir.classifier("cand", delta=delta)
    c = mr.compare("classifier", "cand")
    assert c.against is not None and c.against.version == V1
    assert (c.verdict, c.needs_override, c.fair) == (verdict, needs_reason, True)
    assert c.delta == pytest.approx(delta)
    assert f"{c.delta:+.3f}" in c.summary() and V1 in c.summary()
    atelectasis = next(row for row in c.per_finding() if row[0] == "Atelectasis")
    assert atelectasis[2] == pytest.approx(atelectasis[1] + delta)  # type: ignore[operator]


def test_compare_without_headline_or_without_active_version(models_dir: ModelsDir) -> None:
    models_dir.classifier("no-metric", headline=False)
    c = mr.compare("classifier", "no-metric")
    assert c.verdict == "unmeasured" and c.needs_override and "has no test mean AUC" in c.summary()
    models_dir.detector("det-a", 0.3)
    first = mr.compare("detector", "det-a")
    assert first.against is None and first.verdict == "no active version" and not first.needs_override
    models_dir.detector("det-b", 0.2)
    explicit = mr.compare("detector", "det-b", against="det-a")
    assert explicit.verdict == "worse" and explicit.delta == pytest.approx(-0.1)


def test_comparison_on_different_test_splits_is_unfair(models_dir: ModelsDir) -> None:
    models_dir.classifier("hash-a", delta=0.05, split_hash="aaa")
    models_dir.classifier("hash-b", delta=0.01, split_hash="bbb")
    models_dir.classifier("fewer-images", delta=0.05, test_images=400)
    models_dir.classifier("no-count", delta=0.05, test_images=None)

    by_hash = mr.compare("classifier", "hash-a", against="hash-b")
    assert by_hash.verdict == "better" and not by_hash.fair and by_hash.needs_override
    assert "different test splits" in by_hash.summary()

    by_count = mr.compare("classifier", "fewer-images")  # against V1: 490 images
    assert not by_count.fair and "400 vs 490 images" in by_count.summary() and by_count.needs_override

    same_count = mr.compare("classifier", "hash-a")  # V1 records no hash: count only, and it matches
    assert same_count.fair and not same_count.needs_override
    assert "image count only" in same_count.notes[0]
    unknown = mr.compare("classifier", "no-count")
    assert unknown.fair and "cannot be checked" in unknown.notes[0]


def test_reason_rules() -> None:
    assert mp.reason_is_sufficient(REASON)
    for weak in (None, "", "ok", "   short   ", "xxxxxxxxxxxxxx", "!!!!!!!!!!!!!!!"):
        assert not mp.reason_is_sufficient(weak), weak


# ------------------------------------------------------------------ promotion (audited, both backends)


def test_promoting_a_better_version_needs_no_reason_and_is_audited(
    models_dir: ModelsDir, admin: AuthenticatedUser
) -> None:
    models_dir.classifier("better", delta=0.02)
    done = mp.promote("classifier", "better", admin, expected_active=V1)
    assert (done.version, done.previous, done.overridden) == ("better", V1, False)
    assert "better is now the active classifier (was cxr14-lite0-224-v1)" in done.message()
    assert models_dir.registry() == {"classifier": "better"}
    assert [v.version for v in mr.list_versions("classifier") if v.active] == ["better"]
    (row,) = audit_rows()
    assert (row.action, row.entity_type, row.entity_id, row.username) == (
        "promote",
        "model",
        "better",
        admin.username,
    )
    assert row.before is not None and row.after is not None
    assert (row.before["version"], row.before["value"]) == (V1, pytest.approx(V1_AUC))
    assert (row.after["version"], row.after["verdict"], row.after["override_reason"]) == (
        "better",
        "better",
        None,
    )
    assert row.after["delta"] == pytest.approx(0.02) and row.after["metric"] == "test mean AUC"


def test_a_worse_version_is_refused_without_a_real_reason_and_each_attempt_audited(
    models_dir: ModelsDir, admin: AuthenticatedUser
) -> None:
    models_dir.classifier("worse", delta=-0.03)
    for reason in (None, "because", "xxxxxxxxxxxxxxxx"):
        with pytest.raises(mp.PromotionRefused) as refused:
            mp.promote("classifier", "worse", admin, override_reason=reason)
        assert refused.value.overridable and refused.value.comparison is not None
        message = str(refused.value)
        assert "measures worse than the active classifier" in message and "at least 10 characters" in message
    assert models_dir.registry() == {"classifier": V1}
    rows = audit_rows()
    assert [r.action for r in rows] == ["promote_refused"] * 3
    assert rows[0].after is not None and rows[0].after["verdict"] == "worse"
    assert [r.after["override_reason"] for r in rows if r.after] == [None, "because", "xxxxxxxxxxxxxxxx"]
    assert "measures worse" in rows[0].detail


def test_a_worse_version_is_promoted_with_a_reason_which_is_audited(
    models_dir: ModelsDir, admin: AuthenticatedUser
) -> None:
    models_dir.classifier("worse", delta=-0.03)
    done = mp.promote("classifier", "worse", admin, override_reason=f"  {REASON}\n")
    assert done.overridden and done.override_reason == REASON and "over the rules" in done.message()
    assert models_dir.registry()["classifier"] == "worse"
    (row,) = audit_rows()
    assert row.action == "promote" and row.after is not None and row.after["override_reason"] == REASON
    assert row.after["verdict"] == "worse" and row.detail.startswith(f"Override: {REASON}")


def test_an_unfair_comparison_needs_a_reason_even_when_the_candidate_looks_better(
    models_dir: ModelsDir, admin: AuthenticatedUser
) -> None:
    models_dir.classifier("other-split", delta=0.04, test_images=512)
    with pytest.raises(mp.PromotionRefused, match="not fair: their test splits differ in size") as refused:
        mp.promote("classifier", "other-split", admin)
    assert refused.value.overridable
    mp.promote("classifier", "other-split", admin, override_reason=REASON)
    assert [r.action for r in audit_rows()] == ["promote_refused", "promote"]
    assert audit_rows()[0].after["fair"] is False  # type: ignore[index]


def test_first_detector_needs_no_reason_then_a_worse_one_does(
    models_dir: ModelsDir, admin: AuthenticatedUser
) -> None:
    models_dir.detector("det-a", 0.30)
    models_dir.detector("det-b", 0.25)
    mp.promote("detector", "det-a", admin, expected_active=None)
    assert models_dir.registry() == {"classifier": V1, "detector": "det-a"}  # the other kind is kept
    with pytest.raises(mp.PromotionRefused, match="test mAP50 0.250 vs 0.300"):
        mp.promote("detector", "det-b", admin)
    first = audit_rows()[0]
    assert first.before == {"kind": "detector", "version": None} and first.after is not None
    assert first.after["verdict"] == "no active version"


def test_the_same_network_under_a_new_name_needs_a_reason(
    models_dir: ModelsDir, admin: AuthenticatedUser
) -> None:
    """A retrain that kept its parent's weights (gain exactly 0) is not "not worse": it is the same network.
    Promoting it would change only the name diagnoses record, so it needs a reason like a worse one does."""
    models_dir.link_weights(V1)
    models_dir.classifier("kept-weights", weights=True)
    comparison = mr.compare("classifier", "kept-weights")
    assert (comparison.verdict, comparison.same_network, comparison.needs_override) == ("equal", True, True)
    assert "very same as cxr14-lite0-224-v1's (model.tflite byte for byte)" in comparison.summary()
    with pytest.raises(mp.PromotionRefused) as refused:
        mp.promote("classifier", "kept-weights", admin)
    assert refused.value.overridable and "byte for byte" in str(refused.value)
    assert models_dir.registry() == {"classifier": V1}

    # Another network with the same card figures is not the same network: no reason needed.
    other = models_dir.classifier("other-weights")
    (other / "model.tflite").write_bytes(b"another network")
    assert mr.compare("classifier", "other-weights").same_network is False
    assert mr.compare("classifier", "other-weights").needs_override is False
    # A version without the file (a card alone) is never "the same".
    models_dir.classifier("card-only")
    assert mr.compare("classifier", "card-only").same_network is False

    done = mp.promote("classifier", "kept-weights", admin, override_reason="recalibrated card, same network")
    assert done.overridden
    assert [r.action for r in audit_rows()] == ["promote_refused", "promote"]


def test_a_candidate_dropping_the_film_check_or_the_triage_fit_needs_a_reason(
    models_dir: ModelsDir, admin: AuthenticatedUser
) -> None:
    """A retrained classifier is published with its evaluation only: promoted as it is, it would accept
    pictures that are no chest X-ray again and triage by rule v2. Better on test mean AUC is not enough."""
    film_check = REAL_CLASSIFIER / "film_check.npz"
    (models_dir.root / "classifier" / V1 / "film_check.npz").symlink_to(film_check)
    folder = models_dir.classifier("retrained", delta=0.01)
    card = json.loads((folder / "card.json").read_text())
    fitted = card.pop("triage")
    (folder / "card.json").write_text(json.dumps(card))

    comparison = mr.compare("classifier", "retrained")
    assert comparison.verdict == "better" and comparison.needs_override
    assert comparison.lacks == (
        "the film check that refuses pictures that are no chest X-ray (film_check.npz)",
        "the fitted triage-v4 triage (its card runs triage-v2)",
    )
    assert "It lacks what cxr14-lite0-224-v1 has: the film check" in comparison.summary()
    with pytest.raises(mp.PromotionRefused) as refused:
        mp.promote("classifier", "retrained", admin)
    assert refused.value.overridable and "triage-v4" in str(refused.value)

    # Once fitted for it (publish_classifier.sh's steps), nothing is lacking and better is enough.
    (folder / "film_check.npz").symlink_to(film_check)
    (folder / "card.json").write_text(json.dumps({**card, "triage": fitted}))
    comparison = mr.compare("classifier", "retrained")
    assert (comparison.lacks, comparison.needs_override) == ((), False)
    assert mp.promote("classifier", "retrained", admin).version == "retrained"


def test_refusals_that_no_reason_overrides(models_dir: ModelsDir, admin: AuthenticatedUser) -> None:
    models_dir.classifier("renamed", delta=0.05, card_version="something-else")
    for version, match in (
        (V1, "already the active classifier"),
        ("renamed", "names version 'something-else'"),
    ):
        with pytest.raises(mp.PromotionRefused, match=match) as refused:
            mp.promote("classifier", version, admin, override_reason=REASON)
        assert not refused.value.overridable
    assert models_dir.registry() == {"classifier": V1}
    assert [r.action for r in audit_rows()] == ["promote_refused", "promote_refused"]
    with pytest.raises(ValidationError, match="under 500 characters"):
        mp.promote("classifier", "renamed", admin, override_reason="x" * 501)


def test_a_missing_active_version_can_be_replaced_without_a_reason(
    models_dir: ModelsDir, admin: AuthenticatedUser
) -> None:
    """Nothing serves while the active folder is gone, so any readable version is an improvement."""
    models_dir.classifier("worse", delta=-0.05)
    models_dir.activate("classifier", "deleted-by-mistake")
    assert not any(v.active for v in mr.list_versions("classifier"))
    assert mr.compare("classifier", "worse").against is None
    mp.promote("classifier", "worse", admin, expected_active="deleted-by-mistake")
    assert models_dir.registry() == {"classifier": "worse"}


def test_doctors_cannot_promote(models_dir: ModelsDir, doctor: AuthenticatedUser) -> None:
    models_dir.classifier("better", delta=0.02)
    with pytest.raises(PermissionDenied):
        mp.promote("classifier", "better", doctor)
    assert models_dir.registry() == {"classifier": V1} and audit_rows() == []


def test_a_stale_decision_is_a_conflict(models_dir: ModelsDir, admin: AuthenticatedUser) -> None:
    """Two admins both looked at V1 as active; the second one's promotion must not silently win."""
    models_dir.classifier("cand-a", delta=0.01)
    models_dir.classifier("cand-b", delta=0.02)
    mp.promote("classifier", "cand-a", admin, expected_active=V1)
    with pytest.raises(ConflictError, match=f"changed from {V1} to cand-a"):
        mp.promote("classifier", "cand-b", admin, expected_active=V1)
    assert models_dir.registry() == {"classifier": "cand-a"}
    assert [r.action for r in audit_rows()] == ["promote", "promote_refused"]


def test_two_admins_promoting_at_once_one_wins(
    models_dir: ModelsDir, admin: AuthenticatedUser, make_user: Any
) -> None:
    other = make_user("second.admin", role="admin").user
    models_dir.classifier("cand-a", delta=0.01)
    models_dir.classifier("cand-b", delta=0.02)
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def attempt(actor: AuthenticatedUser, version: str) -> None:
        start.wait()
        try:
            mp.promote("classifier", version, actor, expected_active=V1)
            outcomes[version] = "promoted"
        except ConflictError:
            outcomes[version] = "conflict"

    threads = [
        threading.Thread(target=attempt, args=(admin, "cand-a")),
        threading.Thread(target=attempt, args=(other, "cand-b")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes.values()) == ["conflict", "promoted"]
    winner = next(v for v, o in outcomes.items() if o == "promoted")
    assert models_dir.registry() == {"classifier": winner}
    assert sorted(r.action for r in audit_rows()) == ["promote", "promote_refused"]


def test_the_registry_and_the_audit_row_change_together(
    models_dir: ModelsDir, admin: AuthenticatedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    models_dir.classifier("better", delta=0.02)
    registry_file = models_dir.root / "registry.json"
    registry_file.chmod(0o644)

    # The registry cannot be written: no audit row either.
    def no_write(_base: Path, _registry: Any) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(mr, "write_registry", no_write)
        with pytest.raises(OSError, match="disk full"):
            mp.promote("classifier", "better", admin)
    assert audit_rows() == [] and models_dir.registry() == {"classifier": V1}

    # The registry was written but the commit fails: the registry is put back.
    def failing_commit(_self: Session) -> None:
        raise RuntimeError("connection lost at commit")

    with monkeypatch.context() as patch:
        patch.setattr(Session, "commit", failing_commit)
        with pytest.raises(RuntimeError, match="connection lost"):
            mp.promote("classifier", "better", admin)
    assert audit_rows() == [] and models_dir.registry() == {"classifier": V1}

    mp.promote("classifier", "better", admin)  # and it works once the database is back
    assert models_dir.registry() == {"classifier": "better"}
    assert stat.S_IMODE(registry_file.stat().st_mode) == 0o644  # readable by the dashboard's user
    assert sorted(p.name for p in models_dir.root.iterdir()) == [
        "classifier",
        "registry.json",
    ]  # no temp files


def test_audit_page_filter_offers_the_promotion_actions() -> None:
    from core.audit import ACTIONS as AUDIT_ACTIONS

    assert {"promote", "promote_refused"} <= set(AUDIT_ACTIONS)


# ------------------------------------------------------------------ serving follows the registry


def test_after_promotion_new_diagnoses_use_the_new_version_and_old_ones_keep_theirs(
    models_dir: ModelsDir,
    admin: AuthenticatedUser,
    make_patient: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from core.xray import diagnosis as dx
    from tests.support.xray_samples import png_variant

    monkeypatch.setattr(inference, "_classifiers", {})  # this test's folders only
    models_dir.link_weights(V1)
    models_dir.classifier("cxr14-lite0-224-v2", delta=0.01, weights=True)
    make_patient("ED-77")
    assert inference.get_classifier().version == V1
    before = dx.diagnose_upload("ED-77", png_variant(1), "a.png", admin)
    assert before.models["classifier"] == V1

    # The same weights under a new name (so a reason is needed), a card measuring 0.01 better.
    mp.promote(
        "classifier", "cxr14-lite0-224-v2", admin, override_reason="v1's network, new card for the test"
    )
    loaded = inference.get_classifier()
    assert loaded.version == "cxr14-lite0-224-v2"
    assert inference.get_classifier() is loaded  # loaded once, not per call
    after = dx.diagnose_upload("ED-77", png_variant(2), "b.png", admin)
    assert after.models["classifier"] == "cxr14-lite0-224-v2"
    assert dx.get_diagnosis(before.study_id, admin, audit=False).models["classifier"] == V1


# ------------------------------------------------------------------ command line


def test_cli_list_and_compare(models_dir: ModelsDir, capsys: pytest.CaptureFixture[str]) -> None:
    models_dir.classifier("worse", delta=-0.02)
    assert main(["models", "list", "classifier"]) == 0
    out = capsys.readouterr().out
    assert f"* {V1}  test mean AUC {V1_AUC:.3f}" in out and "  worse  test mean AUC" in out
    assert "parent cxr14-lite0-224-v1" in out
    assert main(["models", "compare", "classifier", "worse"]) == 0
    out = capsys.readouterr().out
    assert "measures worse" in out and "needs --override-reason" in out and "Atelectasis" in out
    assert main(["models", "compare", "classifier", "nope"]) == 2
    assert "no classifier model 'nope'" in capsys.readouterr().err


def test_cli_promote(
    models_dir: ModelsDir,
    admin: AuthenticatedUser,
    doctor: AuthenticatedUser,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    models_dir.classifier("worse", delta=-0.02)
    args = ["models", "promote", "classifier", "worse"]
    assert main([*args, "--user", admin.username]) == 1
    assert "refused:" in capsys.readouterr().err
    assert main([*args, "--user", doctor.username, "--override-reason", REASON]) == 2
    assert "Only an administrator" in capsys.readouterr().err
    assert main([*args, "--user", "nobody", "--override-reason", REASON]) == 2
    assert main([*args, "--user", admin.username, "--override-reason", REASON]) == 0
    assert "worse is now the active classifier" in capsys.readouterr().out
    assert json.loads((models_dir.root / "registry.json").read_text()) == {"classifier": "worse"}
    rows = audit_rows()
    assert [r.action for r in rows] == ["promote_refused", "promote"]
    assert rows[-1].after is not None and rows[-1].after["override_reason"] == REASON


def test_the_comparison_shows_the_worklist_each_committed_classifier_makes() -> None:
    """A better reader of findings can still send fewer normal films to routine (each version's routine cut is
    refitted for it): the admin sees both worklists beside the headline metric."""
    committed = PROJECT_ROOT / "models"
    comparison = mr.compare("classifier", "cxr14-ens-lite0-lite2-260-v1", "cxr14-lite0-224-v1", committed)
    assert comparison.verdict == "better"
    note = next(n for n in comparison.notes if n.startswith("Worklist"))
    assert "No Finding films that are routine 48% -> 41%" in note
    assert "urgent-finding films not routine 97% -> 99%" in note
    detectors = mr.compare("detector", "det-yolo11n-320-v1", "det-yolov5nu-coco-384-v1", committed)
    assert not any(n.startswith("Worklist") for n in detectors.notes)
