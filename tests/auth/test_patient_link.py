"""`Patient.link` and what a patient's token reaches, over real HTTP.

The R4 Patient CompartmentDefinition puts in Patient A's compartment every Patient whose
`link.other` is A. For access this server does not follow it (docs/auth.md, "Patient.link"):
a link is an assertion by whoever wrote the other record, and neither a `seealso` (a relative,
a possible duplicate) nor a merged-away record (`replaced-by`) is opened through it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.auth.live import LiveClient, live_server
from tests.builders import consent, observation, patient
from tests.conftest import token
from tests.http.helpers import send


def _linked(id: str, kind: str) -> dict[str, Any]:
    return {**patient(family=id.title()), "id": id,
            "link": [{"other": {"reference": "Patient/a"}, "type": kind}]}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveClient]:
    with live_server(tmp_path_factory.mktemp("link")) as client:
        admin = {"Authorization": f"Bearer {token(client, 'system/*.cruds')}"}
        for body in ({**patient(), "id": "a"}, _linked("relative", "seealso"),
                     _linked("merged", "replaced-by")):
            assert send(client, "PUT", f"/fhir/Patient/{body['id']}", body, **admin).status_code == 201
        body = {**observation("Patient/merged"), "id": "merged-obs"}
        assert send(client, "PUT", "/fhir/Observation/merged-obs", body, **admin).status_code == 201
        yield client


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def test_a_patient_token_does_not_reach_linked_patients(live: LiveClient) -> None:
    headers = {"Authorization": f"Bearer {token(live, 'patient/*.rs', patient='a')}"}
    assert live.get("/fhir/Patient/a", headers=headers).status_code == 200
    for id in ("relative", "merged"):
        assert live.get(f"/fhir/Patient/{id}", headers=headers).status_code == 404, id
    assert _ids(live.get("/fhir/Patient", headers=headers).json()) == {"a"}
    assert _ids(live.get("/fhir/Patient?link=Patient/a", headers=headers).json()) == set()
    assert _ids(live.get("/fhir/Observation", headers=headers).json()) == set()


def test_a_practitioner_does_not_reach_linked_patients_either(live: LiveClient) -> None:
    """A practitioner named by A's consent reaches A's compartment, not what links to A."""
    admin = {"Authorization": f"Bearer {token(live, 'system/*.cruds')}"}
    agreed = {**consent("a", actor="Practitioner/dr-link"), "id": "c-link"}
    assert send(live, "PUT", "/fhir/Consent/c-link", agreed, **admin).status_code == 201
    headers = {"Authorization": f"Bearer {token(live, 'user/*.rs', fhir_user='Practitioner/dr-link')}"}
    assert live.get("/fhir/Patient/a", headers=headers).status_code == 200
    for id in ("relative", "merged"):
        assert live.get(f"/fhir/Patient/{id}", headers=headers).status_code == 404, id
    assert _ids(live.get("/fhir/Patient", headers=headers).json()) == {"a"}


def test_a_patient_cannot_link_a_record_to_theirs(live: LiveClient) -> None:
    """Writing a link into their own record to someone else's is refused, so a link can
    never be made by the patient to reach further."""
    headers = {"Authorization": f"Bearer {token(live, 'patient/*.cruds', patient='a')}"}
    own = {**patient(), "id": "a", "link": [{"other": {"reference": "Patient/relative"},
                                             "type": "seealso"}]}
    assert send(live, "PUT", "/fhir/Patient/a", own, **headers).status_code == 403


def test_the_compartment_search_still_follows_the_definition(live: LiveClient) -> None:
    """For a system client, `Patient/a/Patient` is the R4 compartment, links included."""
    headers = {"Authorization": f"Bearer {token(live, 'system/*.rs')}"}
    found = live.get("/fhir/Patient/a/Patient", headers=headers)
    assert found.status_code == 200, found.text
    assert _ids(found.json()) == {"a", "relative", "merged"}
