"""What a real replica set or sharded cluster would expose and the lenient double did not
(issue 22), on the strict double (tests/store/mongo_double.py): transaction and database
concerns, no index builds while serving, batched and targeted look-ups, id guards, caps and
bounded attempts, oversized documents and driver errors, `_since` that never misses a
version, and the self-check."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import Primary, Secondary
from pymongo.write_concern import WriteConcern

from fhir_server import clock
from fhir_server.app import create_app
from fhir_server.cli import main
from fhir_server.model.errors import FhirError, Kind
from fhir_server.search import Query, default_registry, extract, parse_query
from fhir_server.settings import Settings
from fhir_server.store.base import HistoryQuery, OperationFailed, Write
from fhir_server.store.mongo import MongoStore
from fhir_server.store.mongo.store import (
    ATTEMPT_SECONDS,
    MAX_OPERATIONS,
    SETTLE_SECONDS,
    UnsafeDeployment,
)
from tests.builders import patient
from tests.http.helpers import send
from tests.store.conftest import migrated_double
from tests.store.mongo_double import DoubleClient, Options

pytestmark = pytest.mark.anyio
AT = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)


def _write(resource_type: str, id: str, resource: dict[str, Any]) -> Write:
    resource = {**resource, "resourceType": resource_type, "id": id}
    return Write(resource_type, id, resource, extract(resource))


def _observation(id: str, patient_id: str) -> Write:
    return _write("Observation", id, {"status": "final", "code": {"text": "weight"},
                                      "subject": {"reference": f"Patient/{patient_id}"}})


def _transient(code_name: str = "WriteConflict") -> OperationFailure:
    return OperationFailure(code_name, 112, {"codeName": code_name,
                                             "errorLabels": ["TransientTransactionError"]})


@pytest.fixture
async def store() -> AsyncIterator[MongoStore]:
    opened = await _migrated()
    await opened.open()
    yield opened
    await opened.close()


async def _migrated(client: DoubleClient | None = None) -> MongoStore:
    store = MongoStore(client or DoubleClient())
    await store.migrate()
    return store


def _double(store: MongoStore) -> DoubleClient:
    assert isinstance(store.client, DoubleClient)
    return store.client


@pytest.fixture
def http(tmp_path: Path) -> Iterator[tuple[TestClient, MongoStore]]:
    store = migrated_double()
    app = create_app(Settings(data_dir=tmp_path, base_url="http://testserver/fhir", auth="off"),
                     store)
    with TestClient(app) as client:
        yield client, store


# 1 -------------------------------------------------------------------------------------------


async def test_every_transaction_reads_a_snapshot_and_commits_durably(store: MongoStore) -> None:
    await store.commit([_write("Patient", "p1", patient())])
    [options] = _double(store).transaction_options
    assert options.read_concern is not None and options.read_concern.level == "snapshot"
    assert options.write_concern is not None
    assert options.write_concern.document == {"w": "majority", "j": True}
    assert isinstance(options.read_preference, Primary)
    assert options.max_commit_time_ms == 5000


# 2 -------------------------------------------------------------------------------------------


async def test_a_connection_string_cannot_weaken_durability_or_read_preference() -> None:
    weak = DoubleClient(url_options=Options(read_concern=ReadConcern("local"),
                                            write_concern=WriteConcern(w=1),
                                            read_preference=Secondary()))
    store = await _migrated(weak)
    await store.open()
    [created] = await store.commit([_write("Patient", "p1", patient())])  # reads on the primary
    assert created.outcome == "created"
    asked = weak.database_options["fhir"]
    assert asked.write_concern is not None
    assert asked.write_concern.document == {"w": "majority", "j": True}
    assert isinstance(asked.read_preference, Primary)
    assert asked.read_concern is not None and asked.read_concern.level == "majority"
    real = MongoStore.from_url(
        "mongodb://db.invalid/fhir?w=1&readPreference=secondary&readConcernLevel=local")
    try:
        assert real.db.read_concern.level == "majority"
        assert real.db.write_concern.document == {"w": "majority", "j": True}
        assert isinstance(real.db.read_preference, Primary)
    finally:
        await real.close()


async def test_the_clusters_default_concerns_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fhir_server.store.mongo")
    store = await _migrated()
    await store.open()
    [record] = [r for r in caplog.records if r.getMessage() == "mongodb deployment"]
    assert record.defaultWriteConcern == {"w": "majority", "wtimeout": 0}
    assert record.defaultReadConcern == {"level": "local"}


# 3 -------------------------------------------------------------------------------------------


async def test_indexes_are_built_by_migrate_never_while_serving() -> None:
    double = DoubleClient()
    with pytest.raises(UnsafeDeployment, match="fhir-server migrate"):
        await MongoStore(double).open()
    store = await _migrated(double)
    await store.open()
    double.calls.clear()
    await store.commit([_write("Patient", "p1", patient())])
    await store.search(_patient_query())
    assert not [c for c in double.calls if c.method.startswith("create_index")]


def _patient_query() -> Query:
    query, issues = parse_query("Patient", [("gender", "female")], default_registry())
    assert not issues
    return query


def test_migrate_command_prepares_a_sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    assert main(["migrate"]) == 0
    assert (tmp_path / "fhir.db").exists() and (tmp_path / "audit.db").exists()
    assert "migrated" in capsys.readouterr().out


# 4 -------------------------------------------------------------------------------------------


async def test_a_large_unit_looks_up_and_writes_in_batches(store: MongoStore) -> None:
    double = _double(store)
    double.calls.clear()
    await store.commit([_observation(f"o{n}", "p1") for n in range(50)])
    trips = [c for c in double.calls if c.in_transaction]
    # One targeted look-up, one guard look-up for the misses, one bulk write per collection.
    assert len(trips) <= 5, [(c.collection, c.method) for c in trips]
    assert await store.count("Observation") == 50


async def test_a_unit_over_the_operation_cap_is_refused_whole(store: MongoStore) -> None:
    writes = [_write("Patient", f"p{n}", {}) for n in range(MAX_OPERATIONS + 1)]
    with pytest.raises(FhirError) as refused:
        await store.commit(writes)
    assert refused.value.kind is Kind.TOO_LARGE
    assert f"{MAX_OPERATIONS}" in refused.value.issues[0].diagnostics
    assert await store.count("Patient") == 0


async def test_an_attempt_that_ran_too_long_is_not_retried(store: MongoStore) -> None:
    double = _double(store)
    with clock.frozen(AT) as frozen:
        double.fail("commit_transaction", _transient(),
                    effect=lambda: frozen.advance(ATTEMPT_SECONDS + 1))
        with pytest.raises(FhirError) as refused:
            await store.commit([_write("Patient", "p1", patient())])
    assert refused.value.kind is Kind.TOO_LARGE
    assert f"{ATTEMPT_SECONDS} s" in refused.value.issues[0].diagnostics
    assert len(double.transaction_options) == 1
    assert await store.read("Patient", "p1") is None


async def test_a_transaction_too_large_for_the_cache_is_not_retried(store: MongoStore) -> None:
    double = _double(store)
    double.fail("bulk_write", _transient("TransactionTooLargeForCache"), times=20)
    with pytest.raises(FhirError) as refused:
        await store.commit([_write("Patient", "p1", patient())])
    assert refused.value.kind is Kind.TOO_LARGE
    assert len(double.transaction_options) == 1


async def test_a_write_conflict_is_run_again(store: MongoStore) -> None:
    double = _double(store)
    double.fail("bulk_write", _transient())
    [created] = await store.commit([_write("Patient", "p1", patient())])
    assert created.outcome == "created"
    assert len(double.transaction_options) == 2


async def test_a_commit_with_an_unknown_outcome_is_sent_again(store: MongoStore) -> None:
    double = _double(store)
    double.fail("commit_transaction", OperationFailure(
        "network", 6, {"codeName": "HostUnreachable",
                       "errorLabels": ["UnknownTransactionCommitResult"]}))
    [created] = await store.commit([_write("Patient", "p1", patient())])
    assert created.outcome == "created"
    assert len(double.transaction_options) == 1  # the commit again, not the whole unit
    assert await store.history_docs.count_documents({"id": "p1"}) == 1


def test_a_transaction_bundle_over_the_cap_gets_413_and_stores_nothing(
        http: tuple[TestClient, MongoStore]) -> None:
    client, _ = http
    entries = [{"resource": {"resourceType": "Basic", "id": f"b{n}", "code": {"text": "x"}},
                "request": {"method": "PUT", "url": f"Basic/b{n}"}}
               for n in range(MAX_OPERATIONS + 1)]
    refused = send(client, "POST", "/fhir", {"resourceType": "Bundle", "type": "transaction",
                                             "entry": entries})
    assert refused.status_code == 413
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert f"limit of {MAX_OPERATIONS}" in refused.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Basic/b0").status_code == 404


# 5, 6 ----------------------------------------------------------------------------------------


async def test_each_id_has_one_guard_written_with_its_resource(store: MongoStore) -> None:
    double = _double(store)
    await store.commit([_observation("o1", "a")])
    assert await store.guards.find_one({"_id": "Observation/o1"}) == {
        "_id": "Observation/o1", "shard": "Patient/a"}
    assert any(c.collection == "ids" and c.method == "bulk_write" and c.in_transaction
               for c in double.calls)
    # The same id for another patient is that resource moving, not a second resource.
    [moved] = await store.commit([_observation("o1", "b")])
    assert moved.outcome == "updated" and moved.version is not None and moved.version.version == 2
    assert await store.resources.count_documents({"id": "o1"}) == 1
    assert (await store.guards.find_one({"_id": "Observation/o1"}))["shard"] == "Patient/b"


async def test_write_path_reads_carry_the_shard_key(store: MongoStore) -> None:
    double = _double(store)
    await store.commit([_observation("o1", "a"), _write("Patient", "a", patient())])
    double.calls.clear()
    await store.commit([_observation("o1", "a"), _observation("o2", "a"),
                        _write("Practitioner", "d1", {})])
    reads = [c for c in double.calls if c.in_transaction and c.method in ("find", "find_one")]
    assert reads
    for call in reads:
        assert call.filter is not None
        shard_key = "shard" if call.collection in ("resources", "history") else "_id"
        assert shard_key in call.filter, call


# 7 -------------------------------------------------------------------------------------------


def test_a_location_off_the_globe_is_refused_naming_the_element(
        http: tuple[TestClient, MongoStore]) -> None:
    client, store = http
    location = {"resourceType": "Location", "id": "l1",
                "position": {"latitude": 95, "longitude": 2.35}}
    put = send(client, "PUT", "/fhir/Location/l1", location)
    assert put.status_code == 422
    assert put.json()["issue"][0]["expression"] == ["Location.position.latitude"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**patient(), "id": "p1"}, "request": {"method": "PUT", "url": "Patient/p1"}},
        {"resource": {**location, "position": {"latitude": 1, "longitude": 181}},
         "request": {"method": "PUT", "url": "Location/l1"}}]}
    refused = send(client, "POST", "/fhir", bundle)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == [
        "Bundle.entry[1].resource.position.longitude"]
    assert client.get("/fhir/Location/l1").status_code == 404
    assert client.get("/fhir/Patient/p1").status_code == 404


# 8 -------------------------------------------------------------------------------------------


async def test_a_document_over_the_size_limit_is_refused_naming_its_entry(store: MongoStore) -> None:
    assert store.deployment is not None
    store.deployment.max_document_size = 4096
    big = {**patient(), "name": [{"text": "x" * 5000}]}
    with pytest.raises(OperationFailed) as refused:
        await store.commit([_write("Patient", "small", patient()), _write("Patient", "big", big)])
    assert refused.value.kind is Kind.TOO_LARGE and refused.value.index == 1
    assert await store.read("Patient", "small") is None


async def test_other_driver_errors_in_a_transaction_give_an_outcome(store: MongoStore) -> None:
    _double(store).fail("bulk_write", OperationFailure("bad", 2, {"codeName": "BadValue"}))
    with pytest.raises(FhirError) as refused:
        await store.commit([_write("Patient", "p1", patient())])
    assert refused.value.kind is Kind.FAULT
    assert "incident" in refused.value.issues[0].diagnostics


# 9 -------------------------------------------------------------------------------------------


async def test_since_never_shows_a_version_a_running_unit_could_still_precede(
        store: MongoStore) -> None:
    """A unit stamps its versions when it starts and commits within SETTLE_SECONDS (or not at
    all); `_since` lists only versions older than that, so a client that polls with the
    newest lastUpdated it saw never misses one committed later."""
    with clock.frozen(AT) as frozen:
        [first] = await store.commit([_write("Patient", "p1", patient())])
        assert first.version is not None
        frozen.advance(1)
        async with store.transaction() as unit:  # stamped now, committed late
            await unit.apply([_write("Patient", "p2", patient())])
            frozen.advance(ATTEMPT_SECONDS - 2)
        since = HistoryQuery(since=first.version.last_updated)
        assert (await store.history(since)).versions == ()  # neither has settled yet
        frozen.advance(SETTLE_SECONDS)
        assert {v.id for v in (await store.history(since)).versions} == {"p1", "p2"}
        with pytest.raises(FhirError) as refused:  # past its attempt bound: rolled back
            async with store.transaction() as late:
                await late.apply([_write("Patient", "p3", patient())])
                frozen.advance(ATTEMPT_SECONDS + 1)
        assert refused.value.kind is Kind.TOO_LARGE
    assert await store.read("Patient", "p3") is None


# self-check ----------------------------------------------------------------------------------


async def test_a_cluster_with_wrong_shard_keys_is_refused_unless_accepted() -> None:
    double = DoubleClient(sharded=True)
    store = await _migrated(double)
    with pytest.raises(UnsafeDeployment, match="collection resources is sharded on None"):
        await store.open()
    config = double.sync["config"]["collections"]
    config.insert_many([{"_id": "fhir.resources", "key": {"shard": 1, "_id": 1}},
                        {"_id": "fhir.history", "key": {"shard": 1, "_id": 1}},
                        {"_id": "fhir.ids", "key": {"_id": "hashed"}}])
    await store.open()
    assert store.status()["topology"] == "sharded cluster (mongos)"
    assert any("mongos does not hold it, 60 s assumed" in note
               for note in store.status()["notes"])


async def test_a_short_transaction_lifetime_is_a_problem() -> None:
    double = DoubleClient()
    double.transaction_lifetime = 30
    store = await _migrated(double)
    store.accept_unsafe = True
    await store.open()
    assert "transactionLifetimeLimitSeconds is 30 s" in store.status()["problems"][0]


def test_readyz_reports_the_problems_of_an_unsafe_deployment(tmp_path: Path) -> None:
    double = DoubleClient()
    store = MongoStore(double)  # not migrated
    app = create_app(Settings(data_dir=tmp_path, base_url="http://testserver/fhir", auth="off"),
                     store)
    with pytest.raises(UnsafeDeployment):
        with TestClient(app):
            pass
    double.down = True  # starts while MongoDB is away; the check runs when it answers
    with TestClient(app) as client:
        double.down = False
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "fhir-server migrate" in ready.json()["store"]
        assert client.get("/fhir/Patient/p1").status_code == 503
