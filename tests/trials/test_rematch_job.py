"""The re-match job (trials/rematch.py; docs/matching.md, "The re-match job"), on both stores:
only the trials changed since the last look are evaluated; a patient whose research consent is
withdrawn is told of nothing; a patient is told once per trial version, across restarts and
full re-matches; a pass killed midway resumes after the last chunk it committed; and a
physician's subscription delivers a newly matching trial, never another physician's patient."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server import clock
from fhir_server.clock import Frozen
from fhir_server.services.erase import erase
from fhir_server.trials import rematch
from fhir_server.trials.alerts import still_news
from tests.builders import consent
from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver, receiver
from tests.subscriptions.test_delivery import subscription
from tests.trials.eligibility_builders import condition, group, patient
from tests.trials.match_world import CRITERIA, DR, RECENT, build, site, study
from tests.trials.rematch_helpers import SETTLED, look, moving  # noqa: F401 - a fixture

OTHER = "Practitioner/dr-other"


@pytest.fixture
def settings(settings: Any) -> Any:
    return settings.model_copy(update={"subscription_loopback_http": True})


@pytest.fixture
def hook() -> Any:
    with receiver() as running:
        yield running


def _put(client: TestClient, resource: dict[str, Any]) -> None:
    response = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
    assert response.status_code in (200, 201), response.text


def _trial(client: TestClient, id: str, criteria: str = "breast") -> None:
    _put(client, group(f"{id}-criteria", *CRITERIA[criteria]))
    _put(client, study(id, "phase-2", [site("paris", "recruiting", RECENT)]))


def _patient(client: TestClient, id: str, physician: str, diagnosis: str) -> None:
    """A woman with cancer (`diagnosis`, ICD-10), consented to `physician` and to research
    sharing."""
    _put(client, {k: v for k, v in patient(birth="1965-01-01", id=id).items() if k != "meta"})
    _put(client, {**condition(diagnosis, id=f"{id}-c"), "subject": {"reference": f"Patient/{id}"}})
    _put(client, {**consent(id, actor=physician), "id": f"{id}-privacy"})
    _put(client, {**consent(id, scope="research"), "id": f"{id}-research"})


def _subscribe(client: TestClient, url: str, physician: str) -> None:
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    caller = {"Authorization": "Bearer " + tokens.issue(
        subject=physician, client_id="portal", scope="user/*.cruds", fhir_user=physician)["access_token"]}
    body = subscription(url, topic="trial-matching", filters=(f"ResearchStudy?practitioner={physician}",))
    assert send(client, "POST", "/fhir/Subscription", body, **caller).status_code == 201


def _world(client: TestClient, url: str, moving: Frozen) -> None:
    """match_world's catalogue; Carla and Dora (breast cancer) consented to DR, Eve (breast
    cancer) and Fay (lung cancer) to OTHER; both physicians subscribed; the catalogue as built
    already looked at."""
    build(client)
    _put(client, {"resourceType": "Practitioner", "id": "dr-other", "active": True})
    for id, physician, diagnosis in (("carla", DR, "C50.1"), ("dora", DR, "C50.9"),
                                     ("eve", OTHER, "C50.2"), ("fay", OTHER, "C34.1")):
        _patient(client, id, physician, diagnosis)
    look(client, moving)
    _subscribe(client, url, DR)
    _subscribe(client, url, OTHER)


def _told(client: TestClient) -> list[tuple[str, str]]:
    """(study, patient) pairs the job recorded as told."""
    store = client.app.state.context.store  # type: ignore[attr-defined]
    found = client.portal.call(store.outbox, f"{rematch.PREFIX}a/")  # type: ignore[union-attr]
    return sorted(tuple(key.removeprefix(f"{rematch.PREFIX}a/").split("/")) for key, _ in found)  # type: ignore[misc]


def test_only_the_changed_trials_are_evaluated(client: TestClient, hook: Receiver, moving: Frozen) -> None:
    _world(client, hook.url, moving)
    assert _told(client) == []  # the catalogue as built was looked at before anyone subscribed
    _trial(client, "breast-new")
    report = look(client, moving)
    assert report.studies == 1  # not the 8 trials of the catalogue
    assert report.patients == 4 and (report.pruned, report.evaluated) == (1, 3)  # Fay: no breast cancer
    assert _told(client) == [("breast-new", "carla"), ("breast-new", "dora"), ("breast-new", "eve")]
    # A Location written: the trials it is a site of are re-matched, nothing else.
    _put(client, {"resourceType": "Location", "id": "lyon", "status": "active", "name": "Lyon 3e",
                  "address": {"postalCode": "69003", "country": "FR"}})
    assert look(client, moving).studies == 1  # her2 (Lyon) only
    assert look(client, moving).studies == 0


def test_a_withdrawn_research_consent_is_told_nothing(client: TestClient, hook: Receiver, moving: Frozen) -> None:
    _world(client, hook.url, moving)
    _put(client, {**consent("dora", scope="research", status="inactive"), "id": "dora-research"})
    _put(client, {**consent("eve", actor=OTHER, status="inactive"), "id": "eve-privacy"})
    _trial(client, "breast-new")
    report = look(client, moving)
    assert report.patients == 2 and report.alerts == 1  # Carla told, Fay not matched
    assert _told(client) == [("breast-new", "carla")]


def test_consents_written_or_erased_between_two_passes_are_read_again(
        client: TestClient, hook: Receiver, moving: Frozen) -> None:
    """The job keeps the Consents it read for its next pass (a process's memory) only while
    none is written or erased."""
    _world(client, hook.url, moving)
    _trial(client, "breast-new")
    assert look(client, moving).patients == 4  # read, and kept
    _put(client, {**consent("dora", scope="research", status="inactive"), "id": "dora-research"})
    _trial(client, "breast-newer")
    report = look(client, moving)
    assert (report.patients, report.alerts) == (3, 2)  # Dora's withdrawal read: Carla, Eve told
    client.portal.call(erase, client.app.state.context, "eve", "asked")  # type: ignore[union-attr, attr-defined]
    _trial(client, "breast-newest")
    report = look(client, moving)
    assert (report.patients, report.alerts) == (2, 1)  # Eve's Consents gone with her: Carla only
    _patient(client, "gina", DR, "C50.3")
    assert look(client, moving).patients == 0  # nothing changed in the catalogue: no pass
    _trial(client, "breast-last")
    report = look(client, moving)
    assert (report.patients, report.alerts) == (3, 2)  # Gina, consented since: Carla, Gina


def test_a_consent_ending_between_two_passes_is_read_again(
        client: TestClient, hook: Receiver, moving: Frozen) -> None:
    """What the Consents grant is kept only until a period in them begins or ends."""
    _world(client, hook.url, moving)
    ends = clock.instant(clock.now() + timedelta(seconds=3 * SETTLED))
    _put(client, {**consent("dora", actor=DR, end=ends), "id": "dora-privacy"})
    _trial(client, "breast-new")
    assert look(client, moving).patients == 4  # Dora's consent still in force
    moving.advance(3 * SETTLED)
    _trial(client, "breast-newer")
    report = look(client, moving)
    assert (report.patients, report.alerts) == (3, 2)  # it ended: Carla and Eve only


def test_once_per_trial_version_across_restarts_and_full_rematches(
        client: TestClient, hook: Receiver, moving: Frozen) -> None:
    _world(client, hook.url, moving)
    _trial(client, "breast-new")
    assert look(client, moving).alerts == 3
    ctx = client.app.state.context  # type: ignore[attr-defined]
    first = client.portal.call(rematch.full, ctx)  # type: ignore[union-attr]
    assert first.alerts == 10  # the catalogue as built, looked at before anyone subscribed
    again = client.portal.call(rematch.full, ctx)  # type: ignore[union-attr]
    assert (again.studies, again.patients, again.alerts, again.events) == (8, 4, 0, 0)
    assert look(client, moving).alerts == 0  # nothing changed
    # A new version of its eligibility is a new trial version: told once more.
    _put(client, group("breast-new-criteria", *CRITERIA["breast"][:1]))
    report = look(client, moving)
    assert (report.studies, report.alerts, report.events) == (1, 3, 2)  # DR's two patients in one event
    assert look(client, moving).alerts == 0


def test_a_pass_takes_the_patients_of_one_subscription_together(
        client: TestClient, hook: Receiver, moving: Frozen, monkeypatch: pytest.MonkeyPatch) -> None:
    """So that an event names many of its physician's patients, however their ids interleave
    with other physicians' (one event per subscription and trial in each chunk)."""
    _world(client, hook.url, moving)
    _patient(client, "bea", OTHER, "C50.4")  # ids: bea (OTHER), carla, dora (DR), eve (OTHER)
    _put(client, {**consent("fay", scope="research", status="inactive"), "id": "fay-research"})
    monkeypatch.setattr(rematch, "CHUNK", 2)
    _trial(client, "breast-new")
    report = look(client, moving)
    assert (report.patients, report.alerts, report.events) == (4, 4, 2)  # not 4 events: DR's, OTHER's


def test_a_pass_killed_midway_resumes_after_its_last_chunk(
        client: TestClient, hook: Receiver, moving: Frozen, monkeypatch: pytest.MonkeyPatch) -> None:
    _world(client, hook.url, moving)
    _trial(client, "breast-new")
    monkeypatch.setattr(rematch, "CHUNK", 1)
    real = rematch._evaluate
    calls = 0

    async def killed(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("killed")  # the process dies: nothing after this runs
        return await real(*args)

    monkeypatch.setattr(rematch, "_evaluate", killed)
    monkeypatch.setattr(rematch.Lease, "release", lambda self: _kept())  # kill -9 gives nothing back
    with pytest.raises(RuntimeError, match="killed"):
        look(client, moving)
    [(_, first)] = _told(client)  # the first of the pass (Carla or Eve: their physician's subscription first)
    store = client.app.state.context.store  # type: ignore[attr-defined]
    [(_, body)] = client.portal.call(store.outbox, rematch.STATE)  # type: ignore[union-attr]
    assert orjson.loads(body)["after"].endswith(f"/{first}") and orjson.loads(body)["batch"] == ["breast-new"]
    with pytest.raises(rematch.Busy):  # the dead process's lease holds until it expires
        look(client, moving)
    moving.advance(rematch.LEASE_SECONDS)
    report = look(client, moving)
    assert (report.studies, report.patients, report.alerts) == (1, 3, 2)  # the other two told
    assert _told(client) == [("breast-new", "carla"), ("breast-new", "dora"), ("breast-new", "eve")]


async def _kept() -> None:
    return None


def test_a_physician_is_notified_of_a_new_match_for_their_patients_only(
        client: TestClient, hook: Receiver, moving: Frozen) -> None:
    _world(client, hook.url, moving)
    dispatch(client)
    _trial(client, "breast-new")  # Carla and Dora (DR's), Eve (OTHER's)
    _trial(client, "lung-new", "lung")  # Fay only (OTHER's)
    look(client, moving)
    dispatch(client, 2)
    assert _heard(client, hook) == {DR: ["breast-new"], OTHER: ["breast-new", "lung-new"]}


def test_an_event_is_sent_only_while_a_patient_it_names_is_still_the_physicians_and_consenting(
        client: TestClient, hook: Receiver, moving: Frozen) -> None:
    _world(client, hook.url, moving)
    ctx = client.app.state.context  # type: ignore[attr-defined]
    assert client.portal.call(still_news, ctx, ("carla", "dora"), DR)  # type: ignore[union-attr]
    assert not client.portal.call(still_news, ctx, ("eve",), DR)  # type: ignore[union-attr]  # OTHER's
    assert not client.portal.call(still_news, ctx, (), DR)  # type: ignore[union-attr]  # a write's own
    _put(client, {**consent("eve", actor=OTHER, status="inactive"), "id": "eve-privacy"})
    _put(client, {**consent("fay", scope="research", status="inactive"), "id": "fay-research"})
    for gone in ("eve", "fay"):
        assert not client.portal.call(still_news, ctx, (gone,), OTHER)  # type: ignore[union-attr]


def test_the_check_before_sending_reads_the_consents_of_the_patients_named_only(
        client: TestClient, hook: Receiver, moving: Frozen, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not every patient of the physician (hundreds, for each event sent)."""
    _world(client, hook.url, moving)
    ctx = client.app.state.context  # type: ignore[attr-defined]
    read: list[str] = []
    search = type(ctx.store).search

    async def spied(self: Any, query: Any, cursor: Any = None) -> Any:
        page = await search(self, query, cursor)
        read.extend(orjson.loads(v.body)["patient"]["reference"] for v in page.matches
                    if v.resource_type == "Consent" and v.body is not None)
        return page

    monkeypatch.setattr(type(ctx.store), "search", spied)
    assert client.portal.call(still_news, ctx, ("carla",), DR)  # type: ignore[union-attr]
    assert read and set(read) == {"Patient/carla"}  # not Dora, DR's other patient


def _heard(client: TestClient, hook: Receiver) -> dict[str, list[str]]:
    """The studies each physician's subscription was told of, in order."""
    owners = {s["resource"]["id"]: s["resource"]["criteria"] and _practitioner(s["resource"])
              for s in client.get("/fhir/Subscription").json()["entry"]}
    heard: dict[str, list[str]] = {}
    for notification in hook.of_kind("event-notification"):
        entries = notification.json()["entry"]
        reference = next(p["valueReference"]["reference"] for p in entries[0]["resource"]["parameter"]
                         if p["name"] == "subscription")
        heard.setdefault(owners[reference.rsplit("/", 1)[-1]], []).extend(
            e["fullUrl"].rsplit("/", 1)[-1] for e in entries[1:])
    return {owner: sorted(studies) for owner, studies in heard.items()}


def _practitioner(subscription: dict[str, Any]) -> str:
    [text] = [e["valueString"] for e in subscription["_criteria"]["extension"]]
    return str(text.partition("practitioner=")[2])


def test_an_erased_patient_leaves_no_record_of_what_they_were_told(
        client: TestClient, hook: Receiver, moving: Frozen) -> None:
    _world(client, hook.url, moving)
    _trial(client, "breast-new")
    look(client, moving)
    assert ("breast-new", "carla") in _told(client)
    client.portal.call(erase, client.app.state.context, "carla", "asked")  # type: ignore[union-attr, attr-defined]
    told = _told(client)
    assert all(patient != "carla" for _, patient in told), told
    assert ("breast-new", "dora") in told  # only hers
