"""A server on each store with a few patients, and the jobs its store holds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fhir_server.settings import Settings

from tests.builders import condition, observation, patient
from tests.http.helpers import send


def seed(client: TestClient) -> None:
    """Patients a, b and c; two Observations and a Condition each; a Group of a and b."""
    for id in ("a", "b", "c"):
        assert send(client, "PUT", f"/fhir/Patient/{id}", {**patient(family=id), "id": id}).status_code == 201
        for n, status in enumerate(("final", "amended")):
            body = {**observation(f"Patient/{id}", status=status), "id": f"{id}-obs{n}"}
            assert send(client, "PUT", f"/fhir/Observation/{id}-obs{n}", body).status_code == 201
        body = {**condition(f"Patient/{id}"), "id": f"{id}-cond"}
        assert send(client, "PUT", f"/fhir/Condition/{id}-cond", body).status_code == 201
    group = {"resourceType": "Group", "id": "g", "type": "person", "actual": True,
             "member": [{"entity": {"reference": "Patient/a"}}, {"entity": {"reference": "Patient/b"}}]}
    assert send(client, "PUT", "/fhir/Group/g", group).status_code == 201


@pytest.fixture(autouse=True)
def settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MongoDB store lists versions once settled (25 s): at once here, where nothing is in
    flight (a test that wants the wait sets it again)."""
    monkeypatch.setattr("fhir_server.store.mongo.store.SETTLE_SECONDS", 0)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The tests' settings, with files of 4 resources at most: exports split into several."""
    return settings.model_copy(update={"export_file_resources": 4})


@pytest.fixture
def seeded(client: TestClient) -> Iterator[TestClient]:
    seed(client)
    yield client


def jobs(client: TestClient) -> list[str]:
    """The ids of the jobs the app's store holds."""
    store = client.app.state.context.store  # type: ignore[attr-defined]
    return [job.id for job in client.portal.call(store.jobs.all)]  # type: ignore[union-attr]
