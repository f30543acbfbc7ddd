"""What a batch or transaction does with an entry that cannot run (FHIR R4 http.html#transaction).

An entry URL is read as the REST API reads a path: a path it does not serve, or a method it
does not take there, is answered 404 or 405 as REST answers it, never cut down to `Type/id`.
A transaction fails whole with the error of any entry, GET entries included, and leaves the
store as it was; a batch answers each entry on its own.
"""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from fhir_server.settings import Settings
from tests.builders import patient
from tests.http.bundle_helpers import entry, post_bundle, responses
from tests.http.helpers import issue, send
from tests.http.test_errors import _store_digest

HUGE = "9" * 5000


def _binary(data: str) -> dict[str, str]:
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


# (method, url, status REST answers for the same path)
ODD_URLS = [
    ("DELETE", "Patient/x/_history/1", "405"),
    ("DELETE", "Patient/x/$bogus", "405"),
    ("PUT", "Patient/x/$x", "405"),
    ("GET", "Patient/x/$bogus", "404"),
    ("GET", "Patient/x/_history/1/extra", "404"),
    ("POST", "Patient/x", "405"),
    ("DELETE", "Patient/x/_history", "405"),
    ("GET", "Patient/x/_history/%EF%BC%91", "404"),
]


@pytest.mark.parametrize(("method", "url", "status"), ODD_URLS)
def test_batch_entry_url_is_read_as_rest_reads_the_path(
    client: TestClient, settings: Settings, method: str, url: str, status: str,
) -> None:
    send(client, "PUT", "/fhir/Patient/x", patient(id="x"))
    before = _store_digest(settings)
    rest = send(client, method, f"/fhir/{url}", patient(id="x") if method in ("PUT", "POST") else None)
    assert str(rest.status_code) == status
    body = patient(id="x") | {"active": False} if method in ("PUT", "POST") else None
    response = post_bundle(client, "batch", [entry(method, url, body)])
    assert response.status_code == 200
    [answer] = responses(response)
    assert answer["status"].startswith(status), answer
    assert answer["outcome"]["resourceType"] == "OperationOutcome"
    assert _store_digest(settings) == before
    assert client.get("/fhir/Patient/x").json().get("active") is None


def test_batch_entry_compartment_search_is_a_search(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/x", patient(id="x"))
    response = post_bundle(client, "batch", [entry("GET", "Patient/x/Observation"),
                                             entry("GET", "_history")])
    compartment, system = response.json()["entry"]
    assert compartment["resource"]["type"] == "searchset"
    assert system["resource"]["type"] == "history"


@pytest.mark.parametrize(("method", "url", "status"), ODD_URLS)
def test_transaction_fails_whole_on_an_odd_entry_url(
    client: TestClient, settings: Settings, method: str, url: str, status: str,
) -> None:
    send(client, "PUT", "/fhir/Patient/x", patient(id="x"))
    before = _store_digest(settings)
    body = patient(id="x") if method in ("PUT", "POST") else None
    response = post_bundle(client, "transaction", [entry("POST", "Patient", patient()),
                                                   entry(method, url, body)])
    assert str(response.status_code) == status
    assert "Bundle.entry[1].request.url" in issue(response)["expression"] or \
        issue(response)["expression"] == ["Bundle.entry[1]"]
    assert _store_digest(settings) == before


@pytest.mark.parametrize(("url", "status"), [
    ("Patient/x/_history/99999999999999999999", 404),  # past SQLite's INTEGER
    ("Patient/x/_history/%EF%BC%91", 404),  # a fullwidth digit
    ("Patient?" + "&".join(f"name={i}" for i in range(150)), 400),  # past MAX_PARAMETERS
    (f"Patient/_history?_count={HUGE}", 400),
    ("Patient/_history?_since=9999-12-31T23:59:59-14:00", 400),
])
def test_transaction_with_a_failing_get_entry_stores_nothing(
    client: TestClient, settings: Settings, url: str, status: int,
) -> None:
    send(client, "PUT", "/fhir/Patient/x", patient(id="x"))
    before = _store_digest(settings)
    response = post_bundle(client, "transaction", [entry("POST", "Patient", patient()), entry("GET", url)])
    assert response.status_code == status, response.text
    assert issue(response)["expression"][0].startswith("Bundle.entry[1]")
    assert _store_digest(settings) == before


def test_transaction_with_a_huge_count_in_a_search_entry_does_not_fail(client: TestClient) -> None:
    """A search ignores a `_count` it cannot use, as REST does (with a warning)."""
    response = post_bundle(client, "transaction", [entry("GET", f"Patient?_count={HUGE}")])
    assert response.status_code == 200, response.text
    assert client.get(f"/fhir/Patient?_count={HUGE}").status_code == 200


@pytest.mark.parametrize(("bad", "status"), [
    (entry("GET", "http://elsewhere.example/fhir/Patient/x"), "400"),
    (entry("PATCH", "Patient/x", _binary("!!not base64")), "400"),
    (entry("PATCH", "Patient/x", _binary(base64.b64encode(b'[{"op":"add","op":"x"}]').decode())), "400"),
    (entry("PUT", "Patient/x", patient(id="x"), ifMatch=f'W/"{HUGE}"'), "400"),
])
def test_batch_answers_a_malformed_entry_in_that_entry(
    client: TestClient, settings: Settings, bad: dict[str, object], status: str,
) -> None:
    send(client, "PUT", "/fhir/Patient/x", patient(id="x"))
    response = post_bundle(client, "batch", [entry("POST", "Patient", patient()), bad])
    assert response.status_code == 200, response.text
    created, refused = responses(response)
    assert created["status"].startswith("201")
    assert refused["status"].startswith(status)
    assert refused["outcome"]["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    assert len(client.get("/fhir/Patient/x/_history").json()["entry"]) == 1


def test_transaction_whose_get_entry_faults_stores_nothing(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected fault in a GET entry is a 500 with nothing stored: the entry is run once
    before the writes, not only after the commit."""
    from fhir_server.services import search

    async def fault(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a fault no input check foresaw")

    before = _store_digest(settings)
    monkeypatch.setattr(search, "search", fault)
    response = post_bundle(client, "transaction", [entry("POST", "Patient", patient()),
                                                   entry("GET", "Patient?name=x")])
    assert response.status_code == 500
    assert issue(response)["code"] == "exception"
    assert _store_digest(settings) == before


@pytest.mark.parametrize("url", ["Patient/_x", "Patient/$x"])
def test_batch_entry_with_a_malformed_id_is_400_as_over_rest(client: TestClient, url: str) -> None:
    assert client.get(f"/fhir/{url}").status_code == 400
    [answer] = responses(post_bundle(client, "batch", [entry("GET", url)]))
    assert answer["status"].startswith("400")
