"""`POST Patient/[id]/$everything` with a Parameters body (FHIR R4 operations.html: an
operation that changes nothing may be invoked by GET or POST): the same answer as the GET for
every parameter, the same access, and bad input (unknown, wrongly typed or repeated
parameters, a body that is not a Parameters resource) a 400 OperationOutcome naming it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from tests.privacy.conftest import Server
from tests.privacy.records import patient_ids, scan, synthea  # noqa: F401
from tests.privacy.test_everything import matched, pages, tokens

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def post(client: TestClient, patient: str, body: Any, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(f"/fhir/Patient/{patient}/$everything", content=content,
                       headers={**FHIR_JSON, **(headers or {})})


def parameters(*pairs: tuple[str, str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters",
            "parameter": [{"name": name, value_type: value} for name, value_type, value in pairs]}


def post_pages(client: TestClient, patient: str, body: dict[str, Any],
               headers: dict[str, str]) -> list[dict[str, Any]]:
    """The first page by POST, the rest by the `next` links (GET, as the Bundle gives them)."""
    first = post(client, patient, body, headers)
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["resourceType"] == "Bundle" and page["type"] == "searchset"
    following = next((link["url"].removeprefix("http://testserver")
                      for link in page["link"] if link["relation"] == "next"), None)
    return page.get("entry", []) + (pages(client, following, headers) if following else [])


def _record(entries: list[dict[str, Any]]) -> tuple[list[str], set[str]]:
    """The members in order (AuditEvents left out: each request adds its own) and the includes."""
    return ([m for m in matched(entries) if not m.startswith("AuditEvent/")],
            set(matched(entries, "include")))


def _busiest(client: TestClient) -> tuple[str, str]:
    """The patient with the most Conditions, and the middle year of their Observations."""
    conditions = Counter(r["subject"]["reference"] for r in scan(client, "Condition"))
    patient = min(conditions, key=lambda p: (-conditions[p], p)).removeprefix("Patient/")
    years = sorted(o["effectiveDateTime"][:4] for o in scan(client, "Observation")
                   if o["subject"]["reference"] == f"Patient/{patient}")
    return patient, years[len(years) // 2]


def test_post_answers_as_get_for_every_parameter(synthea: TestClient) -> None:
    patient, year = _busiest(synthea)
    cases = [
        ("", parameters()),
        ("_type=Condition,Encounter&_count=5",
         parameters(("_type", "valueCode", "Condition"), ("_type", "valueCode", "Encounter"),
                    ("_count", "valueInteger", 5))),
        ("_type=Condition,Encounter&_count=5",
         parameters(("_type", "valueCode", "Condition,Encounter"), ("_count", "valueInteger", 5))),
        (f"_type=Observation&start={year}-01-01&end={year}-12-31",
         parameters(("_type", "valueCode", "Observation"), ("start", "valueDate", f"{year}-01-01"),
                    ("end", "valueDate", f"{year}-12-31"))),
        (f"start={year}-03-01T00:00:00Z&_count=50",
         parameters(("start", "valueDateTime", f"{year}-03-01T00:00:00Z"), ("_count", "valueInteger", 50))),
        ("_since=2999-01-01T00:00:00Z", parameters(("_since", "valueInstant", "2999-01-01T00:00:00Z"))),
        ("_type=Condition", {"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueCode": "Condition", "extension": [
                {"url": "http://example.org/note", "valueString": "an extension is no value"}]}]}),
    ]
    for query, body in cases:
        by_get = _record(pages(synthea, f"/fhir/Patient/{patient}/$everything?{query}", {}))
        by_post = _record(post_pages(synthea, patient, body, {}))
        assert by_post == by_get, query
        assert by_get[0] or "_since" in query
    # The page size applies to the POST's own page as to the GET's.
    first = post(synthea, patient, parameters(("_count", "valueInteger", 3))).json()
    assert len(matched(first["entry"])) == 3


@pytest.mark.parametrize("who", ["patient", "representative", "practitioner"])
def test_post_has_the_access_of_get(synthea: TestClient, who: str) -> None:
    patient, headers = tokens(synthea)[who]
    body = parameters(("_count", "valueInteger", 40))
    assert _record(post_pages(synthea, patient, body, headers)) == _record(
        pages(synthea, f"/fhir/Patient/{patient}/$everything?_count=40", headers))
    first, second = sorted(patient_ids(synthea))[:2]
    other = {"patient": second, "representative": first, "practitioner": second}[who]  # out of reach
    response = post(synthea, other, body, headers)
    assert response.status_code == 404, (who, response.text)
    assert response.json()["resourceType"] == "OperationOutcome"


BAD: list[tuple[Any, str | None]] = [
    (parameters(("foo", "valueString", "bar")), "foo"),
    (parameters(("_cursor", "valueString", "Condition:")), "_cursor"),  # paging is by the next links
    (parameters(("start", "valueString", "2020-01-01")), "start"),
    (parameters(("end", "valueInteger", 2020)), "end"),
    (parameters(("_since", "valueDate", "2020-01-01")), "_since"),
    (parameters(("_type", "valueString", "Condition")), "_type"),
    (parameters(("_count", "valueString", "5")), "_count"),
    (parameters(("_count", "valueInteger", "5")), "_count"),
    (parameters(("_count", "valueInteger", True)), "_count"),
    (parameters(("start", "valueDate", 2020)), "start"),
    (parameters(("_count", "valueDecimal", 5.5)), "_count"),
    (parameters(("_count", "valueInteger", 0)), "_count"),
    (parameters(("start", "valueDate", "2020-01-01"), ("start", "valueDate", "2021-01-01")), "start"),
    (parameters(("_count", "valueInteger", 5), ("_count", "valueInteger", 6)), "_count"),
    (parameters(("_since", "valueInstant", "2020-01-01T00:00:00Z"),
                ("_since", "valueInstant", "2020-01-01T00:00:00Z")), "_since"),
    (parameters(("start", "valueDate", "2020-02-01"), ("end", "valueDate", "2020-01-31")), "start"),
    (parameters(("_type", "valueCode", "Practitioner")), "_type"),
    ({"resourceType": "Parameters", "parameter": [{"name": "start"}]}, "start"),
    ({"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDate": "2020-01-01", "valueDateTime": "2020-01-01"}]}, "start"),
    ({"resourceType": "Parameters", "parameter": [
        {"name": "_type", "resource": {"resourceType": "Patient"}}]}, "_type"),
    ({"resourceType": "Parameters", "parameter": [{"name": "_type", "part": []}]}, "_type"),
    ({"resourceType": "Parameters", "parameter": [{"valueCode": "Condition"}]}, None),
    ({"resourceType": "Parameters", "parameter": "start"}, None),
    ({"resourceType": "Patient", "id": "x"}, None),
    (b'{"resourceType": "Parameters", "parameter": [', None),
    (b"[]", None),
]


@pytest.mark.parametrize("body, expression", BAD)
def test_bad_parameters_are_400(synthea: TestClient, body: Any, expression: str | None) -> None:
    patient = sorted(patient_ids(synthea))[0]
    response = post(synthea, patient, body)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    if expression:
        assert outcome["issue"][0]["expression"] == [expression]


def test_a_single_valued_parameter_given_twice_in_the_query_is_400(synthea: TestClient) -> None:
    patient = sorted(patient_ids(synthea))[0]
    for query, name in (("start=2020&start=2021", "start"), ("_count=5&_count=6", "_count")):
        response = synthea.get(f"/fhir/Patient/{patient}/$everything?{query}")
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == [name]


def test_a_post_needs_a_fhir_json_body(synthea: TestClient) -> None:
    # R4 operations: the parameters of a POST are a Parameters resource (a form is for search).
    patient = sorted(patient_ids(synthea))[0]
    response = synthea.post(f"/fhir/Patient/{patient}/$everything", content=b"_count=5",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_post_is_audited_as_a_get(server: Server) -> None:
    """Each request's AuditEvents name the resources it gave the caller, in the patient's
    event; a POST's name what the GET's do."""
    headers = server.headers("patient-a")

    def naming_the_record() -> dict[str, list[str]]:
        response = server.client.get("/fhir/AuditEvent?entity=Observation/a-obs0&_count=500",
                                     headers=server.headers("ehr"))
        return {e["resource"]["id"]: sorted(x["what"]["reference"] for x in e["resource"]["entity"]
                                            if "what" in x) for e in response.json().get("entry", [])}

    def audited(call: Callable[[], Response]) -> list[list[str]]:
        before = naming_the_record()
        assert call().status_code == 200
        previous = None
        for _ in range(100):  # the events are recorded once the answer is sent: until it settles
            new = sorted(whats for id, whats in naming_the_record().items() if id not in before)
            if new and new == previous:
                return new
            previous = new
            time.sleep(0.2)
        raise AssertionError("no AuditEvent names the record")

    by_post = audited(lambda: post(server.client, "a", parameters(
        ("_type", "valueCode", "Observation"), ("_type", "valueCode", "Patient")), headers))
    by_get = audited(lambda: server.client.get("/fhir/Patient/a/$everything?_type=Observation,Patient",
                                               headers=headers))
    # The patient's event names the same resources. (A GET with a query string also gets the
    # auditors' event that records its query; a POST's parameters, in its body, are not
    # recorded, as for every POST.)
    assert [w for w in by_post if "Patient/a" in w] == [w for w in by_get if "Patient/a" in w]
    assert [w for w in by_get if "Patient/a" in w] == [
        ["Observation/a-obs0", "Observation/a-obs1", "Observation/a-obs2", "Patient/a"]]
