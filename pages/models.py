"""Models (admins): every version of each model side by side with its metrics, and promotion of one to active."""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
import streamlit as st

from core.auth import AuthenticatedUser
from core.errors import AppError, ConflictError
from core.ml import promotion, registry
from ui import fmt, session

user = session.require_user()
st.title("Models", anchor=False)
if not user.is_admin:  # app.py hides the page from doctors; this refuses a direct run too
    st.error("Only administrators can see and promote model versions.", icon=":material/block:")
    st.stop()
session.show_flash()


def _metric(value: float | None, ci95: tuple[float, float] | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f} ({ci95[0]:.3f}–{ci95[1]:.3f})" if ci95 else f"{value:.3f}"


def _version_label(active: str | None) -> Callable[[str], str]:
    """How the version picker names a version: the active one says so."""

    def label(version: str) -> str:
        return f"{version} (active)" if version == active else version

    return label


def _promote(kind: str, version: str, seen_active: str | None, actor: AuthenticatedUser) -> None:
    # A button callback: its arguments were bound when the page was drawn, so ``seen_active`` is the active
    # version the admin actually looked at, and the service refuses if someone else promoted meanwhile.
    reason = st.session_state.get(f"models.{kind}.reason") or None
    try:
        done = promotion.promote(kind, version, actor, override_reason=reason, expected_active=seen_active)
    except ConflictError as exc:
        session.flash(str(exc), "warning")
    except AppError as exc:  # PromotionRefused, ValidationError, ModelNotAvailable: the message says why
        session.flash(str(exc), "error")
    else:
        st.session_state.pop(f"models.{kind}.reason", None)
        session.load_models.clear()  # the X-ray page warms the new version up instead of the first upload
        session.flash(done.message())


def _chart(comparison: registry.Comparison) -> None:
    rows = comparison.per_finding()
    if not rows or comparison.against is None:
        return
    names = [name for name, _, _ in rows]
    figure = go.Figure(
        [
            go.Bar(name=f"{comparison.against.version} (active)", x=names, y=[a for _, a, _ in rows]),
            go.Bar(name=comparison.candidate.version, x=names, y=[c for _, _, c in rows]),
        ]
    )
    figure.update_layout(
        barmode="group",
        yaxis_title=f"test {comparison.candidate.part_metric}",
        yaxis_range=[0, 1],
        height=380,
        margin={"t": 30, "b": 10},
        legend={"orientation": "h", "y": 1.12},
    )
    st.plotly_chart(figure, key=f"models.{comparison.kind}.chart")


for kind, tab in zip(registry.KINDS, st.tabs([k.capitalize() for k in registry.KINDS]), strict=True):
    with tab:
        versions = registry.list_versions(kind)
        if not versions:
            st.info(f"No {kind} versions are installed.", icon=":material/inventory_2:")
            continue
        active = registry.read_registry().get(kind)
        st.dataframe(
            [
                {
                    "Version": v.version,
                    "Active": "✓" if v.active else "",
                    v.metric + " (95% CI)": _metric(v.value, v.ci95),
                    v.val_metric: _metric(v.val_value),
                    "Test images": v.test_images,
                    "Parent": v.parent or "—",
                    "Created": fmt.day(v.created),
                }
                for v in versions
            ],
            hide_index=True,
            width="stretch",
        )
        # never the active version against itself: the candidates are the others
        names = [v.version for v in versions if not v.active]
        if not names:
            st.caption(
                f"{active} is the only {kind} version: there is nothing to compare it with, so nothing to "
                "promote. Promote appears here once a retrained version is registered."
            )
            continue
        chosen = st.selectbox(
            "Compare with the active version",
            names,
            index=0,
            format_func=_version_label(active),
            key=f"models.{kind}.candidate",
        )
        if chosen is None:  # only without options, and there is at least one candidate here
            continue
        comparison = registry.compare(kind, chosen)
        if comparison.needs_override:
            st.warning(comparison.summary(), icon=":material/trending_down:")
        else:
            st.info(comparison.summary(), icon=":material/compare_arrows:")
        for note in comparison.notes:
            st.caption(note)
        _chart(comparison)
        if comparison.needs_override:
            st.text_area(
                "Reason for promoting it anyway (kept in the audit log)",
                key=f"models.{kind}.reason",
                max_chars=promotion.MAX_REASON_CHARS,
                placeholder=f"At least {promotion.MIN_REASON_CHARS} characters: why this version should serve",
            )
        st.button(
            f"Promote {chosen} to active {kind}",
            key=f"models.{kind}.promote",
            icon=":material/upgrade:",
            type="primary",
            on_click=_promote,
            args=(kind, chosen, active, user),
        )
