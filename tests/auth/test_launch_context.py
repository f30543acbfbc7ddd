"""Launch context in the token response, over real HTTP (SMART App Launch 2.2, "Scopes and
Launch Context" and "Launch context arrives with your access_token"): `patient` whenever
`patient/` scopes are granted, and the EHR launch's `encounter`, `fhirContext`,
`need_patient_banner` and `smart_style_url`."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.auth.live import (
    REDIRECT, LiveClient, code_of, live_server, new_user, registry, sign_in)
from tests.auth.conftest import es384
from tests.builders import patient
from tests.conftest import token as system_token
from tests.http.helpers import send


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveClient]:
    """An app registered with `launch`, one without, and patient Hélène."""
    with live_server(tmp_path_factory.mktemp("launch-context")) as client:
        apps = registry(client)
        apps.add_app("with-launch", "launch launch/patient launch/encounter openid fhirUser "
                     "patient/*.rs", [REDIRECT])
        apps.add_app("no-launch", "openid fhirUser patient/*.rs", [REDIRECT])
        admin = {"Authorization": f"Bearer {system_token(client, 'system/*.cruds')}"}
        body = {**patient(), "id": "helene"}
        assert send(client, "PUT", "/fhir/Patient/helene", body, **admin).status_code == 201
        yield client


def _launch(live: LiveClient, **context: Any) -> str:
    ehr = es384("ehr")
    registry(live).add_backend_client("ehr", "system/Patient.rs", jwks=ehr.jwks())
    access = live.post("/auth/token", data=ehr.form(
        "system/Patient.rs", audience=f"{live.app.state.settings.auth_url}/token")).json()
    answer = live.post("/auth/launch", json={"patient": "helene", **context},
                       headers={"Authorization": f"Bearer {access['access_token']}"})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["launch"])


def _token(live: LiveClient, app: str, scope: str, **overrides: str) -> dict[str, Any]:
    verifier = secrets.token_urlsafe(48)
    code = code_of(sign_in(live, verifier, app, scope, new_user(live, "Patient/helene"),
                           **overrides))
    answer = live.post("/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": app, "code_verifier": verifier})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _reads_own_record(live: LiveClient, body: dict[str, Any]) -> bool:
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    return live.get("/fhir/Patient/helene", headers=headers).status_code == 200


def test_patient_scopes_without_launch_patient_still_name_the_patient(live: LiveClient) -> None:
    """A patient's standalone launch asking `patient/*.rs` without `launch/patient`."""
    body = _token(live, "with-launch", "openid fhirUser patient/*.rs")
    assert "patient/*.rs" in body["scope"].split()
    assert body["patient"] == "helene" and _reads_own_record(live, body)


def test_an_ehr_launch_without_launch_patient_names_the_launched_patient(live: LiveClient) -> None:
    """The app is not registered for `launch` (dropped from the grant): the launch still gave
    the patient, who must be named since patient scopes are granted."""
    body = _token(live, "no-launch", "launch openid fhirUser patient/*.rs",
                  launch=_launch(live))
    assert "patient/*.rs" in body["scope"].split()
    assert body["patient"] == "helene" and _reads_own_record(live, body)


def test_no_patient_scopes_without_a_patient(live: LiveClient) -> None:
    """A practitioner's standalone launch, no patient picked: patient scopes are not granted."""
    verifier = secrets.token_urlsafe(48)
    code = code_of(sign_in(live, verifier, "no-launch", "openid fhirUser patient/*.rs",
                           new_user(live, "Practitioner/rpps-1")))
    answer = live.post("/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": "no-launch", "code_verifier": verifier})
    # Nothing but identity is left: granted without patient scopes, and without `patient`.
    assert answer.status_code == 200, answer.text
    assert "patient" not in answer.json()
    assert not [s for s in answer.json()["scope"].split() if s.startswith("patient/")]


REFERRAL = {"reference": "ServiceRequest/referral-1",
            "role": "https://example.org/fhir/launch-role/referral"}


def test_an_ehr_launch_gives_encounter_fhir_context_banner_and_style(live: LiveClient) -> None:
    """The portal opens an app on a referral: the app gets the patient, the encounter, the
    referral in fhirContext, need_patient_banner as the EHR says, and the style document."""
    launch = _launch(live, encounter="enc-1", fhirContext=[REFERRAL], need_patient_banner=False)
    body = _token(live, "with-launch", "launch launch/encounter openid fhirUser patient/*.rs",
                  launch=launch)
    assert body["patient"] == "helene" and body["encounter"] == "enc-1"
    assert body["fhirContext"] == [REFERRAL]
    assert body["need_patient_banner"] is False
    style = live.get(body["smart_style_url"])
    assert style.status_code == 200 and style.json()["color_background"].startswith("#")
    config = live.get("/fhir/.well-known/smart-configuration").json()
    assert {"context-ehr-encounter", "context-banner", "context-style"} <= set(config["capabilities"])
    assert "launch/encounter" in config["scopes_supported"]


def test_encounter_only_with_launch_encounter_and_banner_by_default(live: LiveClient) -> None:
    body = _token(live, "with-launch", "launch openid fhirUser patient/*.rs",
                  launch=_launch(live, encounter="enc-2"))
    assert "encounter" not in body and "launch/encounter" not in body["scope"].split()
    assert body["need_patient_banner"] is True
    standalone = _token(live, "with-launch", "launch/patient launch/encounter patient/*.rs")
    assert standalone["need_patient_banner"] is True
    assert "encounter" not in standalone and "launch/encounter" not in standalone["scope"].split()


@pytest.mark.parametrize("body", [
    {"patient": "helene", "fhirContext": [{"reference": "not a reference"}]},
    {"patient": "helene", "fhirContext": [{"reference": "ServiceRequest/1", "role": "x"}]},
    {"patient": "helene", "fhirContext": [{"reference": "ServiceRequest/1"}] * 11},
    {"patient": "helene", "encounter": "bad id!"},
    {"patient": "helene", "need_patient_banner": "no"},
    {"encounter": "enc-1"},
])
def test_a_bad_launch_request_is_refused(live: LiveClient, body: dict[str, Any]) -> None:
    ehr = es384("ehr-bad")
    registry(live).add_backend_client("ehr-bad", "system/Patient.rs", jwks=ehr.jwks())
    access = live.post("/auth/token", data=ehr.form(
        "system/Patient.rs", audience=f"{live.app.state.settings.auth_url}/token")).json()
    answer = live.post("/auth/launch", json=body,
                       headers={"Authorization": f"Bearer {access['access_token']}"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
    assert answer.json()["error_description"]

