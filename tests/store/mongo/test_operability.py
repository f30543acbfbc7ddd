"""The MongoDB store where the server is not a replica set, or not there at all.

Runs on the double (tests/store/mongo_double.py) set to answer as a standalone server, or to
fail as an unreachable one: what FHIR transactions, claims, /readyz and requests do then.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.model.errors import FhirError, Kind
from fhir_server.search import default_registry, extract, parse_query
from fhir_server.settings import Settings
from fhir_server.store.base import ConditionalCreate, Write
from fhir_server.store.mongo.store import MongoStore, _claim_key
from tests.builders import INS_NIR, identified_patient, patient
from tests.http.helpers import send
from tests.store.conftest import migrated_double
from tests.store.mongo_double import DoubleClient


def _write(id: str, resource: dict[str, Any]) -> Write:
    resource = {**resource, "id": id}
    return Write("Patient", id, resource, extract(resource))


def _by_identifier(value: str) -> Any:
    query, issues = parse_query("Patient", [("identifier", f"{INS_NIR}|{value}")], default_registry())
    assert not issues
    return query


@pytest.fixture
def standalone() -> MongoStore:
    """A standalone server, served because told to accept it (its self-check refuses it)."""
    store = migrated_double(DoubleClient(standalone=True))
    store.accept_unsafe = True
    return store


@pytest.mark.anyio
async def test_standalone_refuses_units_of_several_writes(standalone: MongoStore) -> None:
    """One resource at a time works; a multi-resource unit cannot be atomic there."""
    await standalone.open()
    assert standalone.status()["transactions"] is False
    assert "replica set" in standalone.status()["note"]
    [created] = await standalone.commit([_write("s1", patient())])
    assert created.outcome == "created"
    with pytest.raises(FhirError) as several:
        await standalone.commit([_write("s2", patient()), _write("s3", patient())])
    assert several.value.kind is Kind.NOT_SUPPORTED
    with pytest.raises(FhirError) as unit:
        async with standalone.transaction():
            pass
    assert unit.value.kind is Kind.NOT_SUPPORTED
    assert await standalone.read("Patient", "s2") is None


@pytest.mark.anyio
async def test_standalone_claims_are_released_and_stale_ones_taken_over(standalone: MongoStore) -> None:
    """A conditional create leaves no claim behind; a claim a crashed writer left is
    taken over once stale, and the create then goes through."""
    await standalone.open()
    query = _by_identifier("claim")
    [first] = await standalone.commit([ConditionalCreate(query, _write("c1", identified_patient("claim")))])
    assert first.outcome == "created"
    assert await standalone.claims.count_documents({}) == 0
    other = _by_identifier("crashed")
    left = datetime.now(UTC) - timedelta(minutes=5)
    await standalone.claims.insert_one({"_id": _claim_key(other), "at": left})
    [second] = await standalone.commit([ConditionalCreate(other, _write("c2", identified_patient("crashed")))])
    assert second.outcome == "created"
    assert await standalone.claims.count_documents({}) == 0


def _app(tmp_path: Path, store: MongoStore) -> TestClient:
    return TestClient(create_app(Settings(data_dir=tmp_path, base_url="http://testserver/fhir",
                                          auth="off"), store))


def test_standalone_transaction_bundle_is_refused_with_an_outcome(tmp_path: Path, standalone: MongoStore) -> None:
    with _app(tmp_path, standalone) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready"
        assert ready["details"]["transactions"] is False
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0b5e7c2e-0000-4000-8000-000000000001", "resource": patient(),
             "request": {"method": "POST", "url": "Patient"}}]}
        response = send(client, "POST", "/fhir", bundle)
        assert response.status_code == 501
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "replica set" in outcome["issue"][0]["diagnostics"]
        batch = {**bundle, "type": "batch"}
        assert send(client, "POST", "/fhir", batch).json()["entry"][0]["response"]["status"].startswith("201")


@pytest.fixture
def unreachable(tmp_path: Path) -> Iterator[tuple[TestClient, DoubleClient]]:
    double = DoubleClient()
    store = migrated_double(double)
    double.down = True
    with _app(tmp_path, store) as client:
        yield client, double


def test_server_starts_while_mongodb_is_down_and_recovers_when_it_returns(
    unreachable: tuple[TestClient, DoubleClient],
) -> None:
    """/readyz says why it is not ready; requests get 503 with an OperationOutcome, not 500."""
    client, double = unreachable
    down = client.get("/readyz")
    assert down.status_code == 503
    assert "MongoDB does not answer" in down.json()["store"]
    read = client.get("/fhir/Patient/p1")
    assert read.status_code == 503
    assert read.json()["issue"][0]["code"] == "transient"
    write = send(client, "PUT", "/fhir/Patient/p1", {**patient(), "id": "p1"})
    assert write.status_code == 503
    double.down = False
    assert client.get("/readyz").json() == {"status": "ready", "details": {
        "kind": "mongodb", "transactions": True, "topology": "replica set double",
        "transaction_lifetime_seconds": 60, "audit": {"kind": "sqlite", "transactions": True}}}
    assert send(client, "PUT", "/fhir/Patient/p1", {**patient(), "id": "p1"}).status_code == 201
    assert client.get("/fhir/Patient/p1").status_code == 200
