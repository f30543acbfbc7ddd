"""The exports a person asks for: their record as PDF or CSV (`Patient/[id]/$record-export`),
and a physician's referrals as xlsx (`Practitioner/[id]/$referrals-export`). Each reads
through the service layer, so it holds what the caller may see and is audited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ... import clock
from ...model.errors import FhirError, Kind, fail
from ...model.platform_codes import ANSWER, MESSAGE_SYSTEM, REFERRAL
from ...services import crud, search
from ...services.context import Context
from .. import everything
from . import pdf, tables
from .content import Record, Row, referral_rows
from .labels import Language

FORMATS = {"pdf": "application/pdf", "csv": "application/zip", "xlsx":
           "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
BATCH = 100  # referrals per answer query


@dataclass(frozen=True, slots=True)
class Export:
    """A file for the caller: its bytes, media type and suggested name."""

    content: bytes
    media_type: str
    filename: str


def _check_format(format: str | None, offered: tuple[str, ...]) -> str:
    if format not in offered:
        raise fail(Kind.INVALID, "not-supported", f"Export format '{format}' is not offered here: "
                   f"{' or '.join(offered)}.", expression="format")
    return format


def _caller(ctx: Context) -> str:
    principal = ctx.principal
    return (principal.fhir_user or principal.subject) if principal is not None else "?"


async def patient_export(ctx: Context, patient_id: str, format: str | None, language: Language) -> Export:
    """The record of `patient_id` as `format` (pdf, csv); NOT_FOUND as `$everything` would.
    A relative is refused, whoever the patient: the export of the record (GDPR arts. 15 and
    20) is the right of the data subject or their legal representative, not of someone they
    delegate part of their record to (who reads what is granted through the API)."""
    if ctx.principal is not None and ctx.principal.delegation is not None:  # a relative's
        raise fail(Kind.FORBIDDEN, "forbidden", "The export of a record is for the patient or "
                   "their legal representative.")
    chosen = _check_format(format, ("pdf", "csv"))
    entries = await everything.record(ctx, patient_id)
    record = Record.of(patient_id, (e["resource"] for e in entries if e["search"]["mode"] == "match"))
    name = f"record-{patient_id}-{language}"
    if chosen == "pdf":
        content = pdf.render(record, language, _caller(ctx), clock.today())
        return Export(content, FORMATS["pdf"], f"{name}.pdf")
    return Export(tables.record_csv(record, language), FORMATS["csv"], f"{name}.zip")


async def referrals_export(ctx: Context, practitioner_id: str, format: str | None,
                           language: Language) -> Export:
    """The referrals Practitioner/`practitioner_id` sent, with their answers, as xlsx. Only
    that practitioner asks for it: anyone else gets NOT_FOUND, as for an unknown id."""
    _check_format(format, ("xlsx",))
    me = f"Practitioner/{practitioner_id}"
    if ctx.principal is None or ctx.principal.fhir_user != me:
        raise fail(Kind.NOT_FOUND, "not-found", f"{me} is not known.", details_code="MSG_NO_EXIST")
    referrals = await _all(ctx, [("sender", me), ("category", f"{MESSAGE_SYSTEM}|{REFERRAL}")])
    ids = [f"Communication/{r['id']}" for r in referrals]
    answers = []
    for start in range(0, len(ids), BATCH):
        answers += await _all(ctx, [("in-response-to", ",".join(ids[start:start + BATCH])),
                                    ("category", f"{MESSAGE_SYSTEM}|{ANSWER}")])
    rows = await _with_names(ctx, referral_rows([*referrals, *answers]))
    return Export(tables.referrals_xlsx(rows, language), FORMATS["xlsx"],
                  f"referrals-{practitioner_id}-{language}.xlsx")


async def _all(ctx: Context, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every Communication the caller may see matching `params`, page after page."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        paging = [(everything.CURSOR, cursor)] if cursor else []
        page = await search.search(ctx, "Communication", [*params, ("_count", str(ctx.max_page_size)),
                                                          *paging], strict=True)
        found += (everything.parsed(e) for e in page.get("entry", []) if e["search"]["mode"] == "match")
        cursor = everything.next_cursor(page)
        if cursor is None:
            return found


async def _with_names(ctx: Context, rows: list[Row]) -> list[Row]:
    """Rows for the physician's sheet: the patient's name first, the sender (themselves) left out."""
    names: dict[str, str] = {}
    for reference in dict.fromkeys(row[0] for row in rows):
        kind, _, id = reference.partition("/")
        try:
            version = await crud.read(ctx, kind, id)
        except FhirError:  # out of reach since it was sent, or not a Patient: shown as it is
            names[reference] = reference
            continue
        names[reference] = Record(orjson.loads(version.body or b"{}"), {}).name()
    return [(names[row[0]], *row[1:3], *row[4:]) for row in rows]
