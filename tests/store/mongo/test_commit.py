"""How a unit's commit is bounded and what its failures tell the client (issue 22, second
review): maxCommitTimeMS under the client's timeoutMS, a commit whose outcome is unknown, and
driver errors no new attempt can cure."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import _csot
from pymongo.asynchronous.client_session import TransactionOptions, _TxnState
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ExecutionTimeout, OperationFailure
from pymongo.read_concern import ReadConcern

from fhir_server import clock
from fhir_server.model.errors import FhirError, Kind
from fhir_server.search import default_registry, extract, parse_query
from fhir_server.store.base import ConditionalDelete, OperationFailed, Write
from fhir_server.store.mongo import MongoStore
from fhir_server.store.mongo.store import (
    ATTEMPT_SECONDS,
    DURABLE,
    MAX_COMMIT_SECONDS,
    MAX_DOCUMENT_WRITES,
    _commit,
    _MongoUnit,
)
from tests.builders import patient
from tests.store.mongo_double import DoubleClient

pytestmark = pytest.mark.anyio
AT = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)


def _patient(id: str) -> Write:
    resource = {**patient(), "resourceType": "Patient", "id": id}
    return Write("Patient", id, resource, extract(resource))


def _basic(id: str) -> Write:
    resource = {"resourceType": "Basic", "id": id, "code": {"text": "x"}}
    return Write("Basic", id, resource, extract(resource))


def _unknown_outcome() -> OperationFailure:
    return OperationFailure("network", 6, {"codeName": "HostUnreachable",
                                           "errorLabels": ["UnknownTransactionCommitResult"]})


@pytest.fixture
async def store() -> AsyncIterator[MongoStore]:
    opened = MongoStore(DoubleClient())
    await opened.migrate()
    await opened.open()
    yield opened
    await opened.close()


def _double(store: MongoStore) -> DoubleClient:
    assert isinstance(store.client, DoubleClient)
    return store.client


async def test_the_commit_is_bounded_by_max_commit_seconds_not_the_client_timeout(
        store: MongoStore) -> None:
    double = _double(store)
    assert double.timeout == 10.0  # what MongoStore.from_url gives its client
    await store.commit([_patient("p1")])
    [bound] = double.commit_bounds
    assert bound is not None and 0 < bound <= MAX_COMMIT_SECONDS


@pytest.fixture
def pymongo_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[dict[str, Any], float | None]]]:
    """What real PyMongo sends for the store's commit, on MongoStore.from_url's client: the
    commitTransaction command and the deadline in force when it goes to the connection
    (which turns what remains into the command's maxTimeMS)."""
    sent: list[tuple[dict[str, Any], float | None]] = []

    async def command(self: Any, conn: Any, cmd: dict[str, Any], **_: Any) -> dict[str, Any]:
        sent.append((dict(cmd), _csot.remaining()))
        return {"ok": 1}

    monkeypatch.setattr(AsyncDatabase, "_command", command)
    yield sent


async def test_pymongo_sends_the_commit_with_the_commit_bound(
        pymongo_commit: list[tuple[dict[str, Any], float | None]]) -> None:
    store = MongoStore.from_url("mongodb://127.0.0.1:1/fhir")
    client = store.client

    @_csot.apply  # as AsyncMongoClient._retry_internal: the client's timeoutMS if none is set
    async def retry_internal(self: Any, func: Any, session: Any, bulk: Any, **_: Any) -> Any:
        return await func(session, None, False)

    client._retry_internal = types.MethodType(retry_internal, client)  # no server to select
    session = client.start_session()
    session._transaction.opts = TransactionOptions(ReadConcern("snapshot"), DURABLE, None,
                                                   MAX_COMMIT_SECONDS * 1000)
    session._transaction.state = _TxnState.IN_PROGRESS
    try:
        await _commit(session, _MongoUnit(store, session))
    finally:
        await client.close()
    [(command, remaining)] = pymongo_commit
    assert client._timeout == 10.0 and "commitTransaction" in command
    assert remaining is not None and 0 < remaining <= MAX_COMMIT_SECONDS


async def test_a_commit_still_unknown_at_its_bound_is_not_reported_as_nothing_stored(
        store: MongoStore) -> None:
    double = _double(store)
    with clock.frozen(AT) as frozen:
        double.fail("commit_transaction", _unknown_outcome(), times=20,
                    effect=lambda: frozen.advance(ATTEMPT_SECONDS + 1))
        with pytest.raises(FhirError) as refused:
            await store.commit([_patient("p1")])
    diagnostics = refused.value.issues[0].diagnostics
    assert refused.value.kind is Kind.BUSY
    assert "may or may not have been stored" in diagnostics and "nothing" not in diagnostics
    assert len(double.commit_bounds) == 1  # not sent again past the bound
    assert len(double.transaction_options) == 1  # nor the unit run again


async def test_an_unknown_outcome_is_sent_again_only_within_max_commit_seconds(
        store: MongoStore) -> None:
    double = _double(store)
    with clock.frozen(AT) as frozen:
        double.fail("commit_transaction", _unknown_outcome(), times=20,
                    effect=lambda: frozen.advance(2))
        with pytest.raises(FhirError) as refused:
            await store.commit([_patient("p1")])
    assert refused.value.kind is Kind.BUSY
    assert len(double.commit_bounds) == MAX_COMMIT_SECONDS // 2 + 1


async def test_an_attempt_cut_short_by_its_deadline_is_too_costly_not_retry_later(
        store: MongoStore) -> None:
    """The server stops a command at the maxTimeMS the attempt's deadline left it."""
    double = _double(store)
    with clock.frozen(AT) as frozen:
        double.fail("bulk_write", ExecutionTimeout(
            "operation exceeded time limit", 50, {"codeName": "MaxTimeMSExpired"}),
            effect=lambda: frozen.advance(ATTEMPT_SECONDS + 1))
        with pytest.raises(FhirError) as refused:
            await store.commit([_patient("p1")])
    assert refused.value.kind is Kind.TOO_LARGE
    assert f"{ATTEMPT_SECONDS} s" in refused.value.issues[0].diagnostics
    assert len(double.transaction_options) == 1
    assert await store.read("Patient", "p1") is None


async def test_a_deterministic_write_error_is_an_incident_not_retry_later(
        store: MongoStore) -> None:
    _double(store).fail("bulk_write", BulkWriteError({"writeErrors": [
        {"index": 0, "code": 16755, "errmsg": "Can't extract geo keys"}]}), times=20)
    with pytest.raises(FhirError) as refused:
        await store.commit([_patient("p1")])
    assert refused.value.kind is Kind.FAULT
    assert "incident" in refused.value.issues[0].diagnostics
    assert await store.read("Patient", "p1") is None


async def test_a_write_error_labelled_retryable_is_retry_later(store: MongoStore) -> None:
    _double(store).fail("bulk_write", OperationFailure(
        "primary stepped down", 189, {"codeName": "PrimarySteppedDown",
                                      "errorLabels": ["RetryableWriteError"]}))
    with pytest.raises(FhirError) as refused:
        await store.commit([_patient("p1")])
    assert refused.value.kind is Kind.BUSY
    assert await store.read("Patient", "p1") is None


async def test_a_conditional_delete_of_many_counts_every_document_it_writes(
        store: MongoStore) -> None:
    """One operation, two document writes per match (resource and history): over the cap
    once the matches' writes are, whatever the operation count."""
    matches = MAX_DOCUMENT_WRITES // 2 + 1
    for start in range(0, matches, 500):
        await store.commit([_basic(f"b{n}") for n in range(start, min(matches, start + 500))])
    query, _ = parse_query("Basic", [("code:text", "x")], default_registry())
    with pytest.raises(OperationFailed) as refused:
        await store.commit([ConditionalDelete(query, multiple=True)])
    assert refused.value.kind is Kind.TOO_LARGE and refused.value.index == 0
    assert f"{MAX_DOCUMENT_WRITES} documents" in refused.value.issues[0].diagnostics
    assert await store.count("Basic") == matches


async def test_a_conditional_delete_within_the_cap_deletes_every_match(store: MongoStore) -> None:
    await store.commit([_basic(f"b{n}") for n in range(3)])
    query, _ = parse_query("Basic", [("code:text", "x")], default_registry())
    [deleted] = await store.commit([ConditionalDelete(query, multiple=True)])
    assert len(deleted.versions) == 3 and await store.count("Basic") == 0
