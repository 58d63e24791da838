"""Triage: the level at which a study enters the emergency worklist, and whether the model is unsure.

The rule works on the classifier's calibrated probabilities and on what the model card says about each
finding (its threshold, whether it is ``urgent``), so nothing here depends on one model version. Its
parameters have defaults below, and a card may override them in a ``"triage"`` section, e.g.
``{"urgent_margin": 1.0, "uncertain_band": 0.3, "scope_warning": 0.8,
"urgent_min_probability": {"Effusion": 0.5}}``, or per finding with ``"urgent_min_probability"`` in the
finding's entry.

Rule ``triage-v4``. Each film first gets two scores in [0, 1] from the calibrated probabilities p_i:

* **abnormality** ("likely abnormal" vs "likely normal"), one of two, by the card:

  - when the card's ``"triage"`` section holds fitted weights, ``"abnormality": {"intercept": b,
    "logit_weights": {finding: w_i, ...}}``: sigmoid(b + sum_i w_i * logit(p_i)), a logistic regression on
    the findings' log-odds, fitted on the training split's reads and chosen on validation
    (``core/training/fit_abnormality.py``; any standardisation is folded into b and w_i, and every w_i >= 0,
    so a higher probability of a finding never lowers the score). It learns how much each finding's read says
    about "abnormal at all" (for ``cxr14-lite0-224-v1`` infiltration most; mass and edema nothing beyond the
    others, weight 0: an edema read still makes a film urgent by the urgent rule) and ranks normal against
    abnormal films better than the product below;
  - otherwise 1 - prod(1 - p_i) over every finding (rule v3): the chance of at least one finding if the
    findings were independent.

  Either ranks far better than "any finding over its threshold" (each threshold is set for sensitivity, so
  almost every film crosses one of fourteen);
* **urgency** = 1 - prod(1 - p_u) over the findings the card marks ``urgent``.

Then, for a finding with probability p and card threshold t:

* **urgent** when some finding the card marks ``urgent`` reaches its *urgent cut*:

  - the card's high-specificity ``rule_in_threshold`` for that finding (validation specificity >= 0.95)
    when the card has one. Urgent flag thresholds are chosen for about 90 % sensitivity and the training
    data are abnormal-enriched, so most films cross one of them; only a rule-in read makes a film urgent;
  - for cards without it, the threshold plus a margin on the log-odds scale,
    logit(cut) = logit(t) + ``urgent_margin`` (1.0: odds 2.7 times the threshold's);
  - for a finding that is urgent only when large (pleural effusion), a probability instead:
    ``urgent_min_probability`` (default 0.5 for Effusion: more likely than not, on a calibrated model).
    The model has no size output; a confident effusion read is the proxy for a large one.

* **routine** when not urgent and the abnormality score is under the card's ``routine_cut`` (its
  ``"triage"`` section), chosen on the validation split for that score, for at least 0.95 sensitivity to
  abnormal films, overall and within every image source (``core/training/evaluate_triage.py``). A card
  without a ``routine_cut`` keeps rule v2's routine: no finding over its threshold;
* **priority** the rest.

The rule that ran is stored with each diagnosis (``Triage.rule["version"]``, :attr:`TriagePolicy.version`):
``triage-v4`` with fitted weights and a routine cut, ``triage-v3`` with a routine cut on 1 - prod(1 - p),
``triage-v2`` without a routine cut (older cards); the weights and the cut are stored beside it.

What a film shows comes in two tiers: **likely** findings are over their rule-in (high-specificity) cut,
**possible** ones over the sensitive threshold t but under the rule-in cut. The tiers never change the level.

**Uncertain** ("uncertain: review") is added to the level, never substituted for it, when the level rests
on a read the model cannot make reliably, i.e. a small change of one score would change the level:
a deciding cut lies within ``uncertain_band`` log-odds (default 0.3, about +-3 points at 10 %) of the
score:

* not urgent, but an urgent finding is just under its urgent cut;
* urgent, but every finding that makes it urgent is just over its cut;
* priority or routine, but the abnormality score is just over or under the routine cut (v2 cards:
  every flagged finding just over its threshold, or some finding just under it);

or when the image's out-of-scope score is at least ``scope_warning`` (default 0.8) of the limit at which
it would have been refused: accepted, but less like the chest films the model was trained on.

Logits rather than raw differences: 0.05 means little at p = 0.5 and a lot at p = 0.02.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.ml.probability import logit, sigmoid

if TYPE_CHECKING:
    from core.ml.classifier import Classification, Classifier

#: The newest rule; what ran on one film is :attr:`TriagePolicy.version` (older cards run older rules).
RULE_VERSION = "triage-v4"
RULE_V3, RULE_V2 = "triage-v3", "triage-v2"
RULES = (RULE_V2, RULE_V3, RULE_VERSION)  # oldest first: what a card without a newer rule's fit falls back to
URGENT, PRIORITY, ROUTINE = "urgent", "priority", "routine"
#: Most pressing first: the worklist sorts by this order.
LEVELS: tuple[str, ...] = (URGENT, PRIORITY, ROUTINE)

DEFAULT_URGENT_MARGIN = 1.0
DEFAULT_UNCERTAIN_BAND = 0.3
DEFAULT_SCOPE_WARNING = 0.8
#: Findings that are urgent only when large, with the probability that stands in for "large". A card can
#: replace this (``triage.urgent_min_probability``) or set it per finding.
DEFAULT_URGENT_MIN_PROBABILITY: Mapping[str, float] = {"Effusion": 0.5}


def any_of(probabilities: Iterable[float]) -> float:
    """1 - prod(1 - p): the chance that at least one of independent events happens."""
    none = 1.0
    for p in probabilities:
        none *= 1.0 - min(max(float(p), 0.0), 1.0)
    return 1.0 - none


def scores(
    rules: Sequence[FindingRule],
    probabilities: Mapping[str, float],
    policy: TriagePolicy | None = None,
) -> tuple[float, float]:
    """(abnormality, urgency) of one film: see the module docstring. The abnormality score is the policy's
    fitted one when it has weights, 1 - prod(1 - p) over every finding otherwise."""
    weights = policy.abnormality if policy is not None else None
    if weights is not None:
        abnormality = weights.score(probabilities)
    else:
        abnormality = any_of(probabilities[r.name] for r in rules)
    urgency = any_of(probabilities[r.name] for r in rules if r.urgent)
    return abnormality, urgency


@dataclass(frozen=True)
class AbnormalityWeights:
    """A fitted abnormality score, sigmoid(intercept + sum_i w_i * logit(p_i)): the card's
    ``triage.abnormality`` (``core/training/fit_abnormality.py`` writes it)."""

    intercept: float
    logit_weights: Mapping[str, float]

    def score(self, probabilities: Mapping[str, float]) -> float:
        total = self.intercept + sum(
            w * logit(float(probabilities[n])) for n, w in self.logit_weights.items()
        )
        return sigmoid(total)

    def as_dict(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "logit_weights": dict(self.logit_weights)}

    @classmethod
    def from_card(cls, section: Mapping[str, Any], findings: Iterable[str]) -> AbnormalityWeights:
        """From the card's ``triage.abnormality``; every weighted finding must be one of ``findings``."""
        weights = {str(n): float(w) for n, w in dict(section["logit_weights"]).items()}
        unknown = sorted(set(weights) - set(findings))
        if unknown:
            raise ValueError(f"the card's triage.abnormality weights name unknown findings: {unknown}")
        return cls(intercept=float(section["intercept"]), logit_weights=weights)


@dataclass(frozen=True)
class FindingRule:
    """What triage needs to know about one finding (from the model card)."""

    name: str
    threshold: float
    urgent: bool = False
    urgent_min_probability: float | None = None  # urgent only at or over this probability ("large")
    rule_in: float | None = None  # the card's high-specificity threshold, when it has one

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class TriagePolicy:
    """The rule's parameters (see the module docstring)."""

    urgent_margin: float = DEFAULT_URGENT_MARGIN
    uncertain_band: float = DEFAULT_UNCERTAIN_BAND
    scope_warning: float = DEFAULT_SCOPE_WARNING
    urgent_min_probability: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_URGENT_MIN_PROBABILITY)
    )
    #: abnormality score under which a film that is not urgent is routine (None: rule v2's routine)
    routine_cut: float | None = None
    #: the fitted abnormality score (None: 1 - prod(1 - p), rule v3)
    abnormality: AbnormalityWeights | None = None

    @property
    def version(self) -> str:
        """The rule these parameters run (module docstring), stored with each diagnosis."""
        if self.routine_cut is None:
            return RULE_V2
        return RULE_VERSION if self.abnormality is not None else RULE_V3

    def as_dict(self) -> dict[str, Any]:
        """The rule's name and parameters as stored with a diagnosis."""
        return {
            "version": self.version,
            "urgent_margin": self.urgent_margin,
            "uncertain_band": self.uncertain_band,
            "scope_warning": self.scope_warning,
            "routine_cut": self.routine_cut,
            "abnormality": self.abnormality.as_dict() if self.abnormality is not None else None,
            "urgent_min_probability": dict(self.urgent_min_probability),
        }

    def urgent_cut(self, rule: FindingRule) -> float | None:
        """The probability at which ``rule``'s finding makes a study urgent (``None``: never)."""
        if not rule.urgent:
            return None
        size_cut = rule.urgent_min_probability
        if size_cut is None:
            size_cut = self.urgent_min_probability.get(rule.name)
        if size_cut is not None:
            return max(float(size_cut), rule.threshold)
        if rule.rule_in is not None:
            return max(rule.rule_in, rule.threshold)
        return sigmoid(logit(rule.threshold) + self.urgent_margin)


@dataclass(frozen=True)
class Triage:
    """The triage of one diagnosis: ``level`` (one of LEVELS), and whether and why it needs review."""

    level: str
    uncertain: bool
    reason: str  # why it is uncertain ("" when it is not)
    explanation: str  # why this level, in one sentence
    drivers: tuple[str, ...]  # the findings that set the level (none for routine)
    rule: dict[str, Any]  # the rule version, parameters and cuts used, stored with the diagnosis
    abnormality: float = 0.0  # the abnormality score (fitted, or 1 - prod(1 - p) over every finding)
    urgency: float = 0.0  # 1 - prod(1 - p) over the urgent findings
    likely: tuple[str, ...] = ()  # over their rule-in (high-specificity) cut, most probable first
    possible: tuple[str, ...] = ()  # over the sensitive threshold, under the rule-in cut

    @property
    def rank(self) -> int:
        """0 for the most pressing level."""
        return LEVELS.index(self.level)

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "uncertain": self.uncertain,
            "reason": self.reason,
            "abnormality": round(self.abnormality, 4),
            "urgency": round(self.urgency, 4),
            "likely": list(self.likely),
            "possible": list(self.possible),
        }


def policy_from_card(card: Mapping[str, Any]) -> TriagePolicy:
    """The policy for a model version: the defaults, overridden by the card's ``"triage"`` section."""
    section = card.get("triage") or {}
    fitted = section.get("abnormality")
    names = [f["name"] for f in card.get("findings", ())]
    return TriagePolicy(
        urgent_margin=float(section.get("urgent_margin", DEFAULT_URGENT_MARGIN)),
        uncertain_band=float(section.get("uncertain_band", DEFAULT_UNCERTAIN_BAND)),
        scope_warning=float(section.get("scope_warning", DEFAULT_SCOPE_WARNING)),
        urgent_min_probability=dict(section.get("urgent_min_probability", DEFAULT_URGENT_MIN_PROBABILITY)),
        routine_cut=float(section["routine_cut"]) if section.get("routine_cut") is not None else None,
        abnormality=AbnormalityWeights.from_card(fitted, names) if fitted else None,
    )


def rules_from_card(card: Mapping[str, Any]) -> tuple[FindingRule, ...]:
    """One :class:`FindingRule` per finding of the card, in card order."""
    return tuple(
        FindingRule(
            name=f["name"],
            threshold=float(f["threshold"]),
            urgent=bool(f.get("urgent", False)),
            urgent_min_probability=(
                float(f["urgent_min_probability"]) if f.get("urgent_min_probability") is not None else None
            ),
            rule_in=float(f["rule_in_threshold"]) if f.get("rule_in_threshold") is not None else None,
        )
        for f in card["findings"]
    )


def _listed(parts: Sequence[str], most: int = 4) -> str:
    # A reason is read at a glance: the first few, then how many more.
    shown = ", ".join(parts[:most])
    return shown + (f" and {len(parts) - most} more" if len(parts) > most else "")


def _pct(p: float) -> str:
    # One decimal: the reasons compare a probability with a cut a few points away.
    return f"{p:.1%}"


def _tiers(rules: Sequence[FindingRule], probabilities: Mapping[str, float]) -> tuple[tuple[str, ...], ...]:
    """(likely, possible) finding names, most probable first."""
    ordered = sorted(rules, key=lambda r: -probabilities[r.name])
    likely = tuple(r.name for r in ordered if r.rule_in is not None and probabilities[r.name] >= r.rule_in)
    possible = tuple(r.name for r in ordered if probabilities[r.name] >= r.threshold and r.name not in likely)
    return likely, possible


def _not_urgent(
    rules: Sequence[FindingRule],
    probabilities: Mapping[str, float],
    abnormality: float,
    policy: TriagePolicy,
    doubts: list[str],
) -> tuple[str, tuple[str, ...], str]:
    """(level, drivers, explanation) of a film that is not urgent: priority or routine."""
    band = policy.uncertain_band
    flagged = sorted(
        ((r, probabilities[r.name]) for r in rules if probabilities[r.name] >= r.threshold),
        key=lambda f: -f[1],
    )
    drivers = tuple(r.name for r, _ in flagged)
    cut = policy.routine_cut
    if cut is not None:  # rules v3 and v4: the abnormality score decides
        margin = logit(abnormality) - logit(cut)
        if abs(margin) < band:
            side = "over" if margin >= 0 else "under"
            doubts.append(
                f"abnormality score {_pct(abnormality)} only just {side} the routine cut {_pct(cut)}"
            )
        if margin < 0:
            return (
                ROUTINE,
                (),
                f"Routine: likely normal (abnormality score {_pct(abnormality)}, routine under {_pct(cut)})",
            )
        shown = _listed([f"{r.label} {_pct(p)}" for r, p in flagged]) if flagged else "no single finding"
        return (
            PRIORITY,
            drivers,
            f"Priority: likely abnormal (abnormality score {_pct(abnormality)}): {shown}",
        )
    if flagged:  # rule v2's routine, for cards without a routine cut
        if all(logit(p) - logit(r.threshold) < band for r, p in flagged):
            doubts.append(
                "every finding over its threshold is only just over it: "
                + _listed([f"{r.label} {_pct(p)} vs {_pct(r.threshold)}" for r, p in flagged])
            )
        return (
            PRIORITY,
            drivers,
            "Priority: over threshold: " + _listed([f"{r.label} {_pct(p)}" for r, p in flagged]),
        )
    near = [
        (r, probabilities[r.name])
        for r in rules
        if -band < logit(probabilities[r.name]) - logit(r.threshold) < 0
    ]
    if near:
        doubts.append(
            "just under the threshold: "
            + _listed([f"{r.label} {_pct(p)} vs {_pct(r.threshold)}" for r, p in near])
        )
    return ROUTINE, (), "Routine: no finding over its threshold"


def assess(
    rules: Sequence[FindingRule],
    probabilities: Mapping[str, float],
    scope_score: float,
    scope_limit: float,
    policy: TriagePolicy | None = None,
) -> Triage:
    """Apply the policy's rule (module docstring) to one image's calibrated probabilities."""
    policy = policy or TriagePolicy()
    band = policy.uncertain_band
    abnormality, urgency = scores(rules, probabilities, policy)

    def gap(p: float, cut: float) -> float:
        return logit(p) - logit(cut)

    # (rule, probability, urgent cut) for the findings the card marks urgent
    urgent = [(r, probabilities[r.name], policy.urgent_cut(r)) for r in rules if r.urgent]
    urgent_hits = [(r, p, c) for r, p, c in urgent if c is not None and p >= c]
    doubts: list[str] = []

    if urgent_hits:
        level = URGENT
        drivers = tuple(r.name for r, _, _ in sorted(urgent_hits, key=lambda h: -h[1]))
        explanation = "Urgent: " + _listed(
            [f"{r.label} {_pct(p)} (urgent from {_pct(c)})" for r, p, c in urgent_hits]
        )
        if all(gap(p, c) < band for _, p, c in urgent_hits):
            doubts.append(
                "only just over the urgent cut: "
                + _listed([f"{r.label} {_pct(p)} vs {_pct(c)}" for r, p, c in urgent_hits])
            )
    else:
        near_urgent = [(r, p, c) for r, p, c in urgent if c is not None and -band < gap(p, c) < 0]
        if near_urgent:
            doubts.append(
                "close to urgent: "
                + _listed([f"{r.label} {_pct(p)} (urgent from {_pct(c)})" for r, p, c in near_urgent])
            )
        level, drivers, explanation = _not_urgent(rules, probabilities, abnormality, policy, doubts)
    if scope_limit > 0 and scope_score >= policy.scope_warning * scope_limit:
        doubts.append(
            f"the image is less typical of the training chest X-rays (scope score {scope_score:.2f}, "
            f"refused from {scope_limit:.2f})"
        )
    likely, possible = _tiers(rules, probabilities)
    rule = {
        **policy.as_dict(),
        "urgent_cuts": {r.name: round(c, 6) for r, _, c in urgent if c is not None},
    }
    return Triage(
        level=level,
        uncertain=bool(doubts),
        reason="; ".join(doubts),
        explanation=explanation,
        drivers=drivers,
        rule=rule,
        abnormality=abnormality,
        urgency=urgency,
        likely=likely,
        possible=possible,
    )


def assess_classification(classifier: Classifier, result: Classification) -> Triage:
    """Triage of one classification, with the rules and policy of the classifier's own model card."""
    return assess(
        rules_from_card(classifier.card),
        result.probabilities,
        result.scope_score,
        classifier.scope.threshold,
        policy_from_card(classifier.card),
    )


__all__ = [
    "LEVELS",
    "PRIORITY",
    "ROUTINE",
    "RULE_V2",
    "RULE_V3",
    "RULE_VERSION",
    "URGENT",
    "AbnormalityWeights",
    "FindingRule",
    "Triage",
    "TriagePolicy",
    "assess",
    "any_of",
    "assess_classification",
    "policy_from_card",
    "rules_from_card",
    "scores",
]
