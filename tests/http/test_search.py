"""Clinical searches over HTTP on data written through the API.

FHIR R4 search.html: #string (accent- and case-insensitive starts-with, `:exact`, `:contains`),
#token (`system|code`, `:text`, `:not`), #date and #prefix (precision ranges, eq/ne/gt/lt/ge/le/sa/eb),
#reference, #chaining, #has, #sort, #missing, `_lastUpdated` (#all), `_id`; patient.html,
observation.html and condition.html search parameters; http.html#search (a search reflects every
committed write at once, as history does: http.html#history).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from tests.builders import (
    ICD10,
    INS_NIR,
    LOINC,
    condition,
    identified_patient,
    lab_observation,
    organization,
    patient,
)
from tests.http.helpers import create, send

HEMOGLOBIN, WEIGHT, HEART_RATE = "718-7", "29463-7", "8867-4"


# -- helpers ---------------------------------------------------------------------------


def found(client: TestClient, url: str, **params: str) -> list[str]:
    """Ids of the matches of a search; the search must be fully understood (no outcome entry)."""
    response = client.get(url, params=params or None)
    assert response.status_code == 200, response.text
    bundle = response.json()
    entries = bundle.get("entry", [])
    outcomes = [e["resource"] for e in entries if e["search"]["mode"] == "outcome"]
    assert not outcomes, outcomes
    return [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"]


def new_id(client: TestClient, resource: dict[str, Any]) -> str:
    response = create(client, resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def put(client: TestClient, resource: dict[str, Any]) -> str:
    url = f"/fhir/{resource['resourceType']}/{resource['id']}"
    response = send(client, "PUT", url, resource)
    assert response.status_code in (200, 201), response.text
    return str(resource["id"])


# -- Patient ---------------------------------------------------------------------------


def test_patient_name_ignores_accents_and_case(client: TestClient) -> None:
    """search.html#string: starts-with, case- and accent-insensitive, on any part of the name."""
    helene = new_id(client, patient(family="Lefèvre", given="Hélène"))
    new_id(client, patient(family="Martin", given="Helmut"))
    new_id(client, patient(family="Durand", given="Anne"))
    assert found(client, "/fhir/Patient", name="helene") == [helene]
    assert found(client, "/fhir/Patient", name="HÉLÈNE") == [helene]
    assert found(client, "/fhir/Patient", name="lefevre") == [helene]
    assert found(client, "/fhir/Patient", family="LEF") == [helene]
    assert len(found(client, "/fhir/Patient", name="hel")) == 2
    assert found(client, "/fhir/Patient", name="elene") == []  # starts-with, not contains
    # Names are protected (docs/blind-indexes.md): their digests cannot answer :contains.
    refused = client.get("/fhir/Patient", params={"name:contains": "elene"})
    assert refused.status_code == 400 and refused.json()["issue"][0]["expression"] == ["name"]
    assert found(client, "/fhir/Patient", **{"family:exact": "Lefèvre"}) == [helene]
    assert found(client, "/fhir/Patient", **{"family:exact": "lefevre"}) == []
    assert len(found(client, "/fhir/Patient", given="anne,hélène")) == 2  # comma is OR


def test_patient_by_ins_nir_identifier(client: TestClient) -> None:
    """search.html#token: `identifier=system|value`, `|value`-less forms and another system."""
    nir = "262047512345667"
    wanted = new_id(client, identified_patient(nir))
    new_id(client, identified_patient("185067598765464"))
    new_id(client, patient(identifier=[{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": nir}]))  # RPPS, not INS
    assert found(client, "/fhir/Patient", identifier=f"{INS_NIR}|{nir}") == [wanted]
    assert len(found(client, "/fhir/Patient", identifier=nir)) == 2  # any system
    assert found(client, "/fhir/Patient", identifier=f"{INS_NIR}|0000000000000") == []
    assert len(found(client, "/fhir/Patient", identifier=f"{INS_NIR}|")) == 2  # the system alone
    assert found(client, "/fhir/Patient", identifier=f"|{nir}") == []  # value without any system


def test_patient_birthdate_prefixes(client: TestClient) -> None:
    """search.html#date, #prefix: a date matches when its range meets the prefix's condition."""
    born = {
        year: new_id(client, patient(given=f"N{year}", birthDate=date))
        for year, date in (("1950", "1950-06-15"), ("1962", "1962-04-17"), ("1962b", "1962-12-31"),
                           ("1980", "1980"), ("2001", "2001-01-01"))
    }

    def q(value: str) -> list[str]:
        return sorted(found(client, "/fhir/Patient", birthdate=value))

    assert q("1962") == sorted([born["1962"], born["1962b"]])
    assert q("1962-04-17") == [born["1962"]]
    assert q("eq1962-04") == [born["1962"]]
    assert q("lt1962") == [born["1950"]]
    assert q("le1962-04-17") == sorted([born["1950"], born["1962"]])
    assert q("gt1962-04-17") == sorted([born["1962b"], born["1980"], born["2001"]])
    assert q("ge2000") == [born["2001"]]
    # "1980" is the whole year: it neither is nor excludes 1980-06-01 (search.html#date).
    assert q("1980-06-01") == []
    assert q("ne1980") == sorted(set(born.values()) - {born["1980"]})
    assert q("sa1970") == sorted([born["1980"], born["2001"]])
    assert q("eb1962") == [born["1950"]]
    both = client.get("/fhir/Patient?birthdate=ge1960&birthdate=lt1970").json()  # repeated: AND
    assert sorted(e["resource"]["id"] for e in both["entry"]) == sorted([born["1962"], born["1962b"]])


def test_patient_gender(client: TestClient) -> None:
    """search.html#token: a code search, `:not`, and comma OR."""
    woman = new_id(client, patient(gender="female"))
    man = new_id(client, patient(gender="male"))
    unknown = new_id(client, patient(gender="unknown"))
    no_gender = new_id(client, {"resourceType": "Patient", "name": [{"family": "Sansgenre"}]})
    assert found(client, "/fhir/Patient", gender="female") == [woman]
    assert sorted(found(client, "/fhir/Patient", gender="male,female")) == sorted([woman, man])
    # :not also matches resources without any value (search.html#token).
    assert sorted(found(client, "/fhir/Patient", **{"gender:not": "female"})) == sorted([man, unknown, no_gender])
    assert found(client, "/fhir/Patient", gender="http://example.org/other|male") == []


# -- Observation and Condition -------------------------------------------------------------------


@pytest.fixture
def labs(client: TestClient) -> dict[str, str]:
    """Two patients' hemoglobin, weight and heart-rate Observations over 2024, with chosen ids."""
    put(client, patient(id="helene", family="Lefèvre", given="Hélène"))
    put(client, patient(id="paul", family="Martin", given="Paul", gender="male"))
    rows = [
        ("hb-jan", "helene", HEMOGLOBIN, "2024-01-10T08:00:00+01:00", 11.2, "g/dL"),
        ("hb-mar", "helene", HEMOGLOBIN, "2024-03-12T08:00:00+01:00", 12.8, "g/dL"),
        ("hb-jun", "helene", HEMOGLOBIN, "2024-06-05", 13.1, "g/dL"),
        ("wt-mar", "helene", WEIGHT, "2024-03-12T08:05:00+01:00", 61.0, "kg"),
        ("hr-mar", "helene", HEART_RATE, "2024-03-12T08:10:00+01:00", 72, "/min"),
        ("hb-paul", "paul", HEMOGLOBIN, "2024-03-20", 15.0, "g/dL"),
    ]
    for oid, who, code, when, value, unit in rows:
        put(client, lab_observation(f"Patient/{who}", code, when, value, unit, id=oid))
    return {row[0]: row[0] for row in rows}


def test_observation_by_patient_code_and_date_range(client: TestClient, labs: dict[str, str]) -> None:
    """observation.html#search: patient + code + a date range (two `date` parameters AND)."""
    query = urlencode([("patient", "helene"), ("code", f"{LOINC}|{HEMOGLOBIN}"),
                       ("date", "ge2024-02-01"), ("date", "lt2024-07-01")])
    bundle = client.get(f"/fhir/Observation?{query}").json()
    assert sorted(e["resource"]["id"] for e in bundle["entry"]) == ["hb-jun", "hb-mar"]
    assert sorted(found(client, "/fhir/Observation", patient="Patient/helene", code=HEMOGLOBIN)) == [
        "hb-jan", "hb-jun", "hb-mar"]
    assert sorted(found(client, "/fhir/Observation", subject="Patient/paul")) == ["hb-paul"]
    assert found(client, "/fhir/Observation", patient="helene", date="2024-03-12", code=WEIGHT) == ["wt-mar"]
    # A dateTime with a time zone falls inside the day it names in that zone.
    assert sorted(found(client, "/fhir/Observation", patient="helene", date="2024-03-12")) == [
        "hb-mar", "hr-mar", "wt-mar"]
    assert found(client, "/fhir/Observation", patient="helene", date="2024-03-13") == []
    assert sorted(found(client, "/fhir/Observation", code=f"{LOINC}|{HEMOGLOBIN}",
                        **{"value-quantity": "gt13"})) == ["hb-jun", "hb-paul"]
    assert found(client, "/fhir/Observation", code=f"http://snomed.info/sct|{HEMOGLOBIN}") == []


def test_observation_by_patient_ins_and_code_text(client: TestClient) -> None:
    """search.html#reference `:identifier` (INS-NIR on the reference), #token `:text` (display, text)."""
    put(client, identified_patient("262047512345667", id="ins"))
    by_ins = lab_observation("Patient/ins", HEMOGLOBIN, "2024-01-01", 12.0, "g/dL", id="by-ins")
    by_ins["subject"]["identifier"] = {"system": INS_NIR, "value": "262047512345667"}
    by_ins["code"] = {"coding": [{"system": LOINC, "code": HEMOGLOBIN,
                                  "display": "Hemoglobin [Mass/volume] in Blood"}], "text": "Hémoglobine"}
    put(client, by_ins)
    put(client, lab_observation("Patient/ins", WEIGHT, "2024-01-01", 60.0, "kg", id="plain"))
    assert found(client, "/fhir/Observation", **{"subject:identifier": f"{INS_NIR}|262047512345667"}) == ["by-ins"]
    assert found(client, "/fhir/Observation", **{"subject:identifier": f"{INS_NIR}|1111111111111"}) == []
    assert found(client, "/fhir/Observation", **{"code:text": "hemoglobine"}) == ["by-ins"]
    assert found(client, "/fhir/Observation", **{"code:text": "HEMOGLOBIN [mass"}) == ["by-ins"]
    assert found(client, "/fhir/Observation", **{"code:text": "weight"}) == []


def test_condition_by_code(client: TestClient) -> None:
    """condition.html#search: `code` with and without the ICD-10 system; `patient`; clinical-status."""
    put(client, patient(id="c1"))
    put(client, patient(id="c2"))
    breast = new_id(client, condition("Patient/c1", "C50.9"))
    lung = new_id(client, condition("Patient/c2", "C34.1"))
    resolved = new_id(client, condition("Patient/c2", "C50.9", clinicalStatus={"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]}))
    assert sorted(found(client, "/fhir/Condition", code=f"{ICD10}|C50.9")) == sorted([breast, resolved])
    assert found(client, "/fhir/Condition", code="C34.1") == [lung]
    assert found(client, "/fhir/Condition", code=f"{ICD10}|C50.9", patient="c2") == [resolved]
    assert found(client, "/fhir/Condition", code="C50.9", **{"clinical-status": "active"}) == [breast]
    assert found(client, "/fhir/Condition", code="C50") == []  # tokens match whole codes


# -- chaining, reverse chaining, sort, missing, _lastUpdated --------------------------------------


def test_chained_subject_patient_name(client: TestClient, labs: dict[str, str]) -> None:
    """search.html#chaining: `subject:Patient.name=` selects Observations by their patient's name."""
    mine = found(client, "/fhir/Observation", **{"subject:Patient.name": "helene"})
    assert sorted(mine) == ["hb-jan", "hb-jun", "hb-mar", "hr-mar", "wt-mar"]
    assert found(client, "/fhir/Observation", **{"subject:Patient.name": "paul"}) == ["hb-paul"]
    assert found(client, "/fhir/Observation", **{"patient.gender": "male"}) == ["hb-paul"]
    assert found(client, "/fhir/Observation", **{"subject:Patient.name": "nobody"}) == []
    both = found(client, "/fhir/Observation", code=HEMOGLOBIN, **{"subject:Patient.family": "martin,lefevre"})
    assert sorted(both) == ["hb-jan", "hb-jun", "hb-mar", "hb-paul"]


def test_chain_through_two_references(client: TestClient) -> None:
    """search.html#chaining: chains may go several references deep."""
    chu = new_id(client, organization("CHU de Bordeaux"))
    other = new_id(client, organization("Clinique du Parc"))
    put(client, patient(id="a", managingOrganization={"reference": f"Organization/{chu}"}))
    put(client, patient(id="b", managingOrganization={"reference": f"Organization/{other}"}))
    put(client, lab_observation("Patient/a", WEIGHT, "2024-01-01", 60, "kg", id="wa"))
    put(client, lab_observation("Patient/b", WEIGHT, "2024-01-01", 70, "kg", id="wb"))
    assert found(client, "/fhir/Observation", **{"subject:Patient.organization.name": "chu"}) == ["wa"]


def test_has_observation_code(client: TestClient, labs: dict[str, str]) -> None:
    """search.html#has: Patients having an Observation with a given code."""
    with_weight = found(client, "/fhir/Patient", **{"_has:Observation:patient:code": f"{LOINC}|{WEIGHT}"})
    assert with_weight == ["helene"]
    with_hb = found(client, "/fhir/Patient", **{"_has:Observation:patient:code": HEMOGLOBIN})
    assert sorted(with_hb) == ["helene", "paul"]
    assert found(client, "/fhir/Patient", **{"_has:Observation:subject:code": "nope"}) == []
    # Helene's weight (61 kg) and heart rate (72 /min) are not hemoglobin values of 14 g/dL or more.
    high = found(client, "/fhir/Patient", **{"_has:Observation:patient:value-quantity": "ge14|http://unitsofmeasure.org|g/dL"})
    assert high == ["paul"]
    composite = found(client, "/fhir/Patient", **{"_has:Observation:patient:code-value-quantity": f"{HEMOGLOBIN}$ge13"})
    assert sorted(composite) == ["helene", "paul"]
    assert found(client, "/fhir/Patient", **{"_has:Observation:patient:code-value-quantity": f"{HEMOGLOBIN}$ge14"}) == ["paul"]


def test_sort_by_date_descending_then_id(client: TestClient, labs: dict[str, str]) -> None:
    """search.html#sort: `_sort=-date,_id`; equal dates are ordered by id."""
    put(client, lab_observation("Patient/helene", WEIGHT, "2024-06-05", 60.5, "kg", id="wt-jun"))
    order = found(client, "/fhir/Observation", patient="helene", _sort="-date,_id")
    assert order == ["hb-jun", "wt-jun", "hr-mar", "wt-mar", "hb-mar", "hb-jan"]
    ascending = found(client, "/fhir/Observation", patient="helene", _sort="date,-_id")
    assert ascending == ["hb-jan", "hb-mar", "wt-mar", "hr-mar", "wt-jun", "hb-jun"]
    assert found(client, "/fhir/Patient", _sort="family") == ["helene", "paul"]  # Lefèvre < Martin
    assert found(client, "/fhir/Patient", _sort="-family") == ["paul", "helene"]


def test_missing_modifier(client: TestClient) -> None:
    """search.html#missing: `:missing=true` has no value for the parameter, `false` has one."""
    dated = new_id(client, patient(birthDate="1970-01-01"))
    undated = new_id(client, {"resourceType": "Patient", "name": [{"family": "Inconnu"}]})
    assert found(client, "/fhir/Patient", **{"birthdate:missing": "true"}) == [undated]
    assert found(client, "/fhir/Patient", **{"birthdate:missing": "false"}) == [dated]
    put(client, lab_observation(f"Patient/{dated}", WEIGHT, "2024-01-01", 80, "kg", id="no-enc"))
    put(client, lab_observation(f"Patient/{dated}", WEIGHT, "2024-01-02", 81, "kg", id="enc",
                                encounter={"reference": "Encounter/e1"}))
    assert found(client, "/fhir/Observation", **{"encounter:missing": "true"}) == ["no-enc"]
    assert found(client, "/fhir/Observation", **{"encounter:missing": "false"}) == ["enc"]


def test_last_updated(client: TestClient) -> None:
    """search.html#all: `_lastUpdated` compares meta.lastUpdated, to the precision given."""
    first = create(client, patient(given="Avant")).json()
    second = create(client, patient(given="Apres")).json()
    cut = first["meta"]["lastUpdated"]
    assert found(client, "/fhir/Patient", _lastUpdated=f"gt{cut}") == [second["id"]]
    assert sorted(found(client, "/fhir/Patient", _lastUpdated=f"ge{cut}")) == sorted([first["id"], second["id"]])
    assert found(client, "/fhir/Patient", _lastUpdated=f"lt{second['meta']['lastUpdated']}") == [first["id"]]
    assert found(client, "/fhir/Patient", _lastUpdated="lt2000-01-01") == []
    assert len(found(client, "/fhir/Patient", _lastUpdated=f"ge{cut[:10]}")) == 2
    # Updating a resource moves it past the cut.
    send(client, "PUT", f"/fhir/Patient/{first['id']}", {**first, "gender": "other"})
    after = second["meta"]["lastUpdated"]
    assert found(client, "/fhir/Patient", _lastUpdated=f"gt{after}") == [first["id"]]


def test_id_search(client: TestClient) -> None:
    """search.html#all: `_id` with one id and a comma-separated list."""
    a, b = new_id(client, patient()), new_id(client, patient())
    new_id(client, patient())
    assert found(client, "/fhir/Patient", _id=a) == [a]
    assert sorted(found(client, "/fhir/Patient", _id=f"{a},{b}")) == sorted([a, b])
    assert found(client, "/fhir/Patient", _id="no-such-id") == []


# -- search reflects writes at once --------------------------------------------------------------


def test_search_reflects_update_and_delete_immediately(client: TestClient) -> None:
    """http.html#update, #delete, #history: search and history agree with each write at once."""
    put(client, identified_patient("262047512345667", id="w1", family="Martin", given="Hélène"))
    put(client, lab_observation("Patient/w1", WEIGHT, "2024-01-01", 62, "kg", id="w1-wt"))
    assert found(client, "/fhir/Patient", family="martin") == ["w1"]

    put(client, identified_patient("262047512345667", id="w1", family="Bernard", given="Hélène"))
    assert found(client, "/fhir/Patient", family="martin") == []  # old index entries are gone
    assert found(client, "/fhir/Patient", family="bernard") == ["w1"]
    assert found(client, "/fhir/Observation", **{"subject:Patient.family": "bernard"}) == ["w1-wt"]
    assert found(client, "/fhir/Patient", identifier=f"{INS_NIR}|262047512345667") == ["w1"]
    history = client.get("/fhir/Patient/w1/_history").json()
    assert [e["resource"]["name"][0]["family"] for e in history["entry"]] == ["Bernard", "Martin"]

    assert client.delete("/fhir/Patient/w1").status_code == 204
    assert found(client, "/fhir/Patient", family="bernard") == []
    assert found(client, "/fhir/Patient", _id="w1") == []
    assert found(client, "/fhir/Patient", identifier=f"{INS_NIR}|262047512345667") == []
    assert found(client, "/fhir?_id=w1") == []
    # A deleted target no longer satisfies a chain; the Observation itself is still there.
    assert found(client, "/fhir/Observation", **{"subject:Patient.family": "bernard"}) == []
    assert found(client, "/fhir/Observation", subject="Patient/w1") == ["w1-wt"]
    put(client, patient(id="w2"))
    put(client, lab_observation("Patient/w2", HEART_RATE, "2024-01-01", 70, "/min", id="w2-hr"))
    assert found(client, "/fhir/Patient", **{"_has:Observation:patient:code": HEART_RATE}) == ["w2"]
    assert client.delete("/fhir/Observation/w2-hr").status_code == 204
    assert found(client, "/fhir/Patient", **{"_has:Observation:patient:code": HEART_RATE}) == []
    revincluded = client.get("/fhir/Patient", params={"_id": "w2", "_revinclude": "Observation:patient"}).json()
    assert [e["fullUrl"] for e in revincluded["entry"]] == ["http://testserver/fhir/Patient/w2"]
    assert client.get("/fhir/Patient?_id=w1&_total=accurate").json()["total"] == 0
    history = client.get("/fhir/Patient/w1/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "PUT"]

    put(client, identified_patient("262047512345667", id="w1", family="Martin", given="Hélène"))  # re-created
    assert found(client, "/fhir/Patient", family="martin") == ["w1"]
    assert found(client, "/fhir/Patient", family="bernard") == []
