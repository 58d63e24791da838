"""Triage: the level at which a study enters the emergency worklist, and whether the model is unsure.

The rule works on the classifier's calibrated probabilities and on what the model card says about each
finding (its threshold, whether it is ``urgent``), so nothing here depends on one model version. Its
parameters have defaults below, and a card may override them in a ``"triage"`` section, e.g.
``{"urgent_margin": 1.0, "uncertain_band": 0.3, "scope_warning": 0.8,
"urgent_min_probability": {"Effusion": 0.5}}``, or per finding with ``"urgent_min_probability"`` in the
finding's entry.

Rule ``triage-v2``. For a finding with calibrated probability p and card threshold t (flagged when p >= t):

* **urgent** when some finding the card marks ``urgent`` reaches its *urgent cut*:

  - the card's high-specificity ``rule_in_threshold`` for that finding (validation specificity >= 0.95)
    when the card has one. Urgent flag thresholds are chosen for about 90 % sensitivity and the training
    data are abnormal-enriched, so most films cross one of them; only a rule-in read makes a film urgent;
  - for cards without it, the threshold plus a margin on the log-odds scale,
    logit(cut) = logit(t) + ``urgent_margin`` (1.0: odds 2.7 times the threshold's);
  - for a finding that is urgent only when large (pleural effusion), a probability instead:
    ``urgent_min_probability`` (default 0.5 for Effusion: more likely than not, on a calibrated model).
    The model has no size output; a confident effusion read is the proxy for a large one.

* **priority** when any finding is flagged (p >= t);
* **routine** otherwise.

**Uncertain** ("uncertain: review") is added to the level, never substituted for it, when the level rests
on a read the model cannot make reliably, i.e. a small change of one probability would change the level:
a deciding cut lies within ``uncertain_band`` log-odds (default 0.3, about +-3 points at 10 %) of the
probability:

* not urgent, but an urgent finding is just under its urgent cut;
* urgent, but every finding that makes it urgent is just over its cut;
* priority, but every flagged finding is just over its threshold;
* routine, but some finding is just under its threshold;

or when the image's out-of-scope score is at least ``scope_warning`` (default 0.8) of the limit at which
it would have been refused: accepted, but less like the chest films the model was trained on.

Logits rather than raw differences: 0.05 means little at p = 0.5 and a lot at p = 0.02.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.ml.classifier import Classification, Classifier

RULE_VERSION = "triage-v2"
URGENT, PRIORITY, ROUTINE = "urgent", "priority", "routine"
#: Most pressing first: the worklist sorts by this order.
LEVELS: tuple[str, ...] = (URGENT, PRIORITY, ROUTINE)

DEFAULT_URGENT_MARGIN = 1.0
DEFAULT_UNCERTAIN_BAND = 0.3
DEFAULT_SCOPE_WARNING = 0.8
#: Findings that are urgent only when large, with the probability that stands in for "large". A card can
#: replace this (``triage.urgent_min_probability``) or set it per finding.
DEFAULT_URGENT_MIN_PROBABILITY: Mapping[str, float] = {"Effusion": 0.5}


def logit(p: float) -> float:
    """log(p / (1 - p)), with p kept inside (1e-6, 1 - 1e-6)."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    """The inverse of :func:`logit`."""
    return 1.0 / (1.0 + math.exp(-x))


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

    @property
    def rank(self) -> int:
        """0 for the most pressing level."""
        return LEVELS.index(self.level)

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "uncertain": self.uncertain, "reason": self.reason}


def policy_from_card(card: Mapping[str, Any]) -> TriagePolicy:
    """The policy for a model version: the defaults, overridden by the card's ``"triage"`` section."""
    section = card.get("triage") or {}
    return TriagePolicy(
        urgent_margin=float(section.get("urgent_margin", DEFAULT_URGENT_MARGIN)),
        uncertain_band=float(section.get("uncertain_band", DEFAULT_UNCERTAIN_BAND)),
        scope_warning=float(section.get("scope_warning", DEFAULT_SCOPE_WARNING)),
        urgent_min_probability=dict(section.get("urgent_min_probability", DEFAULT_URGENT_MIN_PROBABILITY)),
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


def assess(
    rules: Sequence[FindingRule],
    probabilities: Mapping[str, float],
    scope_score: float,
    scope_limit: float,
    policy: TriagePolicy | None = None,
) -> Triage:
    """Apply rule ``triage-v2`` (module docstring) to one image's calibrated probabilities."""
    policy = policy or TriagePolicy()
    band = policy.uncertain_band

    def gap(p: float, cut: float) -> float:
        return logit(p) - logit(cut)

    # (rule, probability, urgent cut) for the findings the card marks urgent
    urgent = [(r, probabilities[r.name], policy.urgent_cut(r)) for r in rules if r.urgent]
    urgent_hits = [(r, p, c) for r, p, c in urgent if c is not None and p >= c]
    flagged = [(r, probabilities[r.name]) for r in rules if probabilities[r.name] >= r.threshold]
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
        if flagged:
            level = PRIORITY
            flagged.sort(key=lambda f: -f[1])
            drivers = tuple(r.name for r, _ in flagged)
            explanation = "Priority: over threshold: " + _listed([f"{r.label} {_pct(p)}" for r, p in flagged])
            if all(gap(p, r.threshold) < band for r, p in flagged):
                doubts.append(
                    "every finding over its threshold is only just over it: "
                    + _listed([f"{r.label} {_pct(p)} vs {_pct(r.threshold)}" for r, p in flagged])
                )
        else:
            level = ROUTINE
            drivers = ()
            explanation = "Routine: no finding over its threshold"
            near = [
                (r, probabilities[r.name])
                for r in rules
                if -band < gap(probabilities[r.name], r.threshold) < 0
            ]
            if near:
                doubts.append(
                    "just under the threshold: "
                    + _listed([f"{r.label} {_pct(p)} vs {_pct(r.threshold)}" for r, p in near])
                )
    if scope_limit > 0 and scope_score >= policy.scope_warning * scope_limit:
        doubts.append(
            f"the image is less typical of the training chest X-rays (scope score {scope_score:.2f}, "
            f"refused from {scope_limit:.2f})"
        )
    rule = {
        "version": RULE_VERSION,
        **{k: v for k, v in asdict(policy).items() if k != "urgent_min_probability"},
        "urgent_min_probability": dict(policy.urgent_min_probability),
        "urgent_cuts": {r.name: round(c, 6) for r, _, c in urgent if c is not None},
    }
    return Triage(
        level=level,
        uncertain=bool(doubts),
        reason="; ".join(doubts),
        explanation=explanation,
        drivers=drivers,
        rule=rule,
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
    "RULE_VERSION",
    "URGENT",
    "FindingRule",
    "Triage",
    "TriagePolicy",
    "assess",
    "assess_classification",
    "policy_from_card",
    "rules_from_card",
]
