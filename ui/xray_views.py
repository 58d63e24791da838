"""Widgets of the X-ray pages: the upload handler, the result, the zoomable film, triage badges.

Everything shown comes from the DTOs of ``core.xray.diagnosis``: finding names, thresholds and which findings are
urgent are the model card's, never written here. Rendered images are files on disk (made at upload, or
cached there on first view), so a rerun only reads a JPEG: a 3000 x 3000 DICOM costs no more than a PNG.
"""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime.uploaded_file_manager import UploadedFile

from core.auth import AuthenticatedUser
from core.config import get_settings
from core.errors import AppError, NotFound, ValidationError
from core.imaging import ImageRejected
from core.ml import triage
from core.ml.probability import percent
from core.records import PatientRecord
from core.review import readings
from core.xray import compare, diagnosis, film_admin
from core.xray.diagnosis import DiagnosisView
from core.xray.stored import FindingRead
from ui import fmt, handoff_views, referral_views, session, viewer

VIEW = "xr.view"  # the DiagnosisView on show (a frozen DTO), refetched when another study is opened
UPLOADS = "xr.uploads"  # file_id of each upload of this session -> its outcome, so a rerun never redoes one
UPLOAD_ROUND = "xr.upload.round"  # bumped by each saved film: the uploader's key, so it comes back empty
SAVED = "xr.saved"  # (study ID, message) of the film saved last: the message stays with its result

_BADGES = {  # level -> (colour, icon)
    triage.URGENT: ("red", ":material/emergency:"),
    triage.PRIORITY: ("orange", ":material/priority_high:"),
    triage.ROUTINE: ("green", ":material/check_circle:"),
}
_STATUS = {"new": "gray", "reviewed": "blue", "corrected": "violet"}


def triage_badge(level: str, uncertain: bool) -> str:
    """Markdown badges for a triage level, plus "uncertain: review" when the model is unsure."""
    colour, icon = _BADGES.get(level, ("gray", ":material/help:"))
    badge = f":{colour}-badge[{icon} {fmt.label(level)}]"
    return badge + (" :violet-badge[:material/help: uncertain: review]" if uncertain else "")


def status_badge(status: str) -> str:
    return f":{_STATUS.get(status, 'gray')}-badge[{fmt.label(status)}]"


def waited(since: datetime) -> str:
    """'12 min', '3 h 05 min', '2 d 4 h' since ``since``."""
    minutes = max(0, int((session.utcnow() - since).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 24 * 60:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{minutes // 1440} d {minutes % 1440 // 60} h"


def current_view(study_id: int, user: AuthenticatedUser) -> DiagnosisView:
    """The study's result as this session last fetched it; fetched (and audited) once per opening."""
    shown = st.session_state.get(VIEW)
    if shown is None or shown.study_id != study_id:
        shown = diagnosis.get_diagnosis(study_id, user)
        st.session_state[VIEW] = shown
    return shown


def forget_shown() -> None:
    """Take the film on show off the screen (and out of the address, so a refresh does not bring it back)."""
    st.session_state.pop(session.STUDY_ID, None)
    st.session_state.pop(VIEW, None)
    if "study" in st.query_params:
        del st.query_params["study"]


def keep_in_address(patient_id: str, study_id: int) -> None:
    """The address names the film on show (a refresh or a copied link opens it again)."""
    if st.query_params.get("patient") == patient_id and st.query_params.get("study") != str(study_id):
        st.query_params["study"] = str(study_id)


def upload_key(patient_id: str) -> str:
    """The session-state key of the patient's film uploader (its file, once one is chosen); a new one after
    each saved film, so the uploader comes back empty."""
    return f"xr.upload.{patient_id}.{st.session_state.get(UPLOAD_ROUND, 0)}"


def _analyse(
    upload: UploadedFile, patient_id: str, user: AuthenticatedUser, confirmed: bool, visit_id: int | None
) -> tuple[str, str]:
    """Analyse and save the chosen file once; its outcome (kind, message) is kept by its file ID."""
    outcomes = st.session_state.setdefault(UPLOADS, {})
    with st.spinner("Analysing the X-ray…"):
        try:
            view = diagnosis.diagnose_upload(
                patient_id, upload.getvalue(), upload.name, user, confirmed, visit_id
            )
        except diagnosis.PatientMismatch as exc:
            outcomes[upload.file_id] = ("mismatch", str(exc))
        except ImageRejected as exc:
            outcomes[upload.file_id] = ("refused", exc.user_message)
        except AppError as exc:
            outcomes[upload.file_id] = ("error", str(exc))
        else:
            st.session_state[VIEW] = view
            st.session_state[session.STUDY_ID] = view.study_id
            done = (
                "This image is already in the record: showing its saved result."
                if view.duplicate
                else (f"Analysed and saved in {view.timing_ms.get('total', 0) / 1000:.2f} s.")
            )
            outcomes[upload.file_id] = ("saved", done)
            st.session_state[SAVED] = (view.study_id, done)
            # the uploader is drawn again empty: choosing the next film then is one run, not two (Streamlit
            # first removes a single uploader's earlier file, which reran the page for nothing)
            st.session_state[UPLOAD_ROUND] = st.session_state.get(UPLOAD_ROUND, 0) + 1
    kind, message = outcomes[upload.file_id]
    return kind, message


def handle_upload(record: PatientRecord, user: AuthenticatedUser) -> None:
    """The uploader and what became of the upload: saved (the result shows below), refused, or waiting for
    the doctor to confirm a DICOM that names another patient. The film can be linked to one of the visits."""
    patient_id = record.patient_id
    limit = get_settings().max_upload_mb
    visits = {v.id: f"{fmt.day(v.visit_date)} · {v.reason}" for v in record.visits}  # newest first
    today = [v.id for v in record.visits if v.visit_date == session.utcnow().date()]
    visit_id = st.selectbox(
        "Visit",
        [None, *visits],
        index=1 + list(visits).index(today[0]) if today else 0,
        format_func=lambda v: "No visit" if v is None else visits[v],
        key=f"xr.visit.{patient_id}",
        help="The visit this film belongs to (today's visit is proposed when there is one).",
    )
    outcomes = st.session_state.setdefault(UPLOADS, {})
    # The file just chosen, read before the uploader is drawn: a film saved now gets an empty uploader at once.
    chosen = st.session_state.get(upload_key(patient_id))
    if isinstance(chosen, UploadedFile) and chosen.file_id not in outcomes:
        _analyse(chosen, patient_id, user, False, visit_id)
    upload = st.file_uploader(
        f"Chest X-ray: PNG, JPEG or DICOM, up to {limit} MB",
        key=upload_key(patient_id),
        max_upload_size=limit,
        help="The image is analysed and saved in this patient's record.",
    )
    if upload is None:
        saved = st.session_state.get(SAVED)
        if saved is not None and saved[0] == st.session_state.get(session.STUDY_ID):
            st.success(saved[1], icon=":material/check_circle:")
        return
    kind, message = outcomes.get(upload.file_id, ("new", ""))
    confirmed = False
    if kind == "mismatch":
        st.warning(fmt.md(message), icon=":material/person_alert:")  # holds values from the file
        confirmed = st.checkbox(
            f"I confirm this image belongs to patient {patient_id}", key=f"xr.confirm.{upload.file_id}"
        )
        if not st.button("Analyse and save", icon=":material/save:", disabled=not confirmed):
            forget_shown()  # pending: no earlier result under the warning
            return
    if kind in ("new", "mismatch"):
        kind, message = _analyse(upload, patient_id, user, confirmed, visit_id)
        if kind == "mismatch":
            st.rerun(scope="fragment")  # the warning and the confirmation in place of the uploader's result
    if kind == "saved":
        st.success(message, icon=":material/check_circle:")
        return
    # refused, failed or waiting for the doctor's confirmation: the previous film's result must not stay on
    # screen under the message, where it would read as this upload's
    forget_shown()
    if kind in ("refused", "error"):
        st.error(f"{fmt.md(message)} Nothing was saved.", icon=":material/block:")


def _fragment_rerun() -> bool:
    """Whether this run is a fragment's alone (app.py's login gate did not run before it)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return bool(ctx is not None and ctx.fragment_ids_this_run)


@st.fragment
def film_and_read(record: PatientRecord, user: AuthenticatedUser) -> None:
    """The film first, large, with the read beside it; the uploader under the read once a film is on show,
    the page's width while none is. A fragment: an upload, a viewer tool or an overlay reruns only this part
    of the page (the speed the doctor feels), and each such run still checks the sign-in first."""
    if _fragment_rerun():
        checked = session.active_user()  # what app.py's gate does on a full run: idle, revoked, disabled
        if checked is None or checked.id != user.id:
            st.rerun(scope="app")  # the full run shows the login form and why
    showing = (
        st.session_state.get(session.STUDY_ID) is not None
        or st.session_state.get(upload_key(record.patient_id)) is not None
    )
    film_area, side = st.columns([2.9, 1.3], gap="medium") if showing else (st.container(), st.container())
    side_top, side_bottom = side.container(), side.container()
    with side_bottom if showing else film_area:
        if showing:
            st.markdown("**Upload another film**")
        handle_upload(record, user)
    study_id = st.session_state.get(session.STUDY_ID)
    if study_id is None:
        st.caption("Upload a film to see the models' read; earlier films are in the imaging history.")
        return
    try:
        view = current_view(study_id, user)
    except NotFound as exc:
        st.session_state.pop(session.STUDY_ID, None)
        st.error(fmt.md(str(exc)), icon=":material/error:")
        return
    if view.patient_id != record.patient_id:  # a study of the previously selected patient
        st.session_state.pop(session.STUDY_ID, None)
        st.rerun(scope="app")
    keep_in_address(record.patient_id, view.study_id)
    result(view, user, record, film_area=film_area, side=side_top)


def film(path: Path, key: str, aspect: float = 1.0) -> None:
    """A plain image, zoomable (drag a box, scroll; double-click resets), for the comparison's films.

    ``aspect`` is height / width: the figure is about as tall as the film is at the column's usual width.
    """
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    figure = go.Figure(go.Image(source=f"data:image/jpeg;base64,{data}", hoverinfo="skip"))
    height = int(min(900, max(360, 600 * aspect)))
    figure.update_layout(margin={"l": 0, "r": 0, "t": 0, "b": 0}, height=height, dragmode="zoom")
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False, scaleanchor="x")
    st.plotly_chart(figure, key=key, config={"scrollZoom": True, "displaylogo": False})


def result(
    view: DiagnosisView,
    user: AuthenticatedUser | None = None,
    record: PatientRecord | None = None,
    *,
    film_area: DeltaGenerator | None = None,
    side: DeltaGenerator | None = None,
) -> None:
    """One study: the film with its viewer tools first and large (``film_area``), and beside it (``side``) the
    triage, the patient's context, the findings, the boxes, the comparison with the previous film, the
    versions and (for a signed-in ``user``) the report downloads. Without the two areas, two columns are made."""
    if film_area is None or side is None:
        film_area, side = st.columns([2.6, 1.4], gap="medium")
    compare_key = f"xr.compare.{view.study_id}"
    reading = readings.current_reading(view.study_id)
    doctors = False
    with side:
        st.markdown(f"{triage_badge(view.triage_level, view.uncertain)} {status_badge(view.status)}")
        st.caption(fmt.md(view.triage_explanation))
        if reading is not None:
            which = st.segmented_control(
                "Read shown",
                [DOCTORS_READING, MODELS_READ],
                default=DOCTORS_READING,
                key=f"xr.which.{view.study_id}",
                label_visibility="collapsed",
                help="The doctor's saved reading is the record; the model's original read is kept unchanged.",
            )
            doctors = which != MODELS_READ
        if doctors and reading is not None:
            doctors_reading(reading)
        summary(view, user, record, model_read=not doctors)
    # One slot, refilled whole: going from the comparison back to the film (a fragment run) leaves none of the
    # comparison's elements behind (a plain container kept one of its two plots now and then).
    with film_area.empty().container():
        prior = st.session_state.get(compare_key)
        if prior is not None and user is not None:
            compare_previous(view, prior, user)
        else:
            viewer.film_viewer(view, boxes=reading.boxes if doctors and reading is not None else None)


DOCTORS_READING = "Doctor's reading"
MODELS_READ = "Model's read"


def doctors_reading(reading: readings.Reading) -> None:
    """The doctor's current reading: who and when (signed or not), the findings set, the note."""
    when = fmt.moment(reading.signed_at or reading.saved_at)
    who = fmt.md(reading.reader_name or reading.reader_username)
    line = f"Signed by {who} at {when}" if reading.signed else f"Saved by {who} at {when}, not signed"
    if reading.amends is not None:
        line += f" · amends an earlier reading: {fmt.md(reading.amend_reason)}"
    st.markdown(f"**Doctor's reading** :gray[{line}]")
    labels = reading.labels
    for word, colour in (("present", "red"), ("uncertain", "orange"), ("absent", "gray")):
        names = [n.replace("_", " ") for n, label in labels.items() if label == word]
        if names:
            st.markdown(f":{colour}[**{word.capitalize()}:**] {fmt.md(', '.join(names))}")
    if not labels:
        st.caption("No finding was set by the doctor.")
    if reading.note:
        st.markdown(f"**Note:** {fmt.md(reading.note)}")
    st.caption(
        f"{len(reading.boxes)} region(s) drawn by the doctor on the film. The model's read: “{MODELS_READ}”."
    )


def summary(
    view: DiagnosisView,
    user: AuthenticatedUser | None,
    record: PatientRecord | None,
    *,
    model_read: bool = True,
) -> None:
    """The right column of the result under the triage: the context, the model's read (unless the doctor's
    reading is on show), and the actions."""
    if view.withdrawn is not None:
        st.error(f"**Withdrawn from the record:** {fmt.md(view.withdrawn)}", icon=":material/block:")
    context(view, record)
    if view.uncertain:
        st.warning(f"**Uncertain: review.** {fmt.md(view.uncertain_reason)}", icon=":material/help:")
    if view.patient_id_differs:
        st.warning(
            f"The DICOM header names patient ID {fmt.md(str(view.dicom_patient_id))}; it was saved in this record "
            "on the uploader's confirmation.",
            icon=":material/person_alert:",
        )
    if model_read:
        model_findings(view)
    actions(view, user)
    if user is not None:
        put_right(view, user)
    for note in (view.orientation_note, *(n for n in view.notes if n != view.orientation_note)):
        if note:
            st.info(note, icon=":material/info:")
    with st.expander("Model versions"):
        versions = " · ".join(f"{kind} {version}" for kind, version in view.models.items())
        st.caption(
            f"Models: {fmt.md(versions)} · scope score {view.scope_score:.2f} (limit {view.scope_limit:.2f})"
        )
    if user is not None:
        handoff_views.report_buttons(view, user)
        referral_views.refer_link(view.study_id)  # issue 14: send the film to emergency departments


def model_findings(view: DiagnosisView) -> None:
    """The model's read: the finding tiers, the detector's regions and where the two models disagree."""
    finding_tiers(view)
    if view.detector_ran and view.boxes:
        st.markdown(
            "**Marked regions** "
            + " ".join(f":red-badge[{fmt.md(b.label)} {b.confidence:.0%}]" for b in view.boxes),
            help="Detector confidence per box; the classifier's probability of the finding is in the list above.",
        )
    elif not view.detector_ran:
        st.caption("No detector model is active, so no regions are marked.")
    else:
        st.caption("The detector marked no region.")
    for line in view.disagreements:
        st.caption(f":material/compare_arrows: {fmt.md(line)}")


def actions(view: DiagnosisView, user: AuthenticatedUser | None) -> None:
    """Review, and the previous film one click away."""
    review, compare = st.columns(2)
    if review.button(
        "Review / correct", key=f"xr.review.{view.study_id}", icon=":material/rate_review:", width="stretch"
    ):
        session.open_review(view.study_id, view.patient_id)
    if user is None:
        return
    compare_key = f"xr.compare.{view.study_id}"
    # A whole-page run, not the result fragment's: a fragment run that swapped the two films for one left one
    # of the comparison's plots on screen now and then (Streamlit clears a fragment's stale elements less
    # reliably than a full run's). Comparing is a rare click; the upload and viewer tools stay fragment runs.
    if st.session_state.get(compare_key) is not None:
        if compare.button(
            "Back to this film", key=f"xr.cmpback.{view.study_id}", icon=":material/image:", width="stretch"
        ):
            st.session_state.pop(compare_key, None)
            st.rerun(scope="app")
        return
    prior = previous_film(view)
    if compare.button(
        "Previous film",
        key=f"xr.cmp.{view.study_id}",
        icon=":material/compare:",
        width="stretch",
        disabled=prior is None,
        help="This film and the patient's previous one side by side, with what changed"
        if prior is not None
        else "This is the patient's first film.",
    ):
        st.session_state[compare_key] = prior
        st.rerun(scope="app")


def put_right(view: DiagnosisView, user: AuthenticatedUser) -> None:
    """Move the film to the right patient, or withdraw it: a reason is required, both are audited, nothing
    is deleted."""
    if view.withdrawn is not None:
        return
    key = f"xr.fix.{view.study_id}"
    with st.expander("Wrong patient or unusable film?", icon=":material/move_item:"):
        what = st.radio(
            "Action", ["Move to another patient", "Withdraw from the record"], key=f"{key}.what", index=None
        )
        target = ""
        if what == "Move to another patient":
            target = st.text_input("Patient ID of the right record", key=f"{key}.target").strip()
        reason = st.text_area("Reason (kept in the audit log)", key=f"{key}.reason", max_chars=500)
        if st.button("Apply", key=f"{key}.apply", disabled=what is None, icon=":material/check:"):
            try:
                if what == "Move to another patient":
                    moved_to = film_admin.move_study(view.study_id, target, reason, user)
                    session.flash(f"The film was moved to {moved_to}'s record.")
                    st.session_state.pop(VIEW, None)  # its patient changed: fetched again
                    session.open_study(view.study_id, moved_to)
                film_admin.withdraw_study(view.study_id, reason, user)
            except AppError as exc:
                message = "; ".join(exc.errors.values()) if isinstance(exc, ValidationError) else str(exc)
                st.error(fmt.md(message), icon=":material/error:")
                return
            session.flash("The film was withdrawn from the record; it stays in the audit trail.")
            forget_shown()
            st.rerun()


def previous_film(view: DiagnosisView) -> int | None:
    """The study ID of the patient's film before this one (by the history's order), or None."""
    history = diagnosis.patient_history(view.patient_id)
    return compare.previous_study([s.study_id for s in history], view.study_id)


def context(view: DiagnosisView, record: PatientRecord | None) -> None:
    """The film's context: the allergies banner, the visit and its reason, when the film was taken (the DICOM
    header's date and projection) and, apart from that, when it was uploaded."""
    lines = []
    if record is not None:  # age and sex are in the patient header above
        visit = next((v for v in record.visits if v.id == view.visit_id), None)
        if visit is not None:
            lines.append(f"Visit {fmt.day(visit.visit_date)}: {fmt.md(visit.reason)}")
        else:
            lines.append(":gray[Not linked to a visit]")
    lines.append(
        f"Film taken {fmt.day(view.acquired_on) if view.acquired_on else ':gray[date not in the file]'}"
        + (f" · {fmt.md(view.projection)} projection" if view.projection else "")
    )
    lines.append(
        f":gray[Uploaded {fmt.moment(view.uploaded_at)} by {fmt.md(view.uploaded_by)} · "
        f"{fmt.md(view.original_filename)} · {view.width} x {view.height} px]"
    )
    if record is not None:
        if record.allergies:
            allergies = ", ".join(f"{fmt.md(a.substance)} ({fmt.md(a.severity)})" for a in record.allergies)
            st.error(f"**Allergies:** {allergies}", icon=":material/warning:")
        else:
            st.caption("No known allergies recorded.")
    st.markdown("  \n".join(lines))


def compare_previous(view: DiagnosisView, prior_id: int, user: AuthenticatedUser) -> None:
    """This film and the previous one side by side, and what changed, finding by finding."""
    before = diagnosis.get_diagnosis(prior_id, user)  # opening the previous film is audited
    for column, shown, title in zip(
        st.columns(2), (view, before), ("This film", "Previous film"), strict=True
    ):
        with column:
            st.markdown(
                f"**{title}** {triage_badge(shown.triage_level, shown.uncertain)} "
                f":gray[{fmt.moment(shown.uploaded_at)}]"
            )
            film(
                shown.preview_path,
                key=f"xr.cmpfilm.{view.study_id}.{shown.study_id}",
                aspect=shown.height / max(1, shown.width),
            )
    rows = compare.changes(view.findings, before.findings)
    st.dataframe(
        [
            {
                "Finding": r.label,
                "Change": r.change,
                "Now": f"{r.now:.0%}",
                "Before": "—" if r.before is None else f"{r.before:.0%}",
                "Difference": "—" if r.points is None else f"{r.points:+d} points",
            }
            for r in rows
        ],
        hide_index=True,
        width="stretch",
    )


MAX_POSSIBLE_SHOWN = 3


def _finding_line(f: FindingRead) -> str:
    urgent = " :red-badge[urgent finding]" if f.urgent else ""
    return f"**{f.label}** {f.probability:.0%}{urgent}"


def finding_tiers(view: DiagnosisView) -> None:
    """The read in a doctor's words: overall, likely findings, then possible ones (collapsed), then all."""
    by_name = {f.name: f for f in view.findings}
    if view.abnormality is not None:
        st.markdown(
            f"**Overall:** abnormality score {percent(view.abnormality)}"
            + (f" · chance of an urgent finding {percent(view.urgency)}" if view.urgency is not None else ""),
            help="The abnormality score ranks films from likely normal to likely abnormal (routine under the "
            "model card's cut); it is fitted to the training films' case mix, so read it as a score, not a "
            "chance. The urgent chance is the calibrated probability of at least one urgent finding.",
        )
    st.markdown(
        "**Likely findings**",
        help="Over the finding's high-specificity cut: on validation films, at least 95 % of the films without "
        "that finding stay under it. The percentage is the calibrated probability on this abnormal-rich data.",
    )
    if not view.likely:
        st.caption("None: no finding is over its high-specificity cut.")
    for name in view.likely:
        st.markdown(_finding_line(by_name[name]))
        st.progress(min(1.0, by_name[name].probability))
    possible = [by_name[n] for n in view.possible if n in by_name]
    if possible:
        with st.expander(f"Possible findings ({len(possible)}): over the sensitive cut, not confirmed"):
            for f in possible[:MAX_POSSIBLE_SHOWN]:
                st.markdown(_finding_line(f))
            if len(possible) > MAX_POSSIBLE_SHOWN:
                st.caption(
                    "More: "
                    + ", ".join(f"{f.label} {f.probability:.0%}" for f in possible[MAX_POSSIBLE_SHOWN:])
                )
    with st.expander(f"All {len(view.findings)} findings"):
        tier = {**dict.fromkeys(view.likely, "likely"), **dict.fromkeys(view.possible, "possible")}
        # three narrow columns: fits the column beside the film without a horizontal scroll
        st.dataframe(
            [
                {
                    "Finding": f.label,
                    "Probability": f.probability * 100,
                    "Flagged from": " · ".join(
                        [
                            f"{f.threshold:.0%}",
                            *([tier[f.name]] if f.name in tier else []),
                            *(["urgent"] if f.urgent else []),
                        ]
                    ),
                }
                for f in sorted(view.findings, key=lambda f: -f.probability)
            ],
            hide_index=True,
            width="stretch",
            column_config={
                "Finding": st.column_config.TextColumn(width="medium"),
                "Probability": st.column_config.ProgressColumn(
                    min_value=0.0, max_value=100.0, format="%.0f%%", width="small"
                ),
                "Flagged from": st.column_config.TextColumn(
                    width="small",
                    help="The finding's threshold; likely or possible on this film; urgent finding",
                ),
            },
        )


def reading_room_style() -> None:
    """Less empty margin around the X-ray page, so the film gets the screen (page CSS, no script)."""
    st.html(
        "<style>[data-testid='stMainBlockContainer']{padding-top:1.5rem;padding-left:2rem;"
        f"padding-right:2rem;padding-bottom:2rem}}{viewer.style()}</style>"
    )


def patient_picker(current: str | None) -> str | None:
    """Choose the patient the X-ray belongs to (search by ID or name); returns the chosen patient ID.
    Open while none is chosen; a small "Another patient" pop-over once one is."""
    box = (
        st.popover("Patient", icon=":material/person_search:", width="stretch", help="Open another patient")
        if current
        else st.expander("Choose the patient", expanded=True)
    )
    with box:
        query = st.text_input("Patient ID or name", key="xr.pick.query").strip()
        hits = session.search_patients(query) if query else []
        if query and not hits:
            st.info(f"No patient matches “{fmt.md(query)}”.")
        if hits:
            names = {
                h.patient_id: f"{h.patient_id} · {h.display_name} · born {fmt.day(h.date_of_birth)}"
                for h in hits
            }
            chosen = st.selectbox(
                "Patient", list(names), format_func=lambda n: names[n], key="xr.pick.choice"
            )
            if st.button("Use this patient", icon=":material/person_check:", key="xr.pick.use") and chosen:
                st.session_state[session.PATIENT_ID] = chosen
                st.session_state.pop(session.STUDY_ID, None)
                st.rerun()
    return current


def history_list(studies: tuple[diagnosis.StudySummary, ...], patient_id: str) -> None:
    """Every study, newest first: thumbnail, when, top findings, triage, status, and Open."""
    for s in studies:
        with st.container(border=True):
            thumb, when, found, level, action = st.columns([1, 2, 4, 2, 1.3], vertical_alignment="center")
            thumb.image(str(s.thumbnail_path), width=96)
            taken = f"**Taken {fmt.day(s.acquired_on)}**" if s.acquired_on else "**Date taken unknown**"
            projection = f" · {fmt.md(s.projection)}" if s.projection else ""
            withdrawn = "  \n:red-badge[withdrawn]" if s.withdrawn else ""
            when.markdown(
                f"{taken}{projection}  \n:gray[uploaded {fmt.moment(s.uploaded_at)} · "
                f"{fmt.md(s.original_filename)}]{withdrawn}"
            )
            top = ", ".join(f"{name.replace('_', ' ')} {p:.0%}" for name, p in s.top3)
            shown = fmt.tiers(s.likely, s.possible)
            found.markdown(f"{top}  \n:gray[{shown}]" if shown else top)
            level.markdown(f"{triage_badge(s.triage_level, s.uncertain)}  \n{status_badge(s.status)}")
            if action.button(
                "Open", key=f"xr.open.{s.study_id}", icon=":material/visibility:", width="stretch"
            ):
                session.open_study(s.study_id, patient_id)


def probability_chart(points: tuple[diagnosis.ProbabilityPoint, ...]) -> None:
    """Each finding's probability over time on a date axis, one colour per finding with its threshold as a
    dashed line of the same colour. Only the findings flagged on some film are drawn at first; the others
    are in the legend, a click away."""
    import plotly.express as px

    by_finding: dict[str, list[diagnosis.ProbabilityPoint]] = {}
    for p in points:
        by_finding.setdefault(p.finding, []).append(p)
    flagged = [n for n, ps in by_finding.items() if any(p.probability >= p.threshold for p in ps)]
    palette = px.colors.qualitative.Dark24
    figure = go.Figure()
    for index, (name, series) in enumerate(by_finding.items()):
        colour = palette[index % len(palette)]
        shown: bool | str = True if name in flagged else "legendonly"
        label = name.replace("_", " ")
        when = [p.uploaded_at for p in series]
        figure.add_scatter(
            x=when,
            y=[p.probability for p in series],
            name=label,
            mode="lines+markers",
            line={"color": colour},
            legendgroup=name,
            visible=shown,
            hovertemplate=f"{label} %{{y:.0%}}<br>%{{x|%Y-%m-%d %H:%M}}<extra></extra>",
        )
        figure.add_scatter(
            x=when,
            y=[p.threshold for p in series],
            name=f"{label} threshold",
            mode="lines",
            line={"color": colour, "dash": "dot", "width": 1},
            legendgroup=name,
            showlegend=False,
            visible=shown,
            hovertemplate=f"{label} flagged from %{{y:.0%}}<extra></extra>",
        )
    figure.update_layout(
        yaxis_tickformat=".0%", yaxis_range=[0, 1], height=380, margin={"t": 10}, legend_title_text=""
    )
    figure.update_xaxes(type="date", title_text="Film")
    figure.update_yaxes(title_text="Probability")
    if not flagged:
        st.caption("No finding was flagged on any film: pick findings in the legend to draw them.")
    else:
        st.caption(
            "Flagged findings are drawn; dotted lines are their thresholds. Click the legend for others."
        )
    st.plotly_chart(figure, key="xr.history.chart")


def side_by_side(studies: tuple[diagnosis.StudySummary, ...], user: AuthenticatedUser) -> None:
    """A study and a prior one next to each other, with the change of each probability."""
    if len(studies) < 2:
        st.caption("A second film of this patient is needed for a comparison.")
        return
    labels = {s.study_id: f"{fmt.moment(s.uploaded_at)} · {s.original_filename}" for s in studies}
    ids = list(labels)
    pick, prior_pick = st.columns(2)
    chosen = pick.selectbox("Study", ids, index=0, format_func=lambda i: labels[i], key="xr.cmp.study")
    priors = [i for i in ids if i != chosen]
    prior = prior_pick.selectbox(
        "Compared with", priors, index=0, format_func=lambda i: labels[i], key="xr.cmp.prior"
    )
    if chosen is None or prior is None:
        return
    # Shown inside the history, whose opening is audited: no audit row per rerun of the comparison.
    now, before = (diagnosis.get_diagnosis(i, user, audit=False) for i in (chosen, prior))
    for column, view in zip(st.columns(2), (now, before), strict=True):
        with column:
            st.markdown(
                triage_badge(view.triage_level, view.uncertain) + f" :gray[{fmt.moment(view.uploaded_at)}]"
            )
            st.image(str(view.image_path), width="stretch")
    earlier = {f.name: f.probability for f in before.findings}
    st.dataframe(
        [
            {
                "Finding": f.label,
                "Study": round(f.probability, 3),
                "Prior": round(earlier.get(f.name, float("nan")), 3),
                "Change": round(f.probability - earlier.get(f.name, float("nan")), 3),
            }
            for f in sorted(now.findings, key=lambda f: -f.probability)
        ],
        hide_index=True,
    )
