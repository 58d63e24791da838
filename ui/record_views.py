"""Read-only pieces of the record page: the allergy banner, demographics, one line per entry."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from core import records
from ui import fmt


def _rank(severity: str) -> int:
    # Position in the service's ordered scale (mildest first), so a new level needs no change here;
    # an unknown value is treated as the worst, never the mildest.
    scale = records.SEVERITIES
    return scale.index(severity) if severity in scale else len(scale) - 1


def _serious(severity: str) -> bool:
    return _rank(severity) >= len(records.SEVERITIES) // 2


def _severity(severity: str) -> str:
    colour = "red" if _serious(severity) else ("orange" if _rank(severity) > 0 else "gray")
    return f":{colour}-badge[{fmt.label(severity)}]"


def allergy_banner(allergies: Sequence[records.Allergy]) -> None:
    """Allergies at the top of every record view: the first thing to check before prescribing."""
    if not allergies:
        st.info("No allergies recorded.", icon=":material/medication:")
        return
    listed = ", ".join(f"**{fmt.md(a.substance)}** ({fmt.label(a.severity)})" for a in allergies)
    show = st.error if any(_serious(a.severity) for a in allergies) else st.warning
    show(f"Allergies: {listed}", icon=":material/medication:")


def demographics_view(d: records.Demographics) -> None:
    left, right = st.columns(2)
    left.markdown(
        f"**Given name** {fmt.md(d.given_name)}  \n**Family name** {fmt.md(d.family_name)}  \n"
        f"**Sex** {fmt.label(d.sex)}  \n**Date of birth** {fmt.day(d.date_of_birth)}"
    )
    right.markdown(
        f"**Phone** {fmt.md(d.phone) or '—'}  \n**Email** {fmt.md(d.email) or '—'}  \n"
        f"**Address** {fmt.md(d.address) or '—'}"
    )


def describe_visit(v: records.Visit) -> str:
    notes = f"  \n{fmt.md(v.notes)}" if v.notes else ""
    return f"**{fmt.day(v.visit_date)}** — {fmt.md(v.reason)}{notes}"


def describe_allergy(a: records.Allergy) -> str:
    reaction = f" · {fmt.md(a.reaction)}" if a.reaction else ""
    return (
        f"**{fmt.md(a.substance)}** {_severity(a.severity)} :gray-badge[{fmt.label(a.kind)}]{reaction}  \n"
        f":gray[recorded {fmt.day(a.recorded_on)}]"
    )


def describe_condition(c: records.Condition) -> str:
    status = (
        f":blue-badge[{fmt.label(c.status)}]"
        if c.status == records.CONDITION_STATUSES[0]
        else f":gray-badge[{fmt.label(c.status)}]"
    )
    onset = f" · since {fmt.day(c.onset_date)}" if c.onset_date else ""
    notes = f"  \n{fmt.md(c.notes)}" if c.notes else ""
    return f"**{fmt.md(c.name)}** {status}{onset}{notes}"
