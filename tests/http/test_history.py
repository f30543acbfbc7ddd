"""History at instance, type and system level (FHIR R4 http.html#history)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from fhir_server import clock
from tests.builders import patient
from tests.http.helpers import create, issue, send


def test_instance_history_newest_first_with_deletions(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/h1", patient(id="h1"))
    send(client, "PUT", "/fhir/Patient/h1", patient(id="h1", gender="male"))
    client.delete("/fhir/Patient/h1")
    bundle = client.get("/fhir/Patient/h1/_history").json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "history"
    entries = bundle["entry"]
    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "PUT"]
    assert "resource" not in entries[0]
    assert entries[0]["response"]["status"] == "204 No Content"
    assert entries[1]["resource"]["gender"] == "male"
    assert entries[2]["response"]["etag"] == 'W/"1"'
    assert entries[1]["fullUrl"] == "http://testserver/fhir/Patient/h1"
    assert entries[1]["request"]["url"] == "Patient/h1"


def test_type_and_system_history(client: TestClient) -> None:
    create(client, patient())
    create(client, {"resourceType": "Organization", "name": "CHU"})
    type_bundle = client.get("/fhir/Patient/_history").json()
    assert {e["resource"]["resourceType"] for e in type_bundle["entry"]} == {"Patient"}
    assert type_bundle["entry"][0]["request"] == {"method": "POST", "url": "Patient"}
    system = client.get("/fhir/_history").json()
    assert [e["resource"]["resourceType"] for e in system["entry"]] == ["Organization", "Patient"]


def test_history_paging_is_stable_under_writes(client: TestClient) -> None:
    for n in range(5):
        send(client, "PUT", f"/fhir/Patient/p{n}", patient(id=f"p{n}"))
    first = client.get("/fhir/Patient/_history?_count=2").json()
    assert [e["resource"]["id"] for e in first["entry"]] == ["p4", "p3"]
    next_url = {link["relation"]: link["url"] for link in first["link"]}["next"]
    send(client, "PUT", "/fhir/Patient/p9", patient(id="p9"))  # a write between pages
    second = client.get(next_url.removeprefix("http://testserver")).json()
    assert [e["resource"]["id"] for e in second["entry"]] == ["p2", "p1"]
    third_url = {link["relation"]: link["url"] for link in second["link"]}["next"]
    third = client.get(third_url.removeprefix("http://testserver")).json()
    assert [e["resource"]["id"] for e in third["entry"]] == ["p0"]
    assert "next" not in {link["relation"] for link in third["link"]}


def test_history_since(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/old", patient(id="old"))
    time.sleep(0.01)
    cut = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.01)
    send(client, "PUT", "/fhir/Patient/new", patient(id="new"))
    # A minute later: MongoDB's `_since` lists only settled versions (docs/storage.md).
    with clock.frozen(clock.now() + timedelta(minutes=1)):
        bundle = client.get("/fhir/Patient/_history", params={"_since": cut}).json()
        assert [e["resource"]["id"] for e in bundle["entry"]] == ["new"]
        offset = client.get("/fhir/_history", params={"_since": "2000-01-01T01:00:00+01:00"}).json()
        assert len(offset["entry"]) == 2


def test_history_since_a_leap_second(client: TestClient) -> None:
    # R4's instant regex allows second 60: read as the last microsecond of its minute.
    with clock.frozen(datetime(2017, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)):
        send(client, "PUT", "/fhir/Patient/after", patient(id="after"))
    with clock.frozen(datetime(2017, 1, 1, 0, 1, tzinfo=UTC)):
        for since in ["2016-12-31T23:59:60Z", "2016-12-31T23:59:60.5Z", "2017-01-01T00:59:60+01:00"]:
            answer = client.get("/fhir/Patient/_history", params={"_since": since})
            assert answer.status_code == 200, answer.text
            assert [e["resource"]["id"] for e in answer.json()["entry"]] == ["after"]
        assert "entry" not in client.get("/fhir/_history", params={"_since": "2017-01-01T00:00:60Z"}).json()
    assert client.get("/fhir/_history", params={"_since": "2016-12-31T23:59:61Z"}).status_code == 400


def test_history_bad_parameters(client: TestClient) -> None:
    bad = client.get("/fhir/_history", params={"_since": "yesterday"})
    assert bad.status_code == 400
    assert issue(bad)["expression"] == ["_since"]
    assert client.get("/fhir/_history", params={"_count": "-1"}).status_code == 400
    assert client.get("/fhir/Patient/none/_history").status_code == 404
