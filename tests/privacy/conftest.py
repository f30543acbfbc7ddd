"""A server with its own key ring (so its own erasure ledger), on each store, and the
callers erasure knows: the administrator, the patient, and callers without the right."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from fhir_server.app import create_app
from fhir_server.auth.users import Users
from fhir_server.crypto import RECHECK_SECONDS, create_key_ring
from fhir_server.privacy import retention_schedule
from fhir_server.settings import Settings
from tests.builders import condition, observation, patient
from tests.conftest import authorized
from tests.http.helpers import send

ADMIN = "Practitioner/admin"
CALLERS: dict[str, dict[str, Any]] = {
    "admin": dict(subject="admin", client_id="portal", scope="user/*.cruds", fhir_user=ADMIN),
    "patient-a": dict(subject="pa", client_id="portal", scope="patient/*.cruds", patient="a",
                      fhir_user="Patient/a"),
    "patient-b": dict(subject="pb", client_id="portal", scope="patient/*.cruds", patient="b",
                      fhir_user="Patient/b"),
    "physician": dict(subject="dr", client_id="portal", scope="user/*.cruds",
                      fhir_user="Practitioner/dr"),
    "ehr": dict(subject="ehr", client_id="ehr", scope="system/*.cruds"),
}


@dataclass
class Server:
    client: TestClient
    settings: Settings

    def headers(self, caller: str) -> dict[str, str]:
        tokens = self.client.app.state.tokens  # type: ignore[attr-defined]
        return {"Authorization": f"Bearer {tokens.issue(**CALLERS[caller])['access_token']}"}

    def erase(self, patient_id: str, caller: str = "admin", reason: str | None = "asked by "
              "the patient", name: str = "$erase", **headers: str) -> Response:
        body = None if reason is None else {"resourceType": "Parameters", "parameter": [
            {"name": "reason", "valueString": reason}]}
        return send(self.client, "POST", f"/fhir/Patient/{patient_id}/{name}", body,
                    **self.headers(caller), **headers)

    def erase_and_settle(self, patient_id: str, reason: str = "asked by the patient") -> Response:
        """`erase`, then wait until every copy of the data keys forgot the destroyed ones (the
        MongoDB double's store keeps its own copy, as another process would)."""
        response = self.erase(patient_id, reason=reason)
        time.sleep(RECHECK_SECONDS)
        return response

    def poll(self, url: str, caller: str = "admin") -> Response:
        for _ in range(200):
            response = self.client.get(url, headers=self.headers(caller))
            if response.status_code != 202:
                return response
            time.sleep(0.02)
        raise AssertionError("the erasure did not end")


def seed(client: TestClient, who: str, marker: str = "Zwxqvtrudel") -> None:
    """A patient with history: two versions of the Patient, observations, a condition."""
    def put(resource: dict[str, Any]) -> None:
        response = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
        assert response.status_code in (200, 201), response.text

    put({**patient(family=marker), "id": who})
    put({**patient(family=marker, gender="male"), "id": who})
    for n in range(3):
        put({**observation(f"Patient/{who}"), "id": f"{who}-obs{n}"})
    put({**condition(f"Patient/{who}"), "id": f"{who}-cond"})


def spied_children(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The argv of each child process a scheduled run starts (it still starts), the clock
    looked at every 10 ms."""
    monkeypatch.setattr(retention_schedule, "POLL", 0.01)
    started: list[tuple[str, ...]] = []
    spawn = asyncio.create_subprocess_exec

    async def spawned(*argv: str, **options: Any) -> Any:
        started.append(argv)
        return await spawn(*argv, **options)

    monkeypatch.setattr(retention_schedule.asyncio, "create_subprocess_exec", spawned)
    return started


@contextmanager
def serving(kind: str, tmp_path: Path, signing_keys: bytes,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A seeded server on store `kind`, with a key ring of its own; FHIR_SERVER_DATA_DIR and
    FHIR_SERVER_KEY_RING name its files for the commands."""
    from tests.store.conftest import STORES

    data = tmp_path / "data"
    data.mkdir()
    (data / "signing-keys.json").write_bytes(signing_keys)
    ring = tmp_path / "keys" / "keyring.json"
    create_key_ring(ring)
    monkeypatch.setenv("FHIR_SERVER_KEY_RING", str(ring))
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(data))
    settings = Settings(data_dir=data, base_url="http://testserver/fhir", publish_definitions=False)
    store = None if kind == "sqlite" else STORES[kind](data)
    app = create_app(settings, store)
    with authorized(TestClient(app)) as client:
        Users(app.state.oauth.registry).add("admin", "a long enough password", ADMIN, admin=True)
        seed(client, "a")
        seed(client, "b", marker="Keep")
        yield Server(client, settings)


@pytest.fixture(params=["sqlite", "mongodb-double"])
def server(request: pytest.FixtureRequest, tmp_path: Path, signing_keys: bytes,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    with serving(request.param, tmp_path, signing_keys, monkeypatch) as running:
        yield running


@pytest.fixture
def sqlite_server(tmp_path: Path, signing_keys: bytes,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The commands open the stores the settings name: the embedded one."""
    with serving("sqlite", tmp_path, signing_keys, monkeypatch) as running:
        yield running
