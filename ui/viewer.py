"""The film viewer of the result page: zoom and pan, window/level, invert, full screen, reset, and the
detector's boxes, their labels and a heat map as overlays that can each be shown or hidden.

The film is a plotly figure: the grey display image (window/level and invert applied server-side by
:func:`core.xray.render.windowed`) is the bottom layer, the heat map a separate transparent image trace
above it, the boxes layout shapes and the labels annotations. Nothing is burned into the pixels, and the
labels are drawn in screen pixels, so they stay the same readable size and never grow over the anatomy when
the film is zoomed. Plotly keeps the zoom across reruns (``uirevision``), so toggling an overlay does not
lose it; a double click or the modebar's reset button resets it, and Streamlit's element toolbar offers
full screen.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core.ml.boxes import Box
from core.xray import render
from core.xray.diagnosis import DiagnosisView

#: The film's height, CSS: 80 % of the viewport's height (720 px at 1440 x 900, 864 px at 1920 x 1080), so the
#: whole film shows below the patient header and its tools row without scrolling, and grows with the screen;
#: never under 420 px on a small one. The browser applies it (no round trip to learn the viewport's size), and
#: plotly fills the box (its figure has no height of its own) and redraws when the window is resized.
FILM_HEIGHT_CSS = "max(420px, 80vh)"
_FILM_BOX = "xr-film-box"  # the key of the film's container: the CSS above sizes it
BOX_COLOUR = "#ff3b30"


@dataclass(frozen=True)
class ViewerState:
    """What the doctor chose to see: overlays, window/level and inversion."""

    boxes: bool = True
    labels: bool = True
    heat_finding: str | None = None  # the finding whose heat map is laid over the film, None for none
    level: float = 0.5  # window centre, a fraction of the grey range
    width: float = 1.0  # window width, a fraction of the grey range
    invert: bool = False
    revision: int = 0  # bumped by Reset: a new plotly ui revision drops the zoom


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@st.cache_data(max_entries=64, show_spinner=False)
def _film_uri(preview: str, level: float, width: float, invert: bool) -> str:
    from pathlib import Path

    return _uri(render.windowed(Path(preview), level, width, invert), "image/jpeg")


@st.cache_data(max_entries=64, show_spinner=False)
def _preview_size(preview: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(preview) as image:
        return image.size


def style() -> str:
    """The page CSS that sizes the film to the viewport (the X-ray page adds it once)."""
    # Streamlit sizes a fixed-height container by its wrapper's flex basis; the film box is one
    return (
        f"[data-testid='stLayoutWrapper']:has(> .st-key-{_FILM_BOX}){{flex:0 0 {FILM_HEIGHT_CSS} !important;"
        f"height:{FILM_HEIGHT_CSS} !important}}.st-key-{_FILM_BOX}{{overflow:hidden !important}}"
    )


def figure(
    view: DiagnosisView, state: ViewerState, height: int | None = None, boxes: Sequence[Box] | None = None
) -> go.Figure:
    """The film and its overlays as a plotly figure in the analysed image's pixel frame; ``boxes`` replaces
    the detector's (e.g. a doctor's reading's, unscored). Without a ``height`` the figure fills its box."""
    pw, ph = _preview_size(str(view.preview_path))
    base = go.Image(
        source=_film_uri(str(view.preview_path), state.level, state.width, state.invert),
        dx=view.width / pw,
        dy=view.height / ph,
        hoverinfo="skip",
        name="film",
    )
    traces: list[go.Image] = [base]
    if state.heat_finding is not None:
        layer = render.heatmap_layer(view, state.heat_finding)
        from PIL import Image

        with Image.open(layer.path) as image:
            hw, hh = image.size
        traces.append(
            go.Image(
                source=_uri(layer.path.read_bytes(), "image/png"),
                dx=view.width / hw,
                dy=view.height / hh,
                hoverinfo="skip",
                name="heat map",
            )
        )
    fig = go.Figure(traces)
    if state.boxes:
        for b in view.boxes if boxes is None else boxes:
            fig.add_shape(
                type="rect",
                x0=b.x1,
                y0=b.y1,
                x1=b.x2,
                y1=b.y2,
                line={"color": BOX_COLOUR, "width": 2},
                fillcolor="rgba(0,0,0,0)",
                name=f"box {b.label}",
            )
            if state.labels:
                # as beside the film: the detector's confidence; a doctor's box has none
                text = b.label if b.score is None else f"{b.label} {b.score:.0%}"
                fig.add_annotation(
                    x=b.x1,
                    y=b.y1,
                    text=text,
                    showarrow=False,
                    xanchor="left",
                    yanchor="bottom",
                    font={"size": 12, "color": "white"},
                    bgcolor="rgba(180,20,20,0.75)",
                    borderpad=2,
                )
    fig.update_layout(
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        height=height,
        autosize=True,
        dragmode="pan",
        uirevision=f"film-{view.study_id}-{state.revision}",
        plot_bgcolor="black",
        paper_bgcolor="black",
        showlegend=False,
    )
    fig.update_xaxes(visible=False, range=[0, view.width], constrain="domain")
    fig.update_yaxes(visible=False, range=[view.height, 0], scaleanchor="x", constrain="domain")
    return fig


@st.cache_resource(show_spinner=False)
def warm_up() -> bool:
    """Once per server process, before the first film: import and exercise what drawing a result needs the
    first time (plotly's validators and JSON encoding, pandas and Arrow for the findings table), so the first
    upload after a start costs what the next ones do. The X-ray page calls it on opening."""
    import pandas as pd
    import plotly.io as pio
    import pyarrow as pa

    pa.Table.from_pandas(pd.DataFrame([{"Finding": "x", "Probability": 1.0}]))
    blank = go.Figure(go.Image(source=_uri(b"", "image/jpeg"), dx=1, dy=1, hoverinfo="skip"))
    blank.add_shape(type="rect", x0=0, y0=0, x1=1, y1=1, line={"color": BOX_COLOUR})
    blank.add_annotation(x=0, y=0, text="x", showarrow=False)
    blank.update_layout(margin={"l": 0}, uirevision="warm", autosize=True)
    blank.update_xaxes(visible=False, range=[0, 1], constrain="domain")
    blank.update_yaxes(visible=False, range=[1, 0], scaleanchor="x", constrain="domain")
    pio.to_json(blank, validate=False)
    return True


def _reset(prefix: str) -> None:
    st.session_state[f"{prefix}.wl"] = (0, 100)
    st.session_state[f"{prefix}.invert"] = False
    st.session_state[f"{prefix}.rev"] = st.session_state.get(f"{prefix}.rev", 0) + 1


def controls(view: DiagnosisView, has_boxes: bool | None = None) -> ViewerState:
    """One compact row of viewer tools above the film; returns what they chose."""
    prefix = f"xr.viewer.{view.study_id}"
    has_boxes = bool(view.boxes) if has_boxes is None else has_boxes
    st.session_state.setdefault(f"{prefix}.wl", (0, 100))
    st.session_state.setdefault(f"{prefix}.invert", False)
    names = [f.name for f in sorted(view.findings, key=lambda f: -f.probability) if f.name in view.localised]
    labels = {f.name: f"{f.label} {f.probability:.0%}" for f in view.findings}
    row = st.container(horizontal=True, vertical_alignment="center", gap="small", wrap=False)
    boxes = row.toggle("Boxes", value=True, key=f"{prefix}.boxes", disabled=not has_boxes)
    shown_labels = row.toggle("Labels", value=True, key=f"{prefix}.labels", disabled=not has_boxes)
    heat = row.toggle(
        "Heat map",
        value=False,
        key=f"{prefix}.heat",
        disabled=not names,
        help="Where the classifier looked"
        if names
        else "Heat maps are not shown: checked against radiologists' boxes, this model's heat maps did not "
        "point at the findings better than a fixed map would (see the model card).",
    )
    chosen = None
    if heat and names:
        chosen = row.selectbox(
            "Heat map of",
            names,
            format_func=lambda n: labels[n],
            key=f"{prefix}.heatof",
            label_visibility="collapsed",
            width=200,
        )
    invert = row.toggle("Invert", key=f"{prefix}.invert")
    with row.popover("W/L", icon=":material/contrast:", help="Window/level: brightness and contrast"):
        chosen_range: Any = st.slider(
            "Grey range shown (black to white), %",
            0,
            100,
            key=f"{prefix}.wl",
            help="Narrow the range to raise the contrast; move it to make the film brighter or darker.",
        )
    low, high = (int(v) for v in chosen_range)
    row.button(
        "Reset",
        key=f"{prefix}.reset",
        on_click=_reset,
        args=(prefix,),
        icon=":material/restart_alt:",
        help="Back to the whole film, its own grey range, not inverted",
    )
    width = max(0.01, (high - low) / 100)
    revision = int(st.session_state.get(f"{prefix}.rev", 0))
    return ViewerState(boxes, shown_labels, chosen, (low + high) / 200, width, invert, revision)


def film_viewer(view: DiagnosisView, boxes: Sequence[Box] | None = None) -> ViewerState:
    """The tools row and the film with its overlays (``boxes``: those to draw instead of the detector's), as
    tall as :data:`FILM_HEIGHT_CSS` (the page adds :func:`style`)."""
    state = controls(view, has_boxes=bool(view.boxes if boxes is None else boxes))
    # a fixed-height box (720 px, what 80 % of 900 is) lets the chart stretch; the CSS resizes the box
    st.container(height=720, border=False, key=_FILM_BOX).plotly_chart(
        figure(view, state, None, boxes),
        key=f"xr.film.{view.study_id}",
        height="stretch",
        config={
            "scrollZoom": True,
            "displaylogo": False,
            "displayModeBar": True,
            "modeBarButtonsToRemove": ["select2d", "lasso2d", "toImage"],
            "doubleClick": "reset",
            "responsive": True,
        },
    )
    if state.heat_finding is not None:
        st.caption("Heat map: dark red = little contribution, yellow-white = strongest; transparent = none.")
    return state
