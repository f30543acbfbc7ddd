"""`Patient/[id]/$everything` (FHIR R4 patient-operation-everything.html) on the Synthea
sample: the patient's compartment, exactly, plus what it references, under each kind of token,
with `_type`, `_since`, `start`/`end`, `_count` and paging; bad input answered with an
OperationOutcome."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.conftest import SHARED
from tests.privacy.conftest import Server
from tests.privacy.records import (DOCTOR, GUARDIAN, bearer, compartment, patient_ids, scan,  # noqa: F401
                                   synthea)

# AuditEvents join the compartment while the test reads it (each page is audited): they are
# checked apart, as members of the compartment.
TYPES = sorted({e["resource"]["resourceType"] for path in (SHARED / "synthea").glob("*.json")
                for e in orjson.loads(path.read_bytes())["entry"]} | {"Consent", "RelatedPerson"})


def pages(client: TestClient, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        response = client.get(next_url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["type"] == "searchset"
        entries += body.get("entry", [])
        next_url = next((link["url"].removeprefix("http://testserver")
                         for link in body["link"] if link["relation"] == "next"), None)
    return entries


def matched(entries: list[dict[str, Any]], mode: str = "match") -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries
            if e["search"]["mode"] == mode]


def referenced(client: TestClient, members: set[str]) -> set[str]:
    """What the members reference outside any patient compartment and exists."""
    by_type = {t: {r["id"] for r in scan(client, t)} for t in ("Practitioner", "Organization")}
    refs = set()
    for reference in members:
        kind, _, id = reference.partition("/")
        resource = client.get(f"/fhir/{reference}").json()
        refs |= {r for r in _references(resource) if r.partition("/")[2] in by_type.get(r.partition("/")[0], ())}
    return refs


def _references(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {v for k, v in value.items() if k == "reference" and isinstance(v, str)} | {
            r for k, v in value.items() if k != "contained" for r in _references(v)}
    if isinstance(value, list):
        return {r for v in value for r in _references(v)}
    return set()


def tokens(client: TestClient) -> dict[str, tuple[str, dict[str, str]]]:
    first, second = sorted(patient_ids(client))[:2]
    return {
        "patient": (first, bearer(client, "patient/*.rs", patient=first, fhir_user=f"Patient/{first}")),
        "representative": (second, bearer(client, "patient/*.rs", patient=second, fhir_user=GUARDIAN)),
        "practitioner": (first, bearer(client, "user/*.rs", fhir_user=DOCTOR)),
    }


@pytest.mark.parametrize("who", ["patient", "representative", "practitioner"])
def test_everything_is_the_compartment_and_what_it_references(synthea: TestClient, who: str) -> None:
    patient, headers = tokens(synthea)[who]
    entries = pages(synthea, f"/fhir/Patient/{patient}/$everything?_count=37", headers)
    members = [m for m in matched(entries) if not m.startswith("AuditEvent/")]
    assert len(members) == len(set(members))  # no resource twice across pages
    expected = compartment(synthea, patient, TYPES)
    assert len(expected) > 40
    assert set(members) == expected
    assert set(matched(entries, "include")) == referenced(synthea, expected)
    audit = {m for m in matched(entries) if m.startswith("AuditEvent/")}
    assert audit <= compartment(synthea, patient, ["AuditEvent"])


def test_nobody_else_reaches_the_record(synthea: TestClient) -> None:
    first, second = sorted(patient_ids(synthea))[:2]
    callers = tokens(synthea)
    # The patient asking for another's record, the representative for someone they do not
    # represent, the physician for a patient who did not consent: as if it did not exist.
    for who, other in (("patient", second), ("representative", first), ("practitioner", second)):
        response = synthea.get(f"/fhir/Patient/{other}/$everything", headers=callers[who][1])
        assert response.status_code == 404, (who, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
        # The same answer as for an id nobody has.
        assert response.json()["issue"] == [{**issue, "diagnostics": f"Patient/{other} is not known."}
                                            for issue in _unknown(synthea)["issue"]]


def _unknown(client: TestClient) -> dict[str, Any]:
    unknown = client.get("/fhir/Patient/nobody/$everything")
    assert unknown.status_code == 404
    assert unknown.json()["issue"][0]["code"] == "not-found"
    return unknown.json()  # type: ignore[no-any-return]


def test_type_since_and_dates_filter(synthea: TestClient) -> None:
    # The patient with the most Conditions, so that the pages of 5 cross within the type and
    # from one type to the next. Not "the first id": ids are the server's, new each run, and
    # one of the sample's patients has no Condition at all.
    conditions = Counter(r["subject"]["reference"] for r in scan(synthea, "Condition"))
    patient = min(conditions, key=lambda p: (-conditions[p], p)).removeprefix("Patient/")
    assert conditions[f"Patient/{patient}"] > 5
    base = f"/fhir/Patient/{patient}/$everything"
    only = pages(synthea, f"{base}?_type=Condition,Encounter&_count=5", {})
    assert {m.partition("/")[0] for m in matched(only)} == {"Condition", "Encounter"}
    assert set(matched(only)) == compartment(synthea, patient, ["Condition", "Encounter"])
    assert matched(pages(synthea, f"{base}?_since=2999-01-01", {})) == []
    observations = [r for r in scan(synthea, "Observation")
                    if r["subject"]["reference"] == f"Patient/{patient}"]
    years = sorted(o["effectiveDateTime"][:4] for o in observations)
    year = years[len(years) // 2]
    window = pages(synthea, f"{base}?_type=Observation&start={year}-01-01&end={year}-12-31", {})
    assert set(matched(window)) == {f"Observation/{o['id']}" for o in observations
                                    if o["effectiveDateTime"][:4] == year}
    # A type without a clinical date (the Patient) is returned whatever the range.
    assert f"Patient/{patient}" in matched(pages(synthea, f"{base}?start=1000&end=1001", {}))


@pytest.mark.parametrize("query, expression", [
    ("start=2020-02-01&end=2020-01-31", "start"),
    ("start=yesterday", "start"),
    ("_count=0", "_count"),
    ("_type=Practitioner", "_type"),
    ("_type=Nothing", "_type"),
    ("_cursor=Banana:x", "_cursor"),
    ("foo=bar", "foo"),
])
def test_bad_input_is_400(synthea: TestClient, query: str, expression: str | None) -> None:
    patient = sorted(patient_ids(synthea))[0]
    response = synthea.get(f"/fhir/Patient/{patient}/$everything?{query}")
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    if expression:
        assert outcome["issue"][0]["expression"] == [expression]


def test_the_capability_statement_declares_the_operations(synthea: TestClient) -> None:
    resources = {r["type"]: r for r in synthea.get("/fhir/metadata").json()["rest"][0]["resource"]}
    assert {"everything", "record-export"} <= {o["name"] for o in resources["Patient"]["operation"]}
    assert "referrals-export" in {o["name"] for o in resources["Practitioner"]["operation"]}
    definition = synthea.get("/fhir/OperationDefinition/Patient-everything").json()
    assert definition["base"] == "http://hl7.org/fhir/OperationDefinition/Patient-everything"


def test_an_erased_patient_has_no_record(server: Server) -> None:
    """After `$erase` (docs/backup-and-erasure.md) the record is gone: `$everything` and the
    exports answer as for a patient who never existed, and the other patient is untouched."""
    assert server.erase("a").status_code == 200
    for url in ("/fhir/Patient/a/$everything", "/fhir/Patient/a/$record-export?format=csv"):
        response = server.client.get(url, headers=server.headers("ehr"))
        assert response.status_code == 404, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    kept = server.client.get("/fhir/Patient/b/$everything", headers=server.headers("ehr")).json()
    assert {e["resource"]["id"] for e in kept["entry"] if e["resource"]["resourceType"] != "AuditEvent"} == {
        "b", "b-obs0", "b-obs1", "b-obs2", "b-cond"}
