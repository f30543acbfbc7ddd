"""Who the caller is, decided in one place (services/principals.py): the role each kind of
token gets, from its claims and what the store says today (docs/referrals.md, "Actors")."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.access.principal import Claims, Principal, Role
from fhir_server.model.errors import FhirError, Kind
from fhir_server.services.principals import principal_of
from tests.trials.conftest import ADMIN, DR, INVESTIGATOR, REPRESENTATIVE, ROLE, TEAM, Platform


def _principal(platform: Platform, **claims: Any) -> Principal:
    ctx = platform.client.app.state.context  # type: ignore[attr-defined]
    full = Claims(**{"subject": "someone", "client_id": "portal", "scope": "user/*.cruds", **claims})
    return platform.client.portal.call(principal_of, ctx, full)  # type: ignore[union-attr]


CASES: dict[str, tuple[dict[str, Any], Role, str | None]] = {
    "patient": (dict(scope="patient/*.cruds", patient="shared", fhir_user="Patient/shared"), Role.PATIENT, "shared"),
    "patient app without identity": (dict(scope="patient/*.rs", patient="shared"), Role.PATIENT, "shared"),
    "representative": (dict(scope="patient/*.cruds", patient="minor", fhir_user=REPRESENTATIVE),
                       Role.REPRESENTATIVE, "minor"),
    "representative of someone else": (dict(scope="patient/*.cruds", patient="shared", fhir_user=REPRESENTATIVE),
                                       Role.REPRESENTATIVE, None),
    "physician": (dict(fhir_user=DR), Role.PRACTITIONER, None),
    "physician launched on a patient": (dict(scope="patient/*.rs user/*.rs", patient="shared", fhir_user=DR),
                                        Role.PRACTITIONER, "shared"),
    "physician launched on a stranger": (dict(scope="patient/*.rs", patient="stranger", fhir_user=DR),
                                         Role.PRACTITIONER, None),
    "investigator": (dict(fhir_user=INVESTIGATOR), Role.INVESTIGATOR, None),
    "administrator": (dict(fhir_user=ADMIN, admin=True), Role.ADMINISTRATOR, None),
    "site system": (dict(scope="system/*.rs", acts_for=(TEAM,)), Role.INVESTIGATOR, None),
    "ehr": (dict(scope="system/*.cruds"), Role.SYSTEM, None),
    "unknown kind of user": (dict(scope="patient/*.rs", patient="shared", fhir_user="Person/p1"), Role.UNKNOWN, None),
}


@pytest.mark.parametrize("case", CASES)
def test_each_kind_of_token_gets_its_role(platform: Platform, case: str) -> None:
    claims, role, patient = CASES[case]
    principal = _principal(platform, **claims)
    assert (principal.role, principal.patient) == (role, patient)


def test_what_each_role_reaches_comes_from_the_store(platform: Platform) -> None:
    physician = _principal(platform, fhir_user=DR)
    assert physician.consented is not None and "shared" in physician.consented and "stranger" not in physician.consented
    investigator = _principal(platform, fhir_user=INVESTIGATOR)
    assert investigator.recipients == (ROLE,) and investigator.consented == ()
    admin = _principal(platform, fhir_user=DR, admin=True)  # named by consents, yet reaches none
    assert admin.consented == () and admin.recipients is None
    assert _principal(platform, scope="system/*.rs", acts_for=(TEAM,)).recipients == (TEAM,)


def test_only_an_administrator_breaks_the_glass_with_a_reason(platform: Platform) -> None:
    with pytest.raises(FhirError) as refused:
        _principal(platform, fhir_user=DR, break_glass="Emergency")
    assert refused.value.kind is Kind.FORBIDDEN
    with pytest.raises(FhirError) as empty:
        _principal(platform, fhir_user=ADMIN, admin=True, break_glass="  ")
    assert empty.value.kind is Kind.INVALID
    assert _principal(platform, fhir_user=ADMIN, admin=True, break_glass=" ER ").break_glass == "ER"


def test_an_unknown_kind_of_user_reaches_nothing(platform: Platform) -> None:
    tokens = platform.client.app.state.tokens  # type: ignore[attr-defined]
    issued = tokens.issue(subject="p1", client_id="portal", scope="patient/*.rs user/*.rs",
                          patient="shared", fhir_user="Person/p1")
    headers = {"Authorization": f"Bearer {issued['access_token']}"}
    for url in ("/fhir/Patient/shared", "/fhir/Observation", "/fhir/Practitioner"):
        assert platform.client.get(url, headers=headers).status_code == 403, url


def _bearer(platform: Platform, **claims: Any) -> dict[str, str]:
    tokens = platform.client.app.state.tokens  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {tokens.issue(subject='someone', client_id='portal', **claims)['access_token']}"}


@pytest.mark.parametrize("fhir_user", ["practitioner/x", "Practitioner", "Patient", "RelatedPerson/",
                                       "urn:oid:1.2.3", "Practitioner/x/y/z"])
def test_a_user_whose_fhiruser_cannot_be_read_reaches_nothing(platform: Platform, fhir_user: str) -> None:
    """Such a token is a user's, not a backend client's: its system/ scopes count for nothing."""
    headers = _bearer(platform, scope="system/*.cruds", fhir_user=fhir_user)
    for url in ("/fhir/Observation?subject=Patient/shared", "/fhir/Patient/shared", "/fhir/Practitioner"):
        assert platform.client.get(url, headers=headers).status_code == 403, url
    # A readable fhirUser in absolute form is the same user.
    absolute = _bearer(platform, scope="patient/*.rs", patient="shared", fhir_user="https://elsewhere.example/fhir/Patient/shared")
    assert platform.client.get("/fhir/Patient/shared", headers=absolute).status_code == 200


def test_a_patient_user_reaches_only_their_own_record(platform: Platform) -> None:
    """The patient in context must be the user: another patient is reached only through a
    RelatedPerson who represents them."""
    headers = _bearer(platform, scope="patient/*.cruds", patient="shared", fhir_user="Patient/minor")
    answer = platform.client.get("/fhir/Observation?subject=Patient/shared", headers=headers)
    assert answer.status_code == 403 and "not its user" in answer.text
    assert platform.client.get("/fhir/Patient/shared", headers=headers).status_code == 403
    own = _bearer(platform, scope="patient/*.cruds", patient="shared", fhir_user="Patient/shared")
    assert platform.client.get("/fhir/Patient/shared", headers=own).status_code == 200
