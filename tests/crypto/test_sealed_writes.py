"""Sealed payloads on write (docs/sealed-messages.md): the key registry (`PUT /keys/me`,
`GET /keys/{type}/{id}`, a JWK Set as RFC 7517 §5), and the check that a sealed Communication
payload, `$refer`'s `sealedNote` or a sealed Binary/DocumentReference is a well-formed JWE
(RFC 7516) sealed to the current key of the sender and of every recipient (a CareTeam: its
site systems and members) — else 400 OperationOutcome naming what is missing, nothing stored."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from joserfc.jwk import ECKey

from fhir_server.app import create_app
from fhir_server.crypto.seal import open_sealed, seal
from fhir_server.settings import Settings
from tests.http.helpers import issue, send
from tests.trials.conftest import DR, STUDY, TEAM, Platform, platform  # noqa: F401  (fixture)

MARKER = "sealed-note-marker-5XK"
SITE = "site"


def _key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", {"kid": kid, "use": "enc"})


class World:
    """The referral platform, with sealing keys for the physician, the CareTeam's member and
    the site system acting for the CareTeam (private halves kept here, as the apps would)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.client = platform.client
        self.keys = {name: _key(name) for name in ("dr", "team-member", "site-enc", "patient")}
        registry = self.client.app.state.oauth.registry  # type: ignore[attr-defined]
        registry.add_backend_client(SITE, "system/*.rs", acts_for=[TEAM], jwks={"keys": [
            self.public("site-enc"),
            ECKey.generate_key("P-256", {"kid": "site-sig", "use": "sig"}).as_dict(private=False)]})

    def public(self, name: str) -> dict[str, Any]:
        return self.keys[name].as_dict(private=False)

    def enrol(self, actor: str, name: str, patient: str | None = None) -> Any:
        return send(self.client, "PUT", "/keys/me", body=orjson.dumps(self.public(name)),
                    content_type="application/json", **self.platform.headers(actor, patient))

    def team_member(self) -> dict[str, str]:
        tokens = self.client.app.state.tokens  # type: ignore[attr-defined]
        return {"Authorization": "Bearer " + tokens.issue(
            subject="dr-team", client_id="portal", scope="user/*.cruds",
            fhir_user="Practitioner/dr-team")["access_token"]}

    def count(self, resource_type: str) -> int:
        found = send(self.client, "GET", f"/fhir/{resource_type}?_summary=count")
        return int(found.json()["total"])


@pytest.fixture(scope="module")
def world(platform: Platform) -> World:
    """The referral platform on each store, with the keys enrolled."""
    made = World(platform)
    assert made.enrol("physician", "dr").status_code == 200
    assert send(made.client, "PUT", "/keys/me", body=orjson.dumps(made.public("team-member")),
                content_type="application/json", **made.team_member()).status_code == 200
    return made


def _attachment(jwe: str, compact: bool = False) -> dict[str, Any]:
    return {"contentType": "application/jose" if compact else "application/jose+json",
            "data": base64.b64encode(jwe.encode()).decode()}


def _refer(world: World, attachment: dict[str, Any], recipient: str = TEAM) -> Any:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/shared"}},
        {"name": "recipient", "valueReference": {"reference": recipient}},
        {"name": "sealedNote", "valueAttachment": attachment}]}
    return send(world.client, "POST", f"/fhir/{STUDY}/$refer", body,
                **world.platform.headers("physician", "shared"))


# -- the key registry ----------------------------------------------------------------------


def test_a_user_enrols_and_replaces_their_key(world: World) -> None:
    other = _key("dr-2")
    replaced = send(world.client, "PUT", "/keys/me", body=orjson.dumps(other.as_dict(private=False)),
                    content_type="application/json", **world.platform.headers("physician"))
    assert replaced.status_code == 200, replaced.text
    assert replaced.headers["content-type"] == "application/jwk-set+json"
    published = send(world.client, "GET", f"/keys/{DR}", **world.platform.headers("ehr"))
    assert [k["kid"] for k in published.json()["keys"]] == ["dr-2"]
    assert "d" not in published.json()["keys"][0]
    assert world.enrol("physician", "dr").status_code == 200
    own = send(world.client, "GET", "/keys/me", **world.platform.headers("physician"))
    assert [k["kid"] for k in own.json()["keys"]] == ["dr"]


def test_a_group_publishes_its_site_systems_and_members_keys(world: World) -> None:
    published = send(world.client, "GET", f"/keys/{TEAM}", **world.platform.headers("physician"))
    assert published.status_code == 200
    assert sorted(k["kid"] for k in published.json()["keys"]) == ["site-enc", "team-member"]
    site = send(world.client, "GET", f"/keys/Client/{SITE}", **world.platform.headers("physician"))
    assert [k["kid"] for k in site.json()["keys"]] == ["site-enc"]  # its signing key is not one


@pytest.mark.parametrize("jwk", [
    _key("private").as_dict(private=True),
    ECKey.generate_key("P-384", {"kid": "p384"}).as_dict(private=False),
    ECKey.generate_key("P-256", {"kid": "sig", "use": "sig"}).as_dict(private=False),
    {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
    ["not", "a", "key"],
])
def test_only_a_public_p256_encryption_key_is_enrolled(world: World, jwk: Any) -> None:
    answer = send(world.client, "PUT", "/keys/me", body=orjson.dumps(jwk),
                  content_type="application/json", **world.platform.headers("physician"))
    assert answer.status_code == 400, answer.text
    assert issue(answer)["code"] == "invalid"
    own = send(world.client, "GET", "/keys/me", **world.platform.headers("physician"))
    assert [k["kid"] for k in own.json()["keys"]] == ["dr"]


def test_a_site_system_does_not_enrol(world: World) -> None:
    answer = send(world.client, "PUT", "/keys/me", body=orjson.dumps(world.public("site-enc")),
                  content_type="application/json", **world.platform.headers("site"))
    assert answer.status_code == 403


def test_a_patients_keys_only_for_who_reads_the_patient(world: World) -> None:
    assert world.enrol("patient", "patient", "shared").status_code == 200
    for actor, status in (("physician", 200), ("investigator", 404), ("patient", 200)):
        found = send(world.client, "GET", "/keys/Patient/shared", **world.platform.headers(actor, "shared"))
        assert found.status_code == status, (actor, found.text)
    assert send(world.client, "GET", "/keys/Observation/x").status_code == 400
    assert send(world.client, "GET", f"/keys/{TEAM}").status_code != 401
    assert world.client.get(f"/keys/{TEAM}", headers={"Authorization": ""}).status_code == 401


# -- $refer with a sealed note -------------------------------------------------------------


def test_refer_with_a_note_sealed_to_every_key(world: World) -> None:
    jwe = seal(MARKER, [world.public(k) for k in ("dr", "site-enc", "team-member")])
    referred = _refer(world, _attachment(jwe))
    assert referred.status_code == 201, referred.text
    assert MARKER not in referred.text
    attachment = referred.json()["payload"][-1]["contentAttachment"]
    opened = open_sealed(base64.b64decode(attachment["data"]), world.keys["site-enc"].as_dict(private=True))
    assert opened == MARKER.encode()


def test_refer_omitting_the_site_systems_key_is_refused_and_stores_nothing(world: World) -> None:
    before = (world.count("Communication"), world.count("ResearchSubject"), world.count("Bundle"))
    jwe = seal(MARKER, [world.public(k) for k in ("dr", "team-member")])
    refused = _refer(world, _attachment(jwe))
    assert refused.status_code == 400, refused.text
    found = issue(refused)
    assert found["code"] == "invalid"
    assert "'site-enc'" in found["diagnostics"] and TEAM in found["diagnostics"]
    assert (world.count("Communication"), world.count("ResearchSubject"), world.count("Bundle")) == before


def test_refer_omitting_the_senders_key_is_refused(world: World) -> None:
    refused = _refer(world, _attachment(seal(MARKER, [world.public(k) for k in ("site-enc", "team-member")])))
    assert refused.status_code == 400
    assert "'dr'" in issue(refused)["diagnostics"] and f"sender {DR}" in issue(refused)["diagnostics"]


def test_refer_omitting_a_members_key_names_the_member(world: World) -> None:
    refused = _refer(world, _attachment(seal(MARKER, [world.public(k) for k in ("dr", "site-enc")])))
    assert refused.status_code == 400
    assert f"Practitioner/dr-team, member of {TEAM}" in issue(refused)["diagnostics"]


@pytest.mark.parametrize("attachment", [
    {"contentType": "application/jose", "data": base64.b64encode(b"a.b.c.d.e").decode()},
    {"contentType": "application/jose+json", "data": base64.b64encode(b'{"ciphertext": 1}').decode()},
    {"contentType": "application/jose+json", "url": "https://elsewhere.example/jwe"},
    {"contentType": "text/plain", "data": base64.b64encode(MARKER.encode()).decode()},
])
def test_refer_with_a_malformed_sealed_note_is_refused(world: World, attachment: dict[str, Any]) -> None:
    before = world.count("Communication")
    refused = _refer(world, attachment)
    assert refused.status_code == 400, refused.text
    assert issue(refused)["code"] == "invalid"
    assert world.count("Communication") == before


# -- ordinary writes of sealed content -----------------------------------------------------


def _message(attachment: dict[str, Any], recipient: str = "Patient/shared") -> dict[str, Any]:
    return {"resourceType": "Communication", "status": "completed",
            "subject": {"reference": "Patient/shared"}, "sender": {"reference": DR},
            "recipient": [{"reference": recipient}], "payload": [{"contentAttachment": attachment}]}


def test_a_physicians_sealed_message_to_their_patient(world: World) -> None:
    assert world.enrol("patient", "patient", "shared").status_code == 200
    physician = world.platform.headers("physician", "shared")
    both = _attachment(seal(MARKER, [world.public("dr"), world.public("patient")], compact=False))
    created = send(world.client, "POST", "/fhir/Communication", _message(both), **physician)
    assert created.status_code == 201, created.text
    before = world.count("Communication")
    only_dr = _attachment(seal(MARKER, [world.public("dr")], compact=True), compact=True)
    refused = send(world.client, "POST", "/fhir/Communication", _message(only_dr), **physician)
    assert refused.status_code == 400
    assert "'patient' of recipient Patient/shared" in issue(refused)["diagnostics"]
    assert world.count("Communication") == before
    # an update is checked as well, and leaves the stored version as it was
    stored = created.json()
    updated = send(world.client, "PUT", f"/fhir/Communication/{stored['id']}",
                   {**_message(only_dr), "id": stored["id"]}, **physician)
    assert updated.status_code == 400
    now = send(world.client, "GET", f"/fhir/Communication/{stored['id']}", **physician).json()
    assert now["meta"]["versionId"] == stored["meta"]["versionId"]


def test_a_recipient_without_any_key_is_named(world: World) -> None:
    refused = send(world.client, "POST", "/fhir/Communication",
                   _message(_attachment(seal(MARKER, [world.public("dr")])), "Patient/unshared"),
                   **world.platform.headers("physician", "unshared"))
    assert refused.status_code == 400
    assert "recipient Patient/unshared has no sealing key" in issue(refused)["diagnostics"]


def test_a_system_client_sends_in_its_own_name(world: World) -> None:
    assert world.enrol("patient", "patient", "shared").status_code == 200
    unsigned = {k: v for k, v in _message(_attachment(seal(MARKER, [world.public("patient")]))).items()
                if k != "sender"}
    refused = send(world.client, "POST", "/fhir/Communication", unsigned, **world.platform.headers("ehr"))
    assert refused.status_code == 400
    assert "sender Client/ehr has no sealing key" in issue(refused)["diagnostics"]
    ehr_key = _key("ehr-enc")
    registry = world.client.app.state.oauth.registry  # type: ignore[attr-defined]
    registry.add_backend_client("ehr", "system/*.cruds", jwks={"keys": [ehr_key.as_dict(private=False)]})
    both = _attachment(seal(MARKER, [world.public("patient"), ehr_key.as_dict(private=False)]))
    created = send(world.client, "POST", "/fhir/Communication", {**unsigned, "payload": [
        {"contentAttachment": both}]}, **world.platform.headers("ehr"))
    assert created.status_code == 201, created.text


def test_plaintext_messages_still_work(world: World) -> None:
    plain = {**_message({"contentType": "text/plain", "data": base64.b64encode(b"hello").decode()})}
    created = send(world.client, "POST", "/fhir/Communication", plain,
                   **world.platform.headers("physician", "shared"))
    assert created.status_code == 201, created.text


def test_a_sealed_binary_and_the_message_pointing_to_it(world: World) -> None:
    ehr = world.platform.headers("ehr")
    before = world.count("Binary")
    malformed = {"resourceType": "Binary", "contentType": "application/jose",
                 "data": base64.b64encode(b"not.a.jwe").decode()}
    refused = send(world.client, "POST", "/fhir/Binary", malformed, **ehr)
    assert refused.status_code == 400 and issue(refused)["expression"] == ["Binary"]
    assert world.count("Binary") == before
    jwe = seal(MARKER, [world.public("dr")], compact=True)
    binary = send(world.client, "POST", "/fhir/Binary", {"resourceType": "Binary",
                  "contentType": "application/jose", "data": base64.b64encode(jwe.encode()).decode()}, **ehr)
    assert binary.status_code == 201, binary.text
    pointing = {**_message({}), "payload": [{"contentReference": {"reference": f"Binary/{binary.json()['id']}"}}]}
    refused = send(world.client, "POST", "/fhir/Communication", pointing, **ehr)
    assert refused.status_code == 400
    assert "contentReference (Binary/" in issue(refused)["diagnostics"]
    assert "Patient/shared" in issue(refused)["diagnostics"]


def test_a_sealed_document_reference_is_checked_for_form(world: World) -> None:
    document = {"resourceType": "DocumentReference", "status": "current",
                "subject": {"reference": "Patient/shared"},
                "content": [{"attachment": {"contentType": "application/jose+json",
                                            "data": base64.b64encode(b"{}").decode()}}]}
    refused = send(world.client, "POST", "/fhir/DocumentReference", document, **world.platform.headers("ehr"))
    assert refused.status_code == 400
    assert issue(refused)["expression"] == ["DocumentReference.content[0].attachment"]


# -- FHIR_SERVER_SEALED_MESSAGES_ONLY --------------------------------------------------------


@pytest.fixture
def sealed_only(world: World) -> Iterator[World]:
    """The platform taking sealed messages only, for one test."""
    app = world.client.app
    context = app.state.context  # type: ignore[attr-defined]
    app.state.context = replace(context, sealed_only=True)  # type: ignore[attr-defined]
    try:
        yield world
    finally:
        app.state.context = context  # type: ignore[attr-defined]


def test_the_setting_reaches_the_service_layer(settings: Settings) -> None:
    assert create_app(settings.model_copy(update={"sealed_messages_only": True})).state.context.sealed_only
    assert not create_app(settings).state.context.sealed_only


def test_sealed_only_refuses_a_plain_message_and_stores_nothing(sealed_only: World) -> None:
    world = sealed_only
    assert world.enrol("patient", "patient", "shared").status_code == 200
    physician = world.platform.headers("physician", "shared")
    before = world.count("Communication")
    for payload in ([{"contentString": MARKER}],
                    [{"contentAttachment": {"contentType": "text/plain", "data": "aGVsbG8="}}],
                    [{"contentReference": {"reference": "Binary/unknown"}}]):
        refused = send(world.client, "POST", "/fhir/Communication", {**_message({}), "payload": payload},
                       **physician)
        assert refused.status_code == 422, refused.text
        assert issue(refused)["expression"] == ["Communication.payload[0]"]
    assert world.count("Communication") == before
    sealed = _attachment(seal(MARKER, [world.public("dr"), world.public("patient")]))
    assert send(world.client, "POST", "/fhir/Communication", _message(sealed), **physician).status_code == 201


def test_sealed_only_refuses_a_plain_referral_note(sealed_only: World) -> None:
    world = sealed_only
    before = world.count("Communication")
    plain = world.platform.refer("shared", recipients=(TEAM,))
    assert plain.status_code == 422, plain.text
    assert world.count("Communication") == before
    jwe = seal(MARKER, [world.public(k) for k in ("dr", "site-enc", "team-member")])
    assert _refer(world, _attachment(jwe)).status_code == 201  # the frozen record is the server's
