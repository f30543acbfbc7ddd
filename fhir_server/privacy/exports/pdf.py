"""The record as a PDF (reportlab): the patient, conditions, observations grouped by date,
consents, referrals and their answers, who accessed the record, and the count of the rest.
Set in DejaVu Sans Condensed, embedded (Debian's fonts-dejavu-core, which the Docker image installs):
it has the letters of every European and Vietnamese name (ą, ő, ș, ễ), where PDF's standard
Helvetica (WinAnsi) has the French ones only. Without the font files, Helvetica is used and
such letters print as boxes (logged once)."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from .content import Record, Row
from .labels import Language, label

log = logging.getLogger(__name__)
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
# The condensed faces: about Helvetica's widths, so that a date fits its column as it did.
_FACES = {"DejaVuSans": "DejaVuSansCondensed.ttf", "DejaVuSans-Bold": "DejaVuSansCondensed-Bold.ttf",
          "DejaVuSans-Oblique": "DejaVuSansCondensed-Oblique.ttf",
          "DejaVuSans-BoldOblique": "DejaVuSansCondensed-BoldOblique.ttf"}


@cache
def _family() -> tuple[str, str, str]:
    """(regular, bold, italic) font names: DejaVu Sans, registered once, else Helvetica's."""
    if not all((FONT_DIR / file).is_file() for file in _FACES.values()):
        log.warning("DejaVu Sans is not in %s (fonts-dejavu-core): record PDFs are set in "
                    "Helvetica, whose letters are the French ones only", FONT_DIR)
        return "Helvetica", "Helvetica-Bold", "Helvetica-Oblique"
    for name, file in _FACES.items():
        pdfmetrics.registerFont(TTFont(name, str(FONT_DIR / file)))
    pdfmetrics.registerFontFamily("DejaVuSans", normal="DejaVuSans", bold="DejaVuSans-Bold",
                                  italic="DejaVuSans-Oblique", boldItalic="DejaVuSans-BoldOblique")
    return "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique"


@cache
def _styles() -> dict[str, ParagraphStyle]:
    """The paragraph styles, in `_family`'s fonts."""
    regular, bold, italic = _family()
    sample = getSampleStyleSheet()
    cell = ParagraphStyle("cell", parent=sample["BodyText"], fontName=regular, fontSize=8.5, leading=10.5)
    return {"title": ParagraphStyle("title", parent=sample["Title"], fontName=bold),
            "heading": ParagraphStyle("heading", parent=sample["Heading2"], fontName=bold),
            "normal": ParagraphStyle("normal", parent=sample["Normal"], fontName=regular),
            "italic": ParagraphStyle("italic", parent=sample["Italic"], fontName=italic),
            "cell": cell, "head": ParagraphStyle("head", parent=cell, fontName=bold)}


_GRID = TableStyle([
    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")),
    ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#9aa8b8")),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
])
_WIDTH = A4[0] - 36 * mm


def render(record: Record, language: Language, requested_by: str, day: str) -> bytes:
    """The PDF of `record` in `language`."""
    out = io.BytesIO()
    document = SimpleDocTemplate(out, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm,
                                 topMargin=16 * mm, bottomMargin=16 * mm,
                                 title=label("title", language), lang=language)

    def footer(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        canvas.setFont(_family()[0], 8)
        canvas.drawRightString(A4[0] - 18 * mm, 9 * mm, label("page", language, n=str(doc.page)))
        canvas.drawString(18 * mm, 9 * mm, record.name())

    document.build(_story(record, language, requested_by, day), onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()


def _story(record: Record, language: Language, requested_by: str, day: str) -> list[Flowable]:
    def say(key: str) -> str:
        return label(key, language)

    patient = record.patient
    styles = _styles()
    story: list[Flowable] = [
        Paragraph(escape(say("title")), styles["title"]),
        Paragraph(f"<b>{escape(record.name())}</b> — {say('born')} {escape(patient.get('birthDate', '?'))}"
                  f" — {say('identifier')} Patient/{escape(patient['id'])}", styles["normal"]),
        Paragraph(escape(label("made", language, day=day, who=requested_by)), styles["italic"]),
    ]
    story += _section(say("conditions"), (say("onset"), say("what"), say("status")),
                      record.conditions(), language, (0.18, 0.6, 0.22))
    story.append(Paragraph(escape(say("observations")), styles["heading"]))
    days = record.observations()
    if not days:
        story.append(Paragraph(say("none"), styles["cell"]))
    for day_seen, rows in days:
        story.append(KeepTogether([Paragraph(f"<b>{escape(day_seen)}</b>", styles["cell"]),
                                   _table((say("what"), say("value")), rows[:1], (0.6, 0.4))]))
        if rows[1:]:
            story.append(_table(None, rows[1:], (0.6, 0.4)))
        story.append(Spacer(1, 2 * mm))
    story += _section(say("consents"), (say("date"), say("scope"), say("decision"), say("period"),
                                        say("actors")), record.consents(language), language,
                      (0.14, 0.22, 0.14, 0.22, 0.28))
    story += _section(say("referrals"), (say("sent"), say("study"), say("sender"), say("status"),
                                         say("answer")), record.referrals(), language,
                      (0.12, 0.22, 0.2, 0.16, 0.3))
    story += _section(say("accesses"), (say("date"), say("who"), say("action")),
                      record.accesses(language), language, (0.2, 0.45, 0.35))
    story += _section(say("other"), (say("type"), say("count")), record.counts(), language, (0.7, 0.3))
    return story


def _section(title: str, head: Row, rows: Sequence[Row], language: Language,
             widths: Sequence[float]) -> list[Flowable]:
    styles = _styles()
    body: Flowable = _table(head, rows, widths) if rows else Paragraph(label("none", language), styles["cell"])
    return [Paragraph(escape(title), styles["heading"]), body]


def _table(head: Row | None, rows: Sequence[Row], widths: Sequence[float]) -> Table:
    styles = _styles()
    cells = [[Paragraph(escape(text), styles["cell"]) for text in row] for row in rows]
    if head is not None:
        cells.insert(0, [Paragraph(escape(text), styles["head"]) for text in head])
    table = Table(cells, colWidths=[w * _WIDTH for w in widths], repeatRows=1 if head else 0)
    table.setStyle(_GRID if head else TableStyle(_GRID.getCommands()[1:]))
    return table
