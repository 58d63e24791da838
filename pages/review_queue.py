"""Review queue: unreviewed X-rays, least certain first (where a doctor's reading teaches the model most),
and, for admins, the export of reviewed studies as a training set."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.errors import AppError
from core.review import export
from core.xray import queues
from ui import fmt, session, xray_views

EXPORT = "cx.export"  # path of the zip of this session's last export (a str)

user = session.require_user()
session.show_flash()
st.title("Review queue", anchor=False)
st.caption(
    "Unreviewed X-rays, least certain first: films whose triage was marked uncertain (urgent ones first), then "
    "those whose read is closest to flipping a finding (the smallest log-odds distance of any finding from its "
    "threshold). A film with a saved or signed reading is not listed."
)

items = queues.review_queue(actor=user)
if not items:
    st.info("No X-ray is waiting for review.", icon=":material/task_alt:")
widths = [1.7, 2.8, 3.6, 1.3, 1.6]  # the Review button keeps its label at 1440 px
with st.container(border=True):
    if items:
        for column, heading in zip(
            st.columns(widths), ["Triage", "Patient", "Closest call", "Waiting", ""], strict=True
        ):
            column.caption(heading)
    for item in items:
        level, who, closest, waiting, action = st.columns(widths, vertical_alignment="center")
        level.markdown(xray_views.triage_badge(item.triage_level, item.uncertain))
        who.markdown(f"**{fmt.md(item.patient_id)}**  \n{fmt.md(item.patient_name)}")
        closest.markdown(
            f"{item.closest_finding.replace('_', ' ')} {item.closest_probability:.0%} "
            f":gray[(threshold {item.closest_threshold:.0%} · margin {item.margin:.2f})]"
        )
        waiting.markdown(xray_views.waited(item.uploaded_at))
        if action.button(
            "Review", key=f"rq.open.{item.study_id}", icon=":material/rate_review:", width="stretch"
        ):
            session.open_review(item.study_id, item.patient_id)

if user.is_admin:
    st.subheader("Training set", anchor=False)
    st.caption(
        "Writes every reviewed study (the doctors' readings, never the model's) as images, labels.csv, a YOLO "
        "copy and a manifest into the data directory. Large sets are better exported with "
        "`python -m core corrections export OUT_DIR --user NAME`."
    )
    if st.button("Export reviewed studies", icon=":material/dataset:"):
        with st.spinner("Exporting the reviewed studies…"):
            try:
                manifest = export.export_reviewed(export.default_export_dir(), user)
                st.session_state[EXPORT] = str(export.zip_export(manifest.out_dir))
            except AppError as exc:
                st.error(fmt.md(str(exc)), icon=":material/error:")
            else:
                skipped = f", {len(manifest.skipped)} left out" if manifest.skipped else ""
                st.success(
                    f"Exported {manifest.studies} studies with {manifest.boxes} boxes to {manifest.out_dir}{skipped}.",
                    icon=":material/check_circle:",
                )
    archive = st.session_state.get(EXPORT)
    if archive and not Path(archive).exists():  # served once (then removed), or removed as stale
        st.session_state.pop(EXPORT, None)
        st.caption(
            "The export's zip was downloaded (or expired) and removed from the server; export again for another."
        )
    elif archive:
        path = Path(archive)
        st.download_button(
            f"Download {path.name}",
            data=lambda: export.take_zip(path),  # the zip is removed once its bytes are served
            file_name=path.name,
            mime="application/zip",
            on_click="ignore",
            icon=":material/download:",
        )
