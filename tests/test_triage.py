"""The triage rule (core/ml/triage.py): levels, the uncertain band, scope, and card overrides."""

from __future__ import annotations

import pytest

from core.ml import triage
from core.ml.probability import logit, sigmoid
from core.ml.triage import PRIORITY, ROUTINE, URGENT, FindingRule, TriagePolicy, assess
from db.models import TRIAGE_LEVELS

RULES = (
    FindingRule("Pneumothorax", 0.10, urgent=True),  # urgent cut: sigmoid(logit(0.10) + 1) = 0.232
    FindingRule("Effusion", 0.20, urgent=True),  # urgent only when large: 0.5 by default
    FindingRule("Nodule", 0.10),
    FindingRule("Hernia", 0.02),
)
LOW = {"Pneumothorax": 0.01, "Effusion": 0.02, "Nodule": 0.01, "Hernia": 0.001}


def read(scope: float = 1.0, limit: float = 2.0, policy: TriagePolicy | None = None, **probs: float):  # type: ignore[no-untyped-def]
    return assess(RULES, {**LOW, **probs}, scope, limit, policy)


def test_levels_are_the_databases_and_ordered_most_pressing_first() -> None:
    assert triage.LEVELS == TRIAGE_LEVELS == (URGENT, PRIORITY, ROUTINE)


def test_nothing_near_a_threshold_is_a_confident_routine() -> None:
    t = read()
    assert (t.level, t.uncertain, t.reason, t.drivers) == (ROUTINE, False, "", ())


def test_flagged_finding_is_priority() -> None:
    t = read(Nodule=0.3)
    assert (t.level, t.uncertain, t.drivers) == (PRIORITY, False, ("Nodule",))
    assert "Nodule 30.0%" in t.explanation


def test_urgent_finding_needs_a_margin_over_its_threshold() -> None:
    cut = TriagePolicy().urgent_cut(RULES[0])
    assert cut == pytest.approx(0.2320, abs=1e-4)
    # over the (high-sensitivity) threshold but well under the urgent cut: flagged, so priority
    assert read(Pneumothorax=0.15).level == PRIORITY
    clear = read(Pneumothorax=0.6)
    assert (clear.level, clear.uncertain, clear.drivers) == (URGENT, False, ("Pneumothorax",))
    assert clear.rule["urgent_cuts"]["Pneumothorax"] == pytest.approx(cut, abs=1e-6)


def test_the_cards_rule_in_threshold_is_the_urgent_cut_when_present() -> None:
    rules = (FindingRule("Pneumothorax", 0.05, urgent=True, rule_in=0.28), FindingRule("Nodule", 0.10))
    probs = {"Pneumothorax": 0.20, "Nodule": 0.01}
    # margin rule alone would make 0.20 urgent (cut 0.125); the rule-in cut keeps it a priority read
    assert TriagePolicy().urgent_cut(rules[0]) == pytest.approx(0.28)
    assert assess(rules, probs, 1.0, 2.0).level == PRIORITY
    assert assess(rules, {**probs, "Pneumothorax": 0.35}, 1.0, 2.0).level == URGENT
    card = {
        "findings": [{"name": "Pneumothorax", "threshold": 0.05, "urgent": True, "rule_in_threshold": 0.28}]
    }
    assert triage.rules_from_card(card)[0].rule_in == pytest.approx(0.28)


def test_effusion_is_urgent_only_when_probable_enough_to_stand_for_large() -> None:
    assert read(Effusion=0.3).level == PRIORITY
    assert read(Effusion=0.7).level == URGENT
    near = read(Effusion=0.46)
    assert near.level == PRIORITY and near.uncertain and "close to urgent" in near.reason


@pytest.mark.parametrize(
    ("probs", "level", "phrase"),
    [
        ({"Nodule": 0.095}, ROUTINE, "just under the threshold: Nodule 9.5% vs 10.0%"),
        ({"Nodule": 0.105}, PRIORITY, "only just over"),
        ({"Pneumothorax": 0.22}, PRIORITY, "close to urgent: Pneumothorax 22.0% (urgent from 23.2%)"),
        ({"Pneumothorax": 0.24}, URGENT, "only just over the urgent cut"),
    ],
)
def test_a_probability_within_the_band_of_a_deciding_cut_is_uncertain(
    probs: dict[str, float], level: str, phrase: str
) -> None:
    t = read(**probs)
    assert t.level == level
    assert t.uncertain and phrase in t.reason


def test_a_clear_finding_removes_the_doubt_of_a_marginal_one() -> None:
    # priority rests on the nodule, not on the marginal hernia
    assert not read(Nodule=0.4, Hernia=0.021).uncertain
    # urgent rests on a clear pneumothorax, not on the marginal effusion
    assert not read(Pneumothorax=0.7, Effusion=0.51).uncertain


def test_an_image_near_the_scope_limit_is_uncertain_whatever_the_level() -> None:
    t = read(scope=1.7, limit=2.0, Nodule=0.4)
    assert t.level == PRIORITY and t.uncertain and "less typical" in t.reason
    assert not read(scope=1.5, limit=2.0, Nodule=0.4).uncertain


def test_card_overrides_policy_and_per_finding_cut() -> None:
    card = {
        "findings": [
            {"name": "Pneumothorax", "threshold": 0.1, "urgent": True},
            {"name": "Effusion", "threshold": 0.2, "urgent": True, "urgent_min_probability": 0.8},
            {"name": "Nodule", "threshold": 0.1, "urgent": False},
        ],
        "triage": {"urgent_margin": 0.5, "uncertain_band": 0.1, "scope_warning": 0.9},
    }
    policy = triage.policy_from_card(card)
    rules = triage.rules_from_card(card)
    assert (policy.urgent_margin, policy.uncertain_band, policy.scope_warning) == (0.5, 0.1, 0.9)
    assert policy.urgent_cut(rules[1]) == 0.8
    probs = {"Pneumothorax": 0.16, "Effusion": 0.7, "Nodule": 0.0}
    t = assess(rules, probs, 1.0, 2.0, policy)
    # Pneumothorax cut = sigmoid(logit(0.1) + 0.5) = 0.155; the effusion is under its card cut
    assert t.level == URGENT and t.drivers == ("Pneumothorax",)
    # no routine cut on this card: rule v2's routine ran, and the stored rule says so
    assert t.rule["version"] == triage.RULE_V2 and t.rule["uncertain_band"] == 0.1


def test_a_card_without_a_triage_section_uses_the_defaults() -> None:
    policy = triage.policy_from_card({"findings": []})
    assert policy == TriagePolicy()


# ------------------------------------------------------------------ rule v3: scores, routine cut, tiers

V3 = TriagePolicy(routine_cut=0.5)


def test_scores_are_the_chance_of_any_finding_and_of_any_urgent_finding() -> None:
    probs = {**LOW, "Pneumothorax": 0.2, "Nodule": 0.5}
    abnormality, urgency = triage.scores(RULES, probs)
    assert abnormality == pytest.approx(1 - 0.8 * 0.98 * 0.5 * 0.999)
    assert urgency == pytest.approx(1 - 0.8 * 0.98)
    assert triage.any_of([]) == 0.0 and triage.any_of([1.0, 0.3]) == 1.0


def test_with_a_routine_cut_a_flagged_finding_alone_does_not_make_a_film_priority() -> None:
    # the nodule is over its (sensitive) threshold, but the film as a whole is under the routine cut
    t = read(policy=V3, Nodule=0.3)
    assert (t.level, t.drivers) == (ROUTINE, ())
    assert "likely normal" in t.explanation and t.possible == ("Nodule",) and t.likely == ()
    assert t.rule["routine_cut"] == 0.5 and t.rule["version"] == "triage-v3"


def test_over_the_routine_cut_is_priority_with_the_flagged_findings_as_drivers() -> None:
    t = read(policy=V3, Nodule=0.7)
    assert (t.level, t.drivers) == (PRIORITY, ("Nodule",))
    assert "likely abnormal" in t.explanation and not t.uncertain


def test_an_abnormality_score_near_the_routine_cut_is_uncertain_on_either_side() -> None:
    under, over = read(policy=V3, Nodule=0.45), read(policy=V3, Nodule=0.53)
    assert under.level == ROUTINE and under.uncertain and "just under the routine cut" in under.reason
    assert over.level == PRIORITY and over.uncertain and "just over the routine cut" in over.reason


def test_urgent_wins_over_the_routine_cut() -> None:
    t = read(policy=TriagePolicy(routine_cut=0.99), Pneumothorax=0.6)
    assert t.level == URGENT


def test_likely_findings_are_over_their_rule_in_cut_possible_ones_only_over_the_threshold() -> None:
    rules = (
        FindingRule("Pneumothorax", 0.05, urgent=True, rule_in=0.3),
        FindingRule("Nodule", 0.10, rule_in=0.4),
        FindingRule("Hernia", 0.02),
    )
    t = assess(rules, {"Pneumothorax": 0.35, "Nodule": 0.2, "Hernia": 0.03}, 1.0, 2.0, V3)
    assert t.likely == ("Pneumothorax",)
    assert t.possible == ("Nodule", "Hernia")  # most probable first; Hernia has no rule-in cut
    assert t.as_dict()["likely"] == ["Pneumothorax"]
    assert set(t.as_dict()) >= {"level", "uncertain", "reason", "abnormality", "urgency"}


def test_the_published_card_has_fitted_weights_and_a_routine_cut_chosen_on_validation() -> None:
    import json

    from core.ml.registry import active_model_dir

    card = json.loads((active_model_dir("classifier") / "card.json").read_text())
    policy = triage.policy_from_card(card)
    assert policy.routine_cut is not None and 0.0 < policy.routine_cut < 1.0
    assert "validation" in card["triage"]["routine_cut_rule"]
    assert policy.abnormality is not None and policy.version == card["triage"]["rule"] == triage.RULE_VERSION
    assert set(policy.abnormality.logit_weights) == {f["name"] for f in card["findings"]}
    assert all(w >= 0 for w in policy.abnormality.logit_weights.values())
    assert "train" in card["triage"]["abnormality"]["fitted_on"]
    assert "validation" in card["triage"]["abnormality"]["chosen_by"]


# ------------------------------------------------------------------ rule v4: the fitted abnormality score

WEIGHTS = triage.AbnormalityWeights(
    intercept=5.0, logit_weights={"Pneumothorax": 0.5, "Effusion": 0.0, "Nodule": 1.0, "Hernia": 0.25}
)
V4 = TriagePolicy(routine_cut=0.5, abnormality=WEIGHTS)
V4_CARD = {
    "findings": [{"name": r.name, "threshold": r.threshold, "urgent": r.urgent} for r in RULES],
    "triage": {
        "routine_cut": 0.5,
        "abnormality": {"intercept": 5.0, "logit_weights": dict(WEIGHTS.logit_weights), "fitted_on": "x"},
    },
}


def test_with_weights_the_abnormality_score_is_the_fitted_logistic_on_the_log_odds() -> None:
    probs = {**LOW, "Pneumothorax": 0.2, "Nodule": 0.5}
    expected = sigmoid(5.0 + 0.5 * logit(0.2) + 0.0 * logit(0.02) + 1.0 * logit(0.5) + 0.25 * logit(0.001))
    abnormality, urgency = triage.scores(RULES, probs, V4)
    assert abnormality == pytest.approx(expected)
    assert urgency == pytest.approx(1 - 0.8 * 0.98)  # the urgency score does not change
    # without weights (or without a policy) the score stays 1 - prod(1 - p)
    for policy in (None, TriagePolicy(routine_cut=0.5)):
        assert triage.scores(RULES, probs, policy)[0] == pytest.approx(1 - 0.8 * 0.98 * 0.5 * 0.999)
    # assess stores and decides on the same score
    assert assess(RULES, probs, 1.0, 2.0, V4).abnormality == pytest.approx(expected)


@pytest.mark.parametrize("finding", ["Pneumothorax", "Nodule", "Hernia"])
def test_the_fitted_score_rises_with_every_positively_weighted_finding(finding: str) -> None:
    values = [
        triage.scores(RULES, {**LOW, finding: p}, V4)[0] for p in (0.001, 0.01, 0.1, 0.3, 0.6, 0.9, 0.999)
    ]
    assert all(b > a for a, b in zip(values, values[1:], strict=False))


def test_the_card_weights_decide_routine_and_the_rule_is_stored_as_v4() -> None:
    policy = triage.policy_from_card(V4_CARD)
    assert policy == V4 and policy.version == triage.RULE_VERSION == "triage-v4"
    rules = triage.rules_from_card(V4_CARD)
    # 1 - prod(1 - p) of this film is 0.37 (routine under v3's cut 0.5); the fitted score is 0.59
    probs = {**LOW, "Nodule": 0.35}
    v3 = assess(rules, probs, 1.0, 2.0, TriagePolicy(routine_cut=0.5))
    v4 = assess(rules, probs, 1.0, 2.0, policy)
    assert (v3.level, v4.level) == (ROUTINE, PRIORITY)
    assert v3.rule["version"] == triage.RULE_V3 and v3.rule["abnormality"] is None
    assert v4.rule["version"] == "triage-v4" and v4.rule["routine_cut"] == 0.5
    assert v4.rule["abnormality"] == {"intercept": 5.0, "logit_weights": dict(WEIGHTS.logit_weights)}
    # a very normal read is routine, with the uncertain band on the fitted score's log-odds
    calm = assess(
        rules, {"Pneumothorax": 0.001, "Effusion": 0.01, "Nodule": 0.05, "Hernia": 0.001}, 1.0, 2.0, policy
    )
    assert calm.level == ROUTINE and not calm.uncertain
    assert "likely normal" in calm.explanation


def test_the_uncertain_band_applies_to_the_fitted_score_on_the_log_odds_scale() -> None:
    # find the nodule probability that puts the fitted score exactly on the routine cut, then step around it
    base = WEIGHTS.intercept + 0.5 * logit(0.01) + 0.25 * logit(0.001)
    on_cut = sigmoid(-base)  # logit(Nodule) = -base -> score 0.5
    just_under = assess(RULES, {**LOW, "Nodule": sigmoid(logit(on_cut) - 0.2)}, 1.0, 2.0, V4)
    just_over = assess(RULES, {**LOW, "Nodule": sigmoid(logit(on_cut) + 0.2)}, 1.0, 2.0, V4)
    far_under = assess(RULES, {**LOW, "Nodule": sigmoid(logit(on_cut) - 0.5)}, 1.0, 2.0, V4)
    assert just_under.level == ROUTINE and "just under the routine cut" in just_under.reason
    assert just_over.level == PRIORITY and "just over the routine cut" in just_over.reason
    assert far_under.level == ROUTINE and not far_under.uncertain


def test_urgent_still_wins_over_a_low_fitted_score() -> None:
    # Effusion has weight 0: a large effusion barely moves the fitted score but is still urgent
    t = assess(RULES, {**LOW, "Effusion": 0.9}, 1.0, 2.0, V4)
    assert t.level == URGENT and t.rule["version"] == "triage-v4"


def test_a_card_without_weights_behaves_exactly_as_before() -> None:
    card = {**V4_CARD, "triage": {"routine_cut": 0.5}}
    policy = triage.policy_from_card(card)
    assert policy == V3 and policy.abnormality is None and policy.version == triage.RULE_V3
    for probs in ({}, {"Nodule": 0.3}, {"Nodule": 0.45}, {"Nodule": 0.7}, {"Pneumothorax": 0.6}):
        with_card = read(policy=policy, **probs)
        direct = read(policy=V3, **probs)
        assert with_card == direct
        abnormality, _ = triage.scores(RULES, {**LOW, **probs})
        assert with_card.abnormality == pytest.approx(abnormality)


def test_weights_naming_a_finding_the_card_does_not_have_are_refused() -> None:
    card = {**V4_CARD, "triage": {"abnormality": {"intercept": 0.0, "logit_weights": {"Moon": 1.0}}}}
    with pytest.raises(ValueError, match="Moon"):
        triage.policy_from_card(card)


def test_weights_without_a_routine_cut_keep_rule_v2s_routine() -> None:
    # the state between fitting the weights and choosing their cut (fit_abnormality --write-card drops the
    # old cut): nothing is routed by a cut chosen for another score
    policy = TriagePolicy(abnormality=WEIGHTS)
    assert policy.version == triage.RULE_V2
    t = read(policy=policy, Nodule=0.3)
    assert t.level == PRIORITY and t.rule["version"] == triage.RULE_V2
