"""Ways around the sealed-message write check (docs/sealed-messages.md), each refused: a
sealed Binary or DocumentReference replaced after its message was checked, a contentType
written in another case or with parameters, a reference absolute to this server or
versioned, a transaction carrying the document and its message, and a group's key set
handing out a patient's key to callers who may not read that patient."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson
import pytest

from fhir_server.crypto.seal import seal
from tests.crypto.test_sealed_writes import (  # noqa: F401  (fixtures)
    MARKER, World, _key, _message, _refer, sealed_only, world)
from tests.http.helpers import issue, send
from tests.trials.conftest import DR, Platform, platform  # noqa: F401  (fixture)


def _data(jwe: str) -> str:
    return base64.b64encode(jwe.encode()).decode()


def _both(world: World) -> str:
    return seal(MARKER, [world.public("dr"), world.public("patient")], compact=False)


def _dr_only(world: World) -> str:
    return seal(MARKER, [world.public("dr")], compact=False)


@pytest.fixture
def patient_key(world: World) -> World:
    assert world.enrol("patient", "patient", "shared").status_code == 200
    return world


def _binary(id: str, jwe: str, content_type: str = "application/jose+json") -> dict[str, Any]:
    return {"resourceType": "Binary", "id": id, "contentType": content_type, "data": _data(jwe)}


def _document(id: str, jwe: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "id": id, "status": "current",
            "subject": {"reference": "Patient/shared"},
            "content": [{"attachment": {"contentType": "application/jose+json", "data": _data(jwe)}}]}


def _pointing(reference: str) -> dict[str, Any]:
    return {**_message({}), "payload": [{"contentReference": {"reference": reference}}]}


@pytest.mark.parametrize("make", [_binary, _document])
def test_a_document_replaced_after_its_message_is_checked(patient_key: World, make: Any) -> None:
    world, ehr = patient_key, patient_key.platform.headers("ehr")
    id = f"swap-{uuid.uuid4().hex[:8]}"
    kind = make(id, "")["resourceType"]
    assert send(world.client, "PUT", f"/fhir/{kind}/{id}", make(id, _both(world)), **ehr).status_code == 201
    message = send(world.client, "POST", "/fhir/Communication", _pointing(f"{kind}/{id}"), **ehr)
    assert message.status_code == 201, message.text
    stored = send(world.client, "GET", f"/fhir/{kind}/{id}", **ehr).json()
    refused = send(world.client, "PUT", f"/fhir/{kind}/{id}", make(id, _dr_only(world)), **ehr)
    assert refused.status_code == 400, refused.text
    assert "'patient' of recipient Patient/shared" in issue(refused)["diagnostics"]
    after = send(world.client, "GET", f"/fhir/{kind}/{id}", **ehr).json()
    assert after["meta"]["versionId"] == stored["meta"]["versionId"]
    # sealed to both again: accepted
    assert send(world.client, "PUT", f"/fhir/{kind}/{id}", make(id, _both(world)), **ehr).status_code == 200


def test_a_document_no_message_points_to_is_taken(patient_key: World) -> None:
    id = f"alone-{uuid.uuid4().hex[:8]}"
    ehr = patient_key.platform.headers("ehr")
    created = send(patient_key.client, "PUT", f"/fhir/Binary/{id}", _binary(id, _dr_only(patient_key)), **ehr)
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("content_type", ["Application/JOSE+JSON", "application/jose+json; charset=utf-8"])
def test_content_type_variants_are_sealed_content(patient_key: World, content_type: str) -> None:
    world = patient_key
    before = world.count("Communication")
    attachment = {"contentType": content_type, "data": _data(_dr_only(world))}
    refused = send(world.client, "POST", "/fhir/Communication", _message(attachment),
                   **world.platform.headers("physician", "shared"))
    assert refused.status_code == 400, refused.text
    assert "'patient' of recipient Patient/shared" in issue(refused)["diagnostics"]
    assert world.count("Communication") == before


@pytest.mark.parametrize("form", ["absolute", "versioned"])
def test_absolute_and_versioned_references_are_checked(patient_key: World, form: str) -> None:
    world, ehr = patient_key, patient_key.platform.headers("ehr")
    id = f"ref-{uuid.uuid4().hex[:8]}"
    stored = send(world.client, "PUT", f"/fhir/Binary/{id}", _binary(id, _dr_only(world)), **ehr)
    assert stored.status_code == 201
    base = world.client.app.state.context.base_url  # type: ignore[attr-defined]
    reference = f"{base}/Binary/{id}" if form == "absolute" else f"Binary/{id}/_history/1"
    before = world.count("Communication")
    refused = send(world.client, "POST", "/fhir/Communication", _pointing(reference), **ehr)
    assert refused.status_code == 400, refused.text
    assert "contentReference (Binary/" in issue(refused)["diagnostics"]
    assert world.count("Communication") == before


def _transaction(binary_jwe: str) -> dict[str, Any]:
    binary = f"urn:uuid:{uuid.uuid4()}"
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": binary, "request": {"method": "POST", "url": "Binary"},
         "resource": {k: v for k, v in _binary("x", binary_jwe).items() if k != "id"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "POST", "url": "Communication"},
         "resource": _pointing(binary)}]}


def test_a_transaction_checks_the_binary_it_carries(patient_key: World) -> None:
    world, ehr = patient_key, patient_key.platform.headers("ehr")
    before = (world.count("Binary"), world.count("Communication"))
    refused = send(world.client, "POST", "/fhir", _transaction(_dr_only(world)), **ehr)
    assert refused.status_code == 400, refused.text
    assert "'patient' of recipient Patient/shared" in issue(refused)["diagnostics"]
    assert (world.count("Binary"), world.count("Communication")) == before
    taken = send(world.client, "POST", "/fhir", _transaction(_both(world)), **ehr)
    assert taken.status_code == 200, taken.text


def test_sealed_only_takes_a_transaction_with_its_sealed_binary(sealed_only: World) -> None:
    world = sealed_only
    assert world.enrol("patient", "patient", "shared").status_code == 200
    taken = send(world.client, "POST", "/fhir", _transaction(_both(world)), **world.platform.headers("ehr"))
    assert taken.status_code == 200, taken.text


def test_sealed_only_refuses_a_plain_document_a_message_points_to(sealed_only: World) -> None:
    world, ehr = sealed_only, sealed_only.platform.headers("ehr")
    assert world.enrol("patient", "patient", "shared").status_code == 200
    id = f"plain-{uuid.uuid4().hex[:8]}"
    sealed = send(world.client, "PUT", f"/fhir/Binary/{id}", _binary(id, _both(world)), **ehr)
    assert sealed.status_code == 201
    assert send(world.client, "POST", "/fhir/Communication", _pointing(f"Binary/{id}"), **ehr).status_code == 201
    plain = {"resourceType": "Binary", "id": id, "contentType": "text/plain", "data": _data(MARKER)}
    refused = send(world.client, "PUT", f"/fhir/Binary/{id}", plain, **ehr)
    assert refused.status_code == 422, refused.text
    after = send(world.client, "GET", f"/fhir/Binary/{id}", **ehr).json()
    assert after["meta"]["versionId"] == sealed.json()["meta"]["versionId"]


# -- a group's key set ---------------------------------------------------------------------


def test_a_group_does_not_hand_out_a_patients_key(world: World) -> None:
    client, headers = world.client, world.platform.headers
    key = _key("unshared-key").as_dict(private=False)
    enrolled = send(client, "PUT", "/keys/me", body=orjson.dumps(key), content_type="application/json",
                    **headers("patient", "unshared"))
    assert enrolled.status_code == 200, enrolled.text
    for group in ({"resourceType": "Group", "id": "g-leak", "type": "person", "actual": True,
                   "member": [{"entity": {"reference": "Patient/unshared"}}, {"entity": {"reference": DR}}]},
                  {"resourceType": "CareTeam", "id": "ct-leak", "status": "active",
                   "participant": [{"member": {"reference": "Patient/unshared"}}]}):
        written = send(client, "PUT", f"/fhir/{group['resourceType']}/{group['id']}", group)
        assert written.status_code in (200, 201)
    assert send(client, "GET", "/keys/Patient/unshared", **headers("investigator")).status_code == 404
    for path in ("/keys/Group/g-leak", "/keys/CareTeam/ct-leak"):
        for caller in (headers("investigator"), headers("patient", "shared")):
            published = send(client, "GET", path, **caller)
            assert published.status_code == 200, published.text
            assert "unshared-key" not in published.text
    published = send(client, "GET", "/keys/Group/g-leak", **headers("investigator"))
    assert [k["kid"] for k in published.json()["keys"]] == ["dr"]  # the practitioner member's
    # the patient themselves sees their key
    own = send(client, "GET", "/keys/Group/g-leak", **headers("patient", "unshared"))
    assert "unshared-key" in own.text


def test_a_refusal_does_not_name_a_member_the_caller_cannot_read(world: World) -> None:
    group = {"resourceType": "Group", "id": "g-leak-2", "type": "person", "actual": True,
             "member": [{"entity": {"reference": "Patient/stranger"}}]}
    assert send(world.client, "PUT", "/fhir/Group/g-leak-2", group).status_code in (200, 201)
    key = _key("stranger-key").as_dict(private=False)
    assert send(world.client, "PUT", "/keys/me", body=orjson.dumps(key), content_type="application/json",
                **world.platform.headers("patient", "stranger")).status_code == 200
    physician = world.platform.headers("physician", "shared")
    assert send(world.client, "GET", "/fhir/Patient/stranger", **physician).status_code == 404
    jwe = seal(MARKER, [world.public("dr")], compact=True)
    refused = _refer(world, {"contentType": "application/jose", "data": _data(jwe)}, "Group/g-leak-2")
    assert refused.status_code == 400, refused.text
    assert "the current key of a member of recipient Group/g-leak-2" in issue(refused)["diagnostics"]
    assert "stranger" not in issue(refused)["diagnostics"]
