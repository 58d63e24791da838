"""The one-page PDF report of a film (fpdf2), in DejaVu Sans from matplotlib's own font files (no download).

Layout, A4 portrait: the site and title; the patient block (name, ID, sex, age and birth date, visit) and the
film block (acquisition date and projection from the DICOM header, or "upload time only", the upload, the
study number); the film with the detector's boxes (red) and the doctor's (blue) on the left; the triage and the AI read (likely and possible
findings with percentages, model versions) on the right; the doctor's current reading (signed or only
saved, amended, or "not yet reviewed") with the note and the reader; the decision-aid notice and who made the
report when.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import matplotlib
from fpdf import FPDF

from core.handoff.content import DISCLAIMER, ReportContent
from core.handoff.film import annotated_film, doctor_boxes
from core.ml.probability import percent

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
LEVEL_WORDS = {"urgent": "URGENT", "priority": "Priority", "routine": "Routine"}
LEVEL_RGB = {"urgent": (176, 0, 32), "priority": (191, 96, 0), "routine": (30, 110, 60)}


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _pct(p: float) -> str:
    return f"{p:.0%}"


def _lines(pdf: FPDF, text: str, height: float) -> list[str]:
    """The lines ``text`` takes in the full-width column at the current font."""
    return cast(list[str], pdf.multi_cell(186, height, text, dry_run=True, output="LINES"))


def _fit(pdf: FPDF, text: str, room: float) -> float:
    """Set the largest font (9.5 down to 7 pt) at which ``text`` fits ``room`` mm; its line height, or 0."""
    for size in (9.5, 8.5, 7.5, 7.0):
        pdf.set_font("DejaVu", "", size)
        height = size * 0.5
        if len(_lines(pdf, text, height)) * height <= room:
            return height
    return 0.0


def _cut(pdf: FPDF, text: str, room: float) -> str:
    """``text`` cut (at 7 pt) to the lines that fit ``room``, saying that the record has the rest."""
    lines = _lines(pdf, text, 3.5)
    keep = max(int(room // 3.5) - 1, 1)
    return "\n".join(lines[:keep]) + "\n[...] The note is longer than this page: the record has all of it."


class _Report(FPDF):
    def __init__(self) -> None:
        super().__init__(format="A4", unit="mm")
        self.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.add_font("DejaVu", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        self.set_auto_page_break(False)
        self.set_margins(12, 12, 12)

    def multi_cell(self, *args: Any, **kwargs: Any) -> Any:
        """Left-aligned by default (fpdf2 justifies, which spreads short lines of a narrow column apart)."""
        kwargs.setdefault("align", "L")
        return super().multi_cell(*args, **kwargs)

    def label_value(self, label: str, value: str, w: float) -> None:
        x = self.get_x()
        self.set_font("DejaVu", "", 7.5)
        self.set_text_color(90, 100, 110)
        self.cell(w, 3.6, label.upper(), new_x="LEFT", new_y="NEXT")
        self.set_x(x)
        self.set_font("DejaVu", "B", 10)
        self.set_text_color(20, 30, 40)
        self.multi_cell(w, 4.8, value or "-", new_x="LEFT", new_y="NEXT")
        self.gap(1, x)

    def gap(self, h: float, x: float | None = None) -> None:
        """Move down ``h`` mm and stay in the current column (``ln`` would go back to the left margin)."""
        x = self.get_x() if x is None else x
        self.set_xy(x, self.get_y() + h)


def render_pdf(content: ReportContent) -> bytes:
    """The report as PDF bytes (one page)."""
    view = content.view
    pdf = _Report()
    pdf.set_title(f"Chest X-ray report {content.patient_id} study {view.study_id}")
    pdf.set_author(content.site)
    pdf.add_page()

    # Title bar.
    pdf.set_font("DejaVu", "B", 14)
    pdf.set_text_color(11, 110, 153)
    pdf.cell(120, 7, content.site)
    pdf.set_font("DejaVu", "", 11)
    pdf.set_text_color(20, 30, 40)
    pdf.cell(0, 7, "Chest X-ray report", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_draw_color(11, 110, 153)
    pdf.set_line_width(0.6)
    pdf.line(12, pdf.get_y() + 1, 198, pdf.get_y() + 1)
    pdf.ln(4)

    # Patient block and film block, side by side.
    top = pdf.get_y()
    pdf.set_xy(12, top)
    pdf.label_value("Patient", content.patient_name, 90)
    pdf.label_value("Patient ID", content.patient_id, 90)
    pdf.label_value(
        "Sex, age", f"{content.sex}, {content.age_years} years (born {content.birth_date.isoformat()})", 90
    )
    visit = (
        f"{content.visit[0].isoformat()}: {content.visit[1]}" if content.visit else "not linked to a visit"
    )
    pdf.label_value("Visit", visit, 90)
    left_end = pdf.get_y()
    pdf.set_xy(108, top)
    if content.acquired:
        acquired = content.acquired.isoformat() + (f", {content.projection}" if content.projection else "")
    else:
        acquired = "not in the file (upload time only)"
    pdf.label_value("Film acquired", acquired, 90)
    pdf.label_value("Uploaded", f"{_when(view.uploaded_at)} by {view.uploaded_by}", 90)
    pdf.label_value(
        "Study", f"#{view.study_id} · {view.source_format.upper()} · {view.width} x {view.height} px", 90
    )
    pdf.set_y(max(left_end, pdf.get_y()) + 2)

    # The film with its boxes, left; the triage and AI read, right.
    film_top = pdf.get_y()
    film_w = 110.0
    film_h = film_w * view.height / max(view.width, 1)
    film_h = min(film_h, 130.0)
    film = io.BytesIO()
    annotated_film(content, max_side=1200).save(film, format="JPEG", quality=90)  # embedded as is (DCT)
    pdf.image(film, x=12, y=film_top, h=film_h, keep_aspect_ratio=True, w=film_w)
    pdf.set_xy(128, film_top)
    level = view.triage_level
    pdf.set_font("DejaVu", "B", 13)
    pdf.set_text_color(*LEVEL_RGB.get(level, (20, 30, 40)))
    suffix = " (uncertain: review)" if view.uncertain else ""
    pdf.multi_cell(70, 6, f"Triage: {LEVEL_WORDS.get(level, level)}{suffix}", new_x="LEFT", new_y="NEXT")
    pdf.set_text_color(20, 30, 40)
    pdf.set_font("DejaVu", "", 8.5)
    if view.abnormality is not None:
        # the abnormality score ranks films (triage-v4 fits it to the training mix): a score, not a chance
        scores = f"Abnormality score {percent(view.abnormality)}"
        if view.urgency is not None:
            scores += f", chance of an urgent finding {percent(view.urgency)}"
        pdf.multi_cell(70, 4.2, scores + ".", new_x="LEFT", new_y="NEXT")
    pdf.gap(2)
    by_name = {f.name: f for f in view.findings}
    for title, names in (("Likely findings (AI)", view.likely), ("Possible findings (AI)", view.possible)):
        pdf.set_font("DejaVu", "B", 9.5)
        pdf.multi_cell(70, 5, title, new_x="LEFT", new_y="NEXT")
        pdf.set_font("DejaVu", "", 9)
        lines = [f"{by_name[n].label}  {_pct(by_name[n].probability)}" for n in names if n in by_name]
        pdf.multi_cell(70, 4.4, "\n".join(lines) if lines else "none", new_x="LEFT", new_y="NEXT")
        pdf.gap(1.5)
    if view.boxes:
        pdf.set_font("DejaVu", "B", 9.5)
        pdf.multi_cell(70, 5, "Marked regions (AI)", new_x="LEFT", new_y="NEXT")
        pdf.set_font("DejaVu", "", 9)
        pdf.multi_cell(
            70,
            4.4,
            "\n".join(f"{b.label}  {_pct(b.score)}" if b.score is not None else b.label for b in view.boxes),
            new_x="LEFT",
            new_y="NEXT",
        )
        pdf.gap(1.5)
    pdf.set_font("DejaVu", "", 7.5)
    pdf.set_text_color(90, 100, 110)
    models = ", ".join(f"{k} {v}" for k, v in sorted(view.models.items()))
    pdf.multi_cell(70, 3.6, f"Models: {models}", new_x="LEFT", new_y="NEXT")
    pdf.set_text_color(20, 30, 40)

    # The doctor's reading.
    pdf.set_y(max(film_top + film_h, pdf.get_y()) + 5)
    pdf.set_draw_color(200, 205, 210)
    pdf.set_line_width(0.3)
    pdf.line(12, pdf.get_y(), 198, pdf.get_y())
    pdf.ln(2)
    pdf.set_font("DejaVu", "B", 11)
    pdf.cell(0, 6, "Doctor's reading", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 9.5)
    reading = content.reading
    if reading is None:
        pdf.multi_cell(186, 5, "Not yet reviewed by a doctor: the AI read above is unconfirmed.")
    else:

        def labels(label: str) -> str:
            names = [n for n, v in reading.labels.items() if v == label]
            return ", ".join(by_name[n].label if n in by_name else n for n in names) or "none"

        reader = reading.reader_name or reading.reader_username
        if reading.signed and reading.signed_at is not None:
            verb = "Amended and signed" if reading.amends is not None else "Signed"
            head = f"{verb} by {reader} ({reading.reader_username}) on {_when(reading.signed_at)}"
        else:
            head = f"Saved, not signed, by {reader} ({reading.reader_username}) on {_when(reading.saved_at)}"
        verdict = "agrees with the AI read" if reading.status == "reviewed" else "corrects the AI read"
        text = f"{head}: {verdict}.\nPresent: {labels('present')}. Absent: {labels('absent')}."
        if any(v == "uncertain" for v in reading.labels.values()):
            text += f" Uncertain: {labels('uncertain')}."
        if reading.unset:
            unset = ", ".join(by_name[n].label if n in by_name else n for n in reading.unset)
            text += f" Left at the AI's suggestion: {unset}."
        marked = doctor_boxes(content)
        if marked:
            text += f"\nMarked by the doctor (blue): {', '.join(b.label for b in marked)}."
        if reading.amends is not None and reading.amend_reason:
            text += f"\nAmended because: {reading.amend_reason}"
        if reading.note:
            text += f"\nNote: {reading.note}"
        room = 297 - 24 - 8 - pdf.get_y()  # down to the footer, less the reader's line
        fitted = _fit(pdf, text.strip(), room)
        pdf.multi_cell(186, fitted or 3.5, text.strip() if fitted else _cut(pdf, text.strip(), room))
        pdf.set_font("DejaVu", "B", 9.5)
        pdf.ln(1)
        pdf.cell(0, 5, f"Reader: {reader}", new_x="LMARGIN", new_y="NEXT")

    # Footer.
    pdf.set_y(-22)
    pdf.set_draw_color(200, 205, 210)
    pdf.line(12, pdf.get_y(), 198, pdf.get_y())
    pdf.ln(1.5)
    pdf.set_font("DejaVu", "B", 8.5)
    pdf.multi_cell(186, 4.2, DISCLAIMER, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 7.5)
    pdf.set_text_color(90, 100, 110)
    pdf.cell(
        186,
        4,
        f"Report made {_when(content.generated_at)} by {content.generated_by} · page 1 of 1",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    return bytes(pdf.output())
