"""`_summary` / `_elements` subsetting (FHIR R4 search.html#summary, #elements) and the
shipped element table, regenerated from the official StructureDefinitions."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import orjson

from fhir_server.model.summary import select_elements, summarize
from tests.conftest import SHARED


def summary_table() -> dict[str, dict[str, list[str]]]:
    """type -> {"summary", "mandatory", "choices"}: top-level element names, from R4 profiles."""
    bundle = orjson.loads((SHARED / "fhir-r4" / "profiles-resources.json").read_bytes())
    table: dict[str, dict[str, list[str]]] = {}
    for entry in bundle["entry"]:
        sd = entry["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        if sd.get("abstract"):
            continue
        summary, mandatory, choices = [], [], []
        for element in sd["snapshot"]["element"]:
            parts = element["path"].split(".")
            if len(parts) != 2 or parts[1] in ("id", "meta"):
                continue
            if parts[1].endswith("[x]"):
                choices.append(parts[1])
            if element.get("isSummary"):
                summary.append(parts[1])
            if element.get("min", 0) > 0:
                mandatory.append(parts[1])
        table[sd["type"]] = {"summary": summary, "mandatory": mandatory, "choices": choices}
    return table


def test_shipped_table_matches_the_definitions() -> None:
    shipped = json.loads(files("fhir_server.model").joinpath("data/summary-elements.json").read_text())
    assert shipped == summary_table()
    assert len(shipped) == 146


PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p", "meta": {"versionId": "1"},
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
    "name": [{"family": "Dupont"}], "gender": "female", "photo": [{"contentType": "image/png"}],
    "deceasedBoolean": False, "_gender": {"extension": []},
}


def test_summary_true_keeps_summary_elements_only() -> None:
    out = summarize(PATIENT, "true")
    assert set(out) == {"resourceType", "id", "meta", "name", "gender", "deceasedBoolean", "_gender"}
    assert out["meta"]["tag"][-1]["code"] == "SUBSETTED"


def test_summary_text_and_data() -> None:
    assert set(summarize(PATIENT, "text")) == {"resourceType", "id", "meta", "text"}
    data = summarize(PATIENT, "data")
    assert "text" not in data and "photo" in data
    assert summarize(PATIENT, "false") is PATIENT


def test_summary_text_keeps_mandatory_elements() -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "valueString": "y", "text": {"status": "empty", "div": "<div/>"}}
    assert set(summarize(observation, "text")) == {"resourceType", "meta", "text", "status", "code"}


def test_elements_keeps_listed_and_mandatory() -> None:
    out = select_elements(PATIENT, ("name", "Patient.birthDate"))
    assert set(out) == {"resourceType", "id", "meta", "name"}
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "valueQuantity": {"value": 1}, "issued": "2020-01-01T00:00:00Z"}
    assert set(select_elements(observation, ("value",))) == {"resourceType", "meta", "status",
                                                             "code", "valueQuantity"}


if __name__ == "__main__":
    target = files("fhir_server.model").joinpath("data/summary-elements.json")
    with open(str(target), "w") as out:
        json.dump(summary_table(), out, separators=(",", ":"), sort_keys=True)
