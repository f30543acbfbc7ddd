"""The human-readable exports (docs/privacy.md): the record as PDF in French and English and
as CSV files, parsed back and compared with the record; a physician's referrals as xlsx,
opened with openpyxl; the formats, languages and callers refused. Run on both stores through
the referral workflow's platform (tests/trials/conftest.py)."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from tests.privacy.records import scan
from tests.trials.conftest import DR, ROLE, STUDY, Platform, platform  # noqa: F401 (fixture)

ACCENTED = {"type": "text", "text": "Cancer du sein, métastatique — évolué"}


@pytest.fixture(scope="module")
def referred(platform: Platform) -> Platform:  # noqa: F811
    """`shared` referred to the study and answered; a Condition with French accents."""
    response = platform.refer("shared")
    assert response.status_code == 201, response.text
    answer = platform.answer(response.json()["id"], "preselected")
    assert answer.status_code == 201, answer.text
    body = {"resourceType": "Condition", "id": "shared-fr", "subject": {"reference": "Patient/shared"},
            "code": {"text": ACCENTED["text"]}, "onsetDateTime": "2023-05-04"}
    assert platform.client.put("/fhir/Condition/shared-fr", json=body,
                               headers={"Content-Type": "application/fhir+json"}).status_code == 201
    return platform


def _export(platform: Platform, patient: str, actor: str, query: str) -> Any:
    return platform.client.get(f"/fhir/Patient/{patient}/$record-export?{query}",
                               headers=platform.headers(actor, patient))


def _text(pdf: bytes) -> str:
    return " ".join(" ".join((page.extract_text() or "").split()) for page in PdfReader(io.BytesIO(pdf)).pages)


@pytest.mark.parametrize("language, titles", [
    ("fr", ["Mon dossier médical", "Problèmes de santé", "Observations et résultats, par date",
            "Consentements", "Adressages à des essais cliniques et réponses", "Qui a consulté mon dossier"]),
    ("en", ["My medical record", "Conditions", "Observations and results, by date", "Consents",
            "Referrals to clinical trials and their answers", "Who accessed my record"]),
])
def test_the_pdf_holds_the_record(referred: Platform, language: str, titles: list[str]) -> None:
    read = referred.client.get("/fhir/Patient/shared", headers=referred.headers("physician"))
    assert read.status_code == 200
    response = _export(referred, "shared", "patient", f"format=pdf&language={language}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert "attachment" in response.headers["content-disposition"]
    text = _text(response.content)
    for title in titles:
        assert title in text
    assert ACCENTED["text"] in text  # accents survive the PDF's font encoding
    assert "HER2+ metastatic breast cancer, phase II" in text or STUDY in text  # the referral
    assert "Preselected" in text  # its answer (the outcome's display)
    assert DR in text  # the consent naming the physician
    system = referred.client.get("/fhir/Observation?subject=Patient/shared").json()
    for entry in system["entry"]:
        observed = entry["resource"]
        # By date: the clinical one, else the day it was recorded.
        assert observed.get("effectiveDateTime", observed["meta"]["lastUpdated"])[:10] in text
        assert f"{observed['valueQuantity']['value']} kg" in text
    accesses = text[text.index(titles[-1]):]  # the physician's read is in the access history
    assert f"{DR} {'lecture' if language == 'fr' else 'read'} (read)" in accesses


def test_the_representative_gets_the_record_they_represent(referred: Platform) -> None:
    response = _export(referred, "minor", "representative", "format=pdf")
    assert response.status_code == 200, response.text
    assert "Mon dossier médical" in _text(response.content)
    # Not their representative: refused as a read of that record is (403: the token reaches
    # no patient at all).
    other = _export(referred, "shared", "representative", "format=pdf")
    read = referred.client.get("/fhir/Patient/shared", headers=referred.headers("representative", "shared"))
    assert other.status_code == read.status_code == 403
    assert other.json()["resourceType"] == "OperationOutcome"


def test_the_csv_files_are_the_record(referred: Platform) -> None:
    response = _export(referred, "shared", "patient", "format=csv&language=en")
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    files = {name: list(csv.DictReader(io.StringIO(archive.read(name).decode("utf-8-sig"))))
             for name in archive.namelist()}
    assert {"Patient.csv", "Condition.csv", "Observation.csv", "Consent.csv"} <= set(files)
    client = referred.client
    for name, rows in files.items():
        resource_type = name.removesuffix(".csv")
        if resource_type == "AuditEvent":  # grows while we read: checked in test_everything
            continue
        stored = {r["id"]: r for r in scan(client, resource_type, f"_id={','.join(row['id'] for row in rows)}")}
        assert len(rows) == len(stored)
        for row in rows:
            assert row["Type"] == resource_type
            for path, text in _leaves(stored[row["id"]]):
                assert row[path] == text, (name, path)
    conditions = {row["id"]: row for row in files["Condition.csv"]}
    assert conditions["shared-fr"]["code.text"] == ACCENTED["text"]
    assert conditions["shared-fr"]["Description"] == ACCENTED["text"]


def _leaves(value: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{path}.{i}")]
    return [(path, {True: "true", False: "false"}.get(value, str(value)) if isinstance(value, bool) else str(value))]


def test_the_physician_gets_a_spreadsheet_of_their_referrals(referred: Platform) -> None:
    doctor = referred.headers("physician")
    response = referred.client.get(f"/fhir/{DR}/$referrals-export?format=xlsx&language=fr", headers=doctor)
    assert response.status_code == 200, response.text
    sheet = load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert rows[0] == ["Patient", "Envoyé le", "Essai", "Statut", "Réponse"]
    sent = referred.client.get("/fhir/Communication?sender=" + DR).json()
    referrals = [e["resource"] for e in sent["entry"] if e["resource"]["category"][0]["coding"][0]["code"] == "referral"]
    assert len(rows) - 1 == len(referrals) >= 1
    shared = next(r for r in rows[1:] if r[0] == "Shared Dupont")
    assert "Preselected" in shared[4]
    other = referred.client.get("/fhir/Practitioner/dr-team/$referrals-export?format=xlsx", headers=doctor)
    assert other.status_code == 404  # someone else's referrals: as if unknown


@pytest.mark.parametrize("url, expression", [
    ("/fhir/Patient/shared/$record-export?format=docx", "format"),
    ("/fhir/Patient/shared/$record-export", "format"),
    ("/fhir/Patient/shared/$record-export?format=pdf&language=de", "language"),
    (f"/fhir/{DR}/$referrals-export?format=pdf", "format"),
])
def test_formats_and_languages_not_offered_are_named(referred: Platform, url: str, expression: str) -> None:
    response = referred.client.get(url, headers=referred.headers("physician"))
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [expression]
    if expression == "format" and "docx" in url:
        assert "docx" in issue["diagnostics"]


def test_strangers_are_refused_as_for_a_missing_record(referred: Platform) -> None:
    assert _export(referred, "stranger", "physician", "format=pdf").status_code == 404
    assert _export(referred, "shared", "investigator", "format=pdf").status_code == 404
    assert _export(referred, "nobody", "ehr", "format=csv").status_code == 404
