"""Server-side cost of one result-page viewer rerun: window/level on the 2048 px preview (core.xray.render.
windowed) and the plotly figure as Streamlit sends it (film, boxes, labels), median of N runs, printed.

    .venv/bin/python scripts/bench_viewer.py [N]
"""

from __future__ import annotations

import base64
import io
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import plotly.graph_objects as go
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.xray import render  # noqa: E402


def _figure(jpeg: bytes, side: int) -> str:
    source = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    fig = go.Figure(go.Image(source=source, hoverinfo="skip"))
    fig.add_shape(type="rect", x0=100, y0=100, x1=600, y1=700, line={"color": "#ff3b30", "width": 2})
    fig.add_annotation(
        x=100, y=100, text="Cardiomegaly 19%", showarrow=False, xanchor="left", yanchor="bottom"
    )
    fig.update_layout(height=720, dragmode="pan", uirevision="film")
    fig.update_xaxes(visible=False, range=[0, side])
    fig.update_yaxes(visible=False, range=[side, 0], scaleanchor="x")
    return fig.to_json()


def main(n: int = 20) -> None:
    sample = Image.open(ROOT / "assets" / "samples" / "00005869_001.png").convert("L").resize((2048, 2048))
    with tempfile.TemporaryDirectory() as tmp:
        preview = Path(tmp) / "preview.jpg"
        out = io.BytesIO()
        sample.save(out, format="JPEG", quality=render.JPEG_QUALITY)
        preview.write_bytes(out.getvalue())
        for label, args in (("as stored", (0.5, 1.0, False)), ("window/level + invert", (0.45, 0.6, True))):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                _figure(render.windowed(preview, *args), 2048)
                times.append((time.perf_counter() - t0) * 1e3)
            print(f"{label:>24}: median {statistics.median(times):6.1f} ms over {n} runs")
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
