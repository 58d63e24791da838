"""The transparent proposal rule: which departments suit a film's read, and why.

A department's fit is (1) how many of the capabilities the read's flagged findings need it has (urgent
findings first), then (2) its great-circle distance from the crew (haversine). The three best are proposed,
each with its reasons in words. Pure functions: no database, no Streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: The capability a finding needs at the receiving department (the names used in config/sites.toml).
CAPABILITY_FOR: dict[str, tuple[str, ...]] = {
    "Pneumothorax": ("thoracic_surgery",),
    "Effusion": ("thoracic_surgery",),
    "Edema": ("cardiology", "icu"),
    "Cardiomegaly": ("cardiology",),
    "Pneumonia": ("icu",),
    "Consolidation": ("icu",),
    "Mass": ("ct",),
    "Nodule": ("ct",),
}
CAPABILITY_LABELS: dict[str, str] = {
    "thoracic_surgery": "thoracic surgery",
    "cardiology": "cardiology",
    "icu": "intensive care",
    "ct": "CT",
}
PROPOSED = 3
EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class Place:
    """A department as the rule sees it."""

    code: str
    name: str
    lat: float
    lon: float
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Suggestion:
    """One department with its score and the reasons shown to the crew."""

    code: str
    name: str
    distance_km: float
    has: tuple[str, ...]  # needed capabilities it offers
    lacks: tuple[str, ...]  # needed capabilities it does not offer
    reasons: str


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two WGS84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def needs(findings: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Needed capability -> the findings that need it, in the order the findings come (urgent first)."""
    out: dict[str, list[str]] = {}
    for finding in findings:
        for capability in CAPABILITY_FOR.get(finding, ()):
            out.setdefault(capability, [])
            if finding not in out[capability]:
                out[capability].append(finding)
    return {k: tuple(v) for k, v in out.items()}


def _label(capability: str) -> str:
    return CAPABILITY_LABELS.get(capability, capability.replace("_", " "))


def assess(place: Place, needed: dict[str, tuple[str, ...]], lat: float, lon: float) -> Suggestion:
    """One department against the needed capabilities and the crew's position, with its reasons."""
    distance = haversine_km(lat, lon, place.lat, place.lon)
    has = tuple(c for c in needed if c in place.capabilities)
    lacks = tuple(c for c in needed if c not in place.capabilities)
    parts = [f"{_label(c)} for {', '.join(f.replace('_', ' ') for f in needed[c])}" for c in has]
    parts += [f"no {_label(c)} ({', '.join(f.replace('_', ' ') for f in needed[c])})" for c in lacks]
    if not needed:
        parts.append("no urgent finding needs a particular service")
    parts.append(f"{distance:.1f} km away")
    return Suggestion(place.code, place.name, round(distance, 2), has, lacks, "; ".join(parts))


def rank(places: Sequence[Place], findings: Sequence[str], lat: float, lon: float) -> tuple[Suggestion, ...]:
    """Every department, best first: most needed capabilities, then nearest (then code, for a stable order)."""
    needed = needs(findings)
    assessed = [assess(p, needed, lat, lon) for p in places]
    return tuple(sorted(assessed, key=lambda s: (len(s.lacks), s.distance_km, s.code)))


def propose(
    places: Sequence[Place], findings: Sequence[str], lat: float, lon: float, count: int = PROPOSED
) -> tuple[Suggestion, ...]:
    """The ``count`` most suitable departments for a read's ``findings`` (urgent first) from ``lat``/``lon``."""
    return rank(places, findings, lat, lon)[:count]
