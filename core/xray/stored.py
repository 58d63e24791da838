"""A stored diagnosis read back: its findings, its boxes and the patient's display name.

The one reading of the ``diagnoses`` and ``patients`` rows that the result page, the correction editor and
the queues share. Plain functions of ORM rows, called inside the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.ml.boxes import Box
from db import models

__all__ = ["Box", "FindingRead", "boxes_of", "findings_of", "patient_name"]


@dataclass(frozen=True)
class FindingRead:
    """One finding as the classifier read it."""

    name: str
    probability: float
    threshold: float
    urgent: bool  # the model card marks the finding as driving triage

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def flagged(self) -> bool:
        """At or over its threshold."""
        return self.probability >= self.threshold


def patient_name(p: models.Patient) -> str:
    """How pages show a patient: FAMILY, Given."""
    return f"{p.family_name.upper()}, {p.given_name}"


def findings_of(diagnosis: models.Diagnosis) -> tuple[FindingRead, ...]:
    """A stored diagnosis's findings in model card order."""
    # ``thresholds`` is a list in model card order (PostgreSQL's JSONB does not keep an object's key order).
    return tuple(
        FindingRead(
            t["name"], float(diagnosis.probabilities[t["name"]]), float(t["threshold"]), bool(t["urgent"])
        )
        for t in diagnosis.thresholds
    )


def tiers_of(diagnosis: models.Diagnosis) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The read's findings in the two tiers a doctor is shown: likely (over the rule-in cut) and possible (over
    the sensitive threshold only), most probable first. Diagnoses made before the tiers have every finding over
    its threshold as a possible one."""
    rule = diagnosis.triage_rule or {}
    likely = tuple(rule.get("likely", ()))
    if "possible" in rule:
        return likely, tuple(rule["possible"])
    flagged = sorted((f for f in findings_of(diagnosis) if f.flagged), key=lambda f: -f.probability)
    return likely, tuple(f.name for f in flagged)


def boxes_of(diagnosis: models.Diagnosis) -> tuple[Box, ...]:
    """A stored diagnosis's detector boxes (scored), in the original image's pixels."""
    return tuple(Box.from_json(d) for d in diagnosis.detections)
