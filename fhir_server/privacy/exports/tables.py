"""The record as CSV files, one per resource type (a zip), and a physician's referrals as an
xlsx sheet (openpyxl). Every CSV row is one resource: its type, reader's date and description
in the reader's language, then each element of the resource as a column named by its path
(`code.coding.0.display`), so nothing of the record is left out.

Text that anyone wrote (a patient's name, a note) must reach a spreadsheet as text, never as a
formula (OWASP, "CSV injection"): a CSV cell that begins with = + - @, a tab or a carriage
return, and is not a number, gets an apostrophe in front; such an xlsx cell is a string cell
with Excel's quote prefix, its text unchanged."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font

from .content import Record, Row, clinical_date, concept
from .labels import Language, label

# What makes a spreadsheet read a cell as a formula (or, for tab and CR, hide where one starts).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[-+]?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def neutral(text: str) -> str:
    """`text` for a CSV cell: an apostrophe before text a spreadsheet would take for a
    formula; numbers (-3.5) as they are."""
    if text.startswith(FORMULA_START) and not _NUMBER.fullmatch(text):
        return f"'{text}"
    return text


def flatten(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) for every leaf of a resource."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from flatten(item, f"{path}.{index}")
    else:
        text = "true" if value is True else "false" if value is False else str(value)
        yield path, text


def record_csv(record: Record, language: Language) -> bytes:
    """A zip of `<Type>.csv` files (UTF-8 with a byte-order mark, which spreadsheets read as such)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for resource_type, resources in sorted(record.by_type.items()):
            archive.writestr(f"{resource_type}.csv", _csv(resources, language).encode("utf-8-sig"))
    return out.getvalue()


def _csv(resources: Sequence[dict[str, Any]], language: Language) -> str:
    flat = [dict(flatten(r)) for r in resources]
    columns = list(dict.fromkeys(path for row in flat for path in row))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")  # RFC 4180
    writer.writerow([label("type", language), label("date", language), label("what", language),
                     *map(neutral, columns)])
    for resource, row in zip(resources, flat, strict=True):
        writer.writerow(map(neutral, [resource["resourceType"], clinical_date(resource),
                                      concept(resource.get("code")), *(row.get(c, "") for c in columns)]))
    return text.getvalue()


def referrals_xlsx(rows: Sequence[Row], language: Language) -> bytes:
    """One sheet: a row per referral (patient, sent, trial, status, answers)."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = label("sheet", language)
    sheet.append([label(k, language) for k in ("patient", "sent", "study", "status", "answer")])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        # Control characters FHIR strings may hold and a sheet may not: U+FFFD in their place
        sheet.append([ILLEGAL_CHARACTERS_RE.sub("\ufffd", text) for text in row])
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, str) and cell.value.startswith(FORMULA_START):
                cell.data_type = "s"  # openpyxl made "=..." a formula
                cell.quotePrefix = True
    for column, width in zip("ABCDE", (28, 12, 32, 18, 48), strict=True):
        sheet.column_dimensions[column].width = width
    sheet.freeze_panes = "A2"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
