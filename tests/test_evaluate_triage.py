"""The triage evaluation's choices and figures (core/training/evaluate_triage.py) and the worklist simulation
(scripts/simulate_worklist.py), on small made-up data whose answers are known."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from core.training import evaluate_triage as et

ROOT = Path(__file__).resolve().parent.parent


def _simulator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "simulate_worklist", ROOT / "scripts" / "simulate_worklist.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["simulate_worklist"] = module
    spec.loader.exec_module(module)
    return module


def test_the_sensitive_cut_keeps_at_least_the_asked_share_of_positives() -> None:
    scores = np.arange(100) / 100.0
    positive = np.ones(100, dtype=bool)
    cut = et.sensitive_cut(scores, positive, 0.95)
    assert (scores[positive] >= cut).mean() >= 0.95
    assert (scores[positive] >= cut + 0.01).mean() < 0.95  # the largest such cut
    assert et.sensitive_cut(scores, np.zeros(100, dtype=bool)) == 1.0


def test_the_routine_cut_holds_in_every_source_with_enough_abnormal_films() -> None:
    rng = np.random.default_rng(0)
    # source A separates well, source B badly: B's constraint must set the cut
    scores = np.concatenate([rng.uniform(0.5, 1, 40), rng.uniform(0, 0.5, 40), rng.uniform(0, 1, 40)])
    grp = np.array([et.URGENT_GROUP] * 40 + [et.NF] * 40 + [et.OTHER] * 40)
    sources = np.array(["A"] * 80 + ["B"] * 40)
    cut, constraints = et.choose_routine_cut(scores, grp, sources)
    assert cut == min(constraints.values()) == constraints["abnormal films, B"]
    for source in ("A", "B"):
        abnormal = (grp != et.NF) & (sources == source)
        assert (scores[abnormal] >= cut).mean() >= 0.95


def test_reweighting_to_another_case_mix() -> None:
    level = np.array(["routine", "routine", "priority", "urgent", "urgent", "priority"])
    grp = np.array([et.NF, et.NF, et.NF, et.URGENT_GROUP, et.OTHER, et.URGENT_GROUP])
    prevalence = {et.NF: 0.5, et.URGENT_GROUP: 0.25, et.OTHER: 0.25}
    rw = et.reweighted(level, grp, prevalence)
    assert rw["No Finding routine"] == pytest.approx(2 / 3)
    assert rw["share routine"] == pytest.approx(0.5 * 2 / 3)
    # urgent: half of the urgent-finding films, all of the other abnormal ones
    assert rw["urgent PPV"] == pytest.approx(0.25 * 0.5 / (0.25 * 0.5 + 0.25 * 1.0))


def test_the_worklist_simulation_reads_every_film_and_triage_serves_urgent_first() -> None:
    sim = _simulator()
    n = 200
    rank = np.array([0] * 20 + [2] * 180)  # 20 urgent films, the rest routine
    labels = np.zeros((n, 14), dtype=np.int8)
    labels[:20, 0] = 1
    films = sim.Films(
        rank,
        (rank == 0).astype(float),
        labels,
        ~labels.any(axis=1),
        tuple(f"F{i}" for i in range(14)),
    )
    times = {}
    for ordering in sim.ORDERINGS:
        drawn, rtat = sim.simulate(films, ordering, np.random.default_rng(3), 1.2, 1, 8.0, 4.0, 2.0, 60.0)
        assert len(rtat) == len(drawn) and np.all(rtat > 0)  # every arrival got a report
        times[ordering] = rtat[rank[drawn] == 0].mean()
    assert times["triage"] < times["FIFO"] / 2
    assert times["triage"] <= times["triage + limit"] <= times["FIFO"] * 1.05


# ------------------------------------------------------------------ rule v4: fitting the abnormality score

NAMES = ("Atelectasis", "Effusion", "Mass")


def _reads(n: int, seed: int, sources: tuple[str, ...] = ("A", "B")) -> et.Reads:
    """Made-up reads: Atelectasis tracks abnormal films strongly, Effusion weakly, Mass runs the wrong way."""
    rng = np.random.default_rng(seed)
    abnormal = rng.random(n) < 0.5
    labels = np.zeros((n, len(NAMES)), dtype=np.int8)
    labels[abnormal, 0] = 1
    labels[abnormal & (rng.random(n) < 0.4), 1] = 1  # some with an (urgent) effusion
    z = np.stack(
        [
            2.0 * abnormal + rng.normal(0, 1, n),
            0.5 * abnormal + rng.normal(0, 1, n),
            -0.7 * abnormal + rng.normal(0, 1, n),
        ],
        axis=1,
    )
    probs = 1 / (1 + np.exp(-(z - 1.5)))
    return et.Reads(
        probs,
        np.zeros((n, 2), dtype=np.float32),
        labels,
        np.arange(n).astype(str),
        np.array([sources[i % len(sources)] for i in range(n)]),
        np.zeros(n, dtype=bool),
    )


def test_the_constrained_fit_is_the_ordinary_logistic_regression_when_no_weight_is_held_at_zero() -> None:
    from sklearn.linear_model import LogisticRegression

    from core.training import fit_abnormality as fa

    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (400, 2))
    y = (x @ np.array([1.5, 0.7]) + rng.logistic(0, 1, 400) > 0).astype(int)
    b, w = fa.fit_head(x, y, penalty=1.0)
    ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(x, y)
    assert w == pytest.approx(ref.coef_[0], abs=2e-3) and b == pytest.approx(ref.intercept_[0], abs=2e-3)


def test_fitting_chooses_by_validation_and_writes_weights_the_runtime_reads(tmp_path: Path) -> None:
    import json

    from core.ml import triage
    from core.training import fit_abnormality as fa

    train, val = _reads(600, 0), _reads(300, 1)
    found = fa.candidates(train, val, NAMES)
    assert len(found) == len(fa.PENALTIES) * len(fa.WEIGHTINGS)
    chosen = fa.choose(found)
    assert chosen.val_auc == max(c.val_auc for c in found)  # validation decides, not train
    weights = chosen.weights.logit_weights
    assert weights["Atelectasis"] > weights["Effusion"] > 0
    assert weights["Mass"] == 0.0  # anti-correlated: held at zero, so the score never falls as p rises

    # the card the runtime reads: weights in, the cut chosen for the old score out
    card = {
        "version": "toy",
        "findings": [{"name": n, "threshold": 0.3, "urgent": n == "Effusion"} for n in NAMES],
        "triage": {"rule": "triage-v3", "routine_cut": 0.468, "routine_cut_rule": "old"},
    }
    (tmp_path / "card.json").write_text(json.dumps(card))
    (tmp_path / "MODEL_CARD.md").write_text("# Model card\n")
    films = {"train": 600, "val": 300}
    fa.write_card(tmp_path, fa.card_section(chosen, found, films), "the table")
    written = json.loads((tmp_path / "card.json").read_text())
    policy = triage.policy_from_card(written)
    assert policy.abnormality == chosen.weights and policy.routine_cut is None
    assert written["triage"]["rule"] == policy.version == triage.RULE_V2
    assert "triage-abnormality:begin" in (tmp_path / "MODEL_CARD.md").read_text()

    # the runtime's score is the fitted logistic regression: it ranks validation as the fit measured
    scores, _ = et.film_scores(
        SimpleNamespace(card=written, finding_names=NAMES),  # type: ignore[arg-type]
        val,
        policy,
    )
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(val.labels.any(axis=1), scores) == pytest.approx(chosen.val_auc)


def test_the_evaluation_compares_the_fitted_rule_with_the_rules_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import functools

    monkeypatch.setattr(et, "_bootstrap", functools.partial(et._bootstrap, reps=50))  # fast: CIs not checked
    from core.ml import triage
    from core.training import fit_abnormality as fa

    train, val = _reads(600, 0), _reads(300, 1)
    chosen = fa.choose(fa.candidates(train, val, NAMES))
    card = {
        "findings": [{"name": n, "threshold": 0.3, "urgent": n == "Effusion"} for n in NAMES],
        "triage": {"abnormality": chosen.weights.as_dict()},
    }
    classifier = SimpleNamespace(card=card, finding_names=NAMES)
    compared = et.rules_compared(classifier, val)  # type: ignore[arg-type]
    assert list(compared) == [triage.RULE_VERSION, triage.RULE_V3, triage.RULE_V2]
    v4, v3 = compared[triage.RULE_VERSION][0], compared[triage.RULE_V3][0]
    assert v4.abnormality == chosen.weights and v3.abnormality is None
    assert compared[triage.RULE_V2][0].routine_cut is None
    # each cut is chosen on validation for its own score
    grp = et.groups(classifier, val)  # type: ignore[arg-type]
    for policy in (v4, v3):
        score, _ = et.film_scores(classifier, val, policy)  # type: ignore[arg-type]
        assert policy.routine_cut == et.choose_routine_cut(score, grp, val.sources)[0]

    # a paired difference of a rule with itself is zero, with a zero-width interval
    level = et.levels(classifier, val, v4)  # type: ignore[arg-type]
    score, _ = et.film_scores(classifier, val, v4)  # type: ignore[arg-type]
    diffs = et.paired_differences((level, score), (level, score), grp, val)
    assert [d["overall"]["value"] for d in diffs] == [0.0] * 4
    assert all(d["overall"]["ci95"] == [0.0, 0.0] for d in diffs)
