"""Pro Santé Connect sign-in (auth/psc.py): a PSC-shaped token from a trusted issuer (signed
by a local provider whose JWKS is served in the test) becomes the stored Practitioner with its
RPPS number, created on first sign-in; the RPPS register, when loaded, refuses the unknown."""

from __future__ import annotations

import asyncio
import dataclasses
import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app, open_context
from fhir_server.auth.rpps import RppsRegister
from fhir_server.model.french_ids import RPPS_SYSTEM
from fhir_server.search import parse_query
from fhir_server.services.demo import load_demo_data
from fhir_server.settings import Settings
from tests.auth.test_external_issuer import AUDIENCE, ISSUER, Provider, provider  # noqa: F401
from tests.auth.test_rpps import RPPS_EXTRACT

KNOWN = "10001234567"  # Practitioner/dr-martin of the demo data, in the fictitious extract
NEW = "10008888777"  # in the extract, no stored Practitioner
ABSENT = "10009999998"  # in neither


def psc_token(idp: Provider, number: str, **extra: Any) -> str:
    """A token shaped as Pro Santé Connect's: IDNPS or RPPS, professions, name."""
    claims: dict[str, Any] = {
        "sub": f"f:psc:{number}", "SubjectNameID": number, "preferred_username": number,
        "given_name": "Élise", "family_name": "Rousseau",
        "SubjectRefPro": {"codeCivilite": "MME", "exercices": [{"codeProfession": "21"}]},
        "scope": "user/Practitioner.rs"}
    return idp.token(**{**claims, **extra})


@pytest.fixture
def settings(provider: tuple[Provider, str], tmp_path: Path) -> Settings:  # noqa: F811
    settings = Settings(data_dir=tmp_path, base_url=AUDIENCE, trusted_issuers=[
        {"issuer": ISSUER, "jwks_uri": provider[1], "psc": True}])

    async def demo() -> None:
        async with open_context(settings) as context:
            await load_demo_data(context)

    asyncio.run(demo())
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _get(client: TestClient, token: str) -> Any:
    return client.get("/fhir/Practitioner", headers={"Authorization": f"Bearer {token}"})


def _stored(settings: Settings, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    async def search() -> list[dict[str, Any]]:
        async with open_context(settings) as context:
            query, _ = parse_query(resource_type, params, context.registry)
            page = await context.store.search(dataclasses.replace(query, count=100))
            return [orjson.loads(m.body) for m in page.matches if m.body is not None]

    return asyncio.run(search())


def _by_rpps(settings: Settings, number: str) -> list[dict[str, Any]]:
    return _stored(settings, "Practitioner", [("identifier", f"{RPPS_SYSTEM}|{number}")])


def _requestors(settings: Settings) -> set[str]:
    return {agent["who"].get("reference", "") for event in _stored(settings, "AuditEvent", [])
            for agent in event.get("agent", []) if agent.get("requestor")}


def test_a_known_rpps_is_the_stored_practitioner(client: TestClient, settings: Settings,
                                                 provider: tuple[Provider, str]) -> None:  # noqa: F811
    assert _get(client, psc_token(provider[0], KNOWN)).status_code == 200
    assert [p["id"] for p in _by_rpps(settings, KNOWN)] == ["dr-martin"]  # none created
    assert "Practitioner/dr-martin" in _requestors(settings)


def test_the_idnps_form_is_accepted(client: TestClient, settings: Settings,
                                    provider: tuple[Provider, str]) -> None:  # noqa: F811
    token = psc_token(provider[0], "8" + KNOWN, preferred_username="someone-else")
    assert _get(client, token).status_code == 200
    assert "Practitioner/dr-martin" in _requestors(settings)


def test_first_sign_in_creates_the_practitioner_once(client: TestClient, settings: Settings,
                                                     provider: tuple[Provider, str]) -> None:  # noqa: F811
    for _ in range(2):
        assert _get(client, psc_token(provider[0], "8" + NEW)).status_code == 200
    [created] = _by_rpps(settings, NEW)
    assert created["identifier"] == [{"use": "official", "system": RPPS_SYSTEM, "value": NEW}]
    assert created["name"] == [{"use": "official", "family": "Rousseau", "given": ["Élise"]}]
    assert created["qualification"][0]["code"]["coding"][0]["code"] == "21"
    assert f"Practitioner/{created['id']}" in _requestors(settings)
    # the creation is audited as the server's write of that Practitioner
    created_events = [e for e in _stored(settings, "AuditEvent", [])
                      if any(x.get("what", {}).get("reference") == f"Practitioner/{created['id']}"
                             for x in e.get("entity", []))]
    assert created_events


def test_an_rpps_nobody_can_be_created_for_is_refused(client: TestClient, settings: Settings,
                                                      provider: tuple[Provider, str]) -> None:  # noqa: F811
    answer = _get(client, psc_token(provider[0], ABSENT, family_name=None))
    assert answer.status_code == 401
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"] == "Unknown professional."
    assert _by_rpps(settings, ABSENT) == []


def test_no_rpps_in_the_token_is_refused(client: TestClient, provider: tuple[Provider, str]) -> None:  # noqa: F811
    answer = _get(client, psc_token(provider[0], "not-a-number", preferred_username="12"))
    assert answer.status_code == 401
    assert answer.json()["issue"][0]["diagnostics"] == "Unknown professional."


def test_with_a_register_loaded_the_unknown_and_inactive_are_refused(
        client: TestClient, settings: Settings, provider: tuple[Provider, str]) -> None:  # noqa: F811
    register = RppsRegister(settings.data_dir / "rpps.db")
    with RPPS_EXTRACT.open(encoding="utf-8") as extract:
        register.load(extract, "extract")
    idp = provider[0]
    answer = _get(client, psc_token(idp, ABSENT))
    assert answer.status_code == 401
    assert "is not in the RPPS register" in answer.json()["issue"][0]["diagnostics"]
    assert _get(client, psc_token(idp, KNOWN)).status_code == 200
    # a later extract without Dr Martin: no longer listed, refused with that reason
    lines = RPPS_EXTRACT.read_text(encoding="utf-8").splitlines(keepends=True)
    register.load([line for line in lines if KNOWN not in line], "later extract")
    register.close()
    answer = _get(client, psc_token(idp, KNOWN))
    assert answer.status_code == 401
    assert "no longer in the RPPS register" in answer.json()["issue"][0]["diagnostics"]
    assert _by_rpps(settings, ABSENT) == []


@pytest.mark.parametrize(("change", "why"), [
    ({"issuer": "https://idp.example.org/realms/other"}, "an issuer not trusted"),
    ({"audience": "https://other.example.org/fhir"}, "another audience"),
])
def test_bad_issuer_or_audience_is_refused(client: TestClient, settings: Settings,
                                           provider: tuple[Provider, str],  # noqa: F811
                                           change: dict[str, Any], why: str) -> None:
    assert _get(client, psc_token(provider[0], NEW, **change)).status_code == 401, why
    assert _by_rpps(settings, NEW) == []


def test_a_bad_signature_is_refused(client: TestClient, settings: Settings,
                                    provider: tuple[Provider, str]) -> None:  # noqa: F811
    header, payload, signature = psc_token(provider[0], NEW).split(".")
    other = psc_token(Provider(), NEW).split(".")[2]  # a key the provider does not publish
    assert signature != other
    assert _get(client, f"{header}.{payload}.{other}").status_code == 401
    assert _by_rpps(settings, NEW) == []


def test_simultaneous_first_sign_ins_create_one_practitioner(
        client: TestClient, settings: Settings, provider: tuple[Provider, str]) -> None:  # noqa: F811
    # The provider's keys fetched first: concurrent first fetches are remote_keys.py's matter.
    assert _get(client, psc_token(provider[0], ABSENT, family_name=None)).status_code == 401
    token = psc_token(provider[0], NEW)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _get(client, token), range(4)))
    codes = [a.status_code for a in answers]
    assert codes == [200] * 4
    assert [p["id"] for p in _by_rpps(settings, NEW)] == [f"rpps-{NEW}"]
