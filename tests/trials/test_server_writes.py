"""The server's own writes (referrals and answers, withdrawal marks, frozen records,
consent proposals, published definitions) go through the service layer like a client's:
the commit hooks see them and the request's AuditEvent names them (ARCHITECTURE.md, "Rules
of the house"; docs/referrals.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import pytest

from fhir_server.services.context import Context
from fhir_server.store.base import Version
from fhir_server.trials.definitions import publish
from tests.builders import consent
from tests.http.helpers import send
from tests.trials.conftest import Platform


@pytest.fixture
def seen(platform: Platform) -> Iterator[list[str]]:
    """What the commit hooks see, as `Type/id`, while a test runs."""
    app = platform.client.app
    original: Context = app.state.context  # type: ignore[attr-defined]
    written: list[str] = []

    async def record(ctx: Context, versions: Sequence[Version]) -> None:
        written.extend(f"{v.resource_type}/{v.id}" for v in versions)

    app.state.context = dataclasses.replace(original, hooks=(*original.hooks, record))  # type: ignore[attr-defined]
    yield written
    app.state.context = original  # type: ignore[attr-defined]


def _last_event(platform: Platform, **params: str) -> dict[str, object]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    found = platform.client.get(f"/fhir/AuditEvent?{query}&_sort=-date&_count=1",
                                headers=platform.headers("ehr")).json()
    return found["entry"][0]["resource"]  # type: ignore[no-any-return]


def _entities(event: dict[str, object]) -> set[str]:
    return {e["what"]["reference"] for e in event["entity"] if "what" in e}  # type: ignore[attr-defined, index]


def test_a_referral_and_its_answer_run_the_commit_hooks(platform: Platform, seen: list[str]) -> None:
    referral = platform.refer("shared").json()
    frozen = referral["payload"][0]["contentReference"]["reference"]
    assert {f"Communication/{referral['id']}", frozen} <= set(seen)
    assert any(s.startswith("ResearchSubject/") for s in seen)
    seen.clear()
    answer = platform.answer(referral["id"], "preselected")
    assert answer.status_code == 201, answer.text
    assert {f"Communication/{answer.json()['id']}", f"Communication/{referral['id']}"} <= set(seen)


def test_a_withdrawal_marks_the_referrals_in_the_patients_request(platform: Platform, seen: list[str]) -> None:
    referral = platform.refer("leaving").json()
    frozen = referral["payload"][0]["contentReference"]["reference"]
    patient = platform.headers("patient", "leaving")
    research = platform.client.get("/fhir/Consent/leaving-c1", headers=patient).json()
    withdrawn = {k: v for k, v in research.items() if k != "meta"} | {"status": "inactive"}
    assert send(platform.client, "PUT", "/fhir/Consent/leaving-c1", withdrawn, **patient).status_code == 200
    assert {f"Communication/{referral['id']}", frozen} <= set(seen)
    event = _last_event(platform, entity="Consent/leaving-c1")
    assert {"Consent/leaving-c1", f"Communication/{referral['id']}", frozen} <= _entities(event)


def test_a_proposal_and_its_notice_run_the_commit_hooks(platform: Platform, seen: list[str]) -> None:
    tokens = platform.client.app.state.tokens  # type: ignore[attr-defined]
    issued = tokens.issue(subject="dr-w", client_id="portal", scope="user/*.cruds", fhir_user="Practitioner/dr-w")
    proposed = send(platform.client, "POST", "/fhir/Consent", consent("stranger", actor="Practitioner/dr-w"),
                    Authorization=f"Bearer {issued['access_token']}")
    assert proposed.status_code == 201
    assert f"Consent/{proposed.json()['id']}" in seen
    assert any(s.startswith("Communication/") for s in seen)


def test_published_definitions_run_the_commit_hooks(platform: Platform, seen: list[str]) -> None:
    ctx: Context = platform.client.app.state.context  # type: ignore[attr-defined]
    stored = platform.client.get("/fhir/CodeSystem/referral-outcome", headers=platform.headers("ehr")).json()
    changed = {k: v for k, v in stored.items() if k != "meta"} | {"title": "Changed by hand"}
    assert send(platform.client, "PUT", "/fhir/CodeSystem/referral-outcome", changed,
                **platform.headers("ehr")).status_code == 200
    seen.clear()
    assert platform.client.portal.call(publish, ctx) == 1  # type: ignore[union-attr]
    assert seen == ["CodeSystem/referral-outcome"]
    assert platform.client.get("/fhir/CodeSystem/referral-outcome",
                               headers=platform.headers("ehr")).json()["title"] != "Changed by hand"
