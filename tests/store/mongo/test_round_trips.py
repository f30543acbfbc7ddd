"""Round trips to MongoDB per FHIR interaction, counted on the in-process double through the
whole server (issue 15; docs/performance.md, "MongoDB round trips").

A round trip is a collection call or a commit (PyMongo starts a transaction with the first
command sent in it, and a session costs none). The minimum the design allows: one query for
a read and for a search page; for a write, one transaction whose look-ups (the resources by
their shard key, then their `ids` guards) and writes (one bulk write per collection: guards,
resources, history, the audit outbox) do not grow with the number of resources in it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.conftest import authorized
from tests.store.conftest import migrated_double
from tests.store.mongo_double import ORIGIN, Call, DoubleClient

FHIR_JSON = {"content-type": "application/fhir+json"}


def _patient(n: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "meta": {"tag": [{"system": "urn:tags", "code": "bucket"}]},
            "identifier": [{"system": "urn:mrn", "value": f"MRN{n}"}], "name": [{"family": f"F{n}"}]}


class Origin:
    """An ASGI wrapper marking what each HTTP request makes the double do with a fresh
    `ORIGIN` (the tasks the request starts copy it; the app's background tasks, started at
    its start-up, do not), so that a dispatcher round or a periodic task running meanwhile
    is not counted as the request's."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state
        self.last: object = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.last = origin = object()
        token = ORIGIN.set(origin)
        try:
            await self.app(scope, receive, send)
        finally:
            ORIGIN.reset(token)


class Counted:
    """The server on a MongoDB double, and the round trips of each request it answers."""

    def __init__(self, client: TestClient, double: DoubleClient, origin: Origin) -> None:
        self.client = client
        self.double = double
        self.origin = origin

    def __call__(self, send: Callable[[TestClient], Any]) -> tuple[int, int, int]:
        """(status, round trips, transactions) of one request."""
        status = send(self.client).status_code
        mine = self.origin.last
        committed = self.double.commit_origins.count(mine)
        assert self.double.transaction_origins.count(mine) == committed  # none aborted
        return status, len(self.calls()) + committed, committed

    def calls(self) -> list[Call]:
        """The collection calls of the last request."""
        return [call for call in self.double.calls if call.origin is self.origin.last]


@pytest.fixture
def counted(settings: Settings) -> Iterator[Counted]:
    double = DoubleClient()
    origin = Origin(create_app(settings, migrated_double(double)))
    with authorized(TestClient(origin)) as client:
        yield Counted(client, double, origin)


def test_a_read_and_a_search_page_are_one_query_each(counted: Counted) -> None:
    created = counted.client.post("/fhir/Patient", content=orjson.dumps(_patient(0)), headers=FHIR_JSON)
    id = created.json()["id"]
    assert counted(lambda c: c.get(f"/fhir/Patient/{id}")) == (200, 1, 0)
    assert counted(lambda c: c.get("/fhir/Patient?_tag=urn:tags|bucket&_count=20")) == (200, 1, 0)
    assert counted(lambda c: c.get("/fhir/Patient?identifier=urn:mrn|MRN0")) == (200, 1, 0)


def test_a_write_is_one_transaction_of_a_fixed_number_of_round_trips(counted: Counted) -> None:
    def create(n: int) -> Callable[[TestClient], Any]:
        return lambda c: c.post("/fhir/Patient", content=orjson.dumps(_patient(n)), headers=FHIR_JSON)

    # Two look-ups, four bulk writes (the first create has no outbox record to remove, but
    # keeps its own: the same one write), the commit.
    assert counted(create(1)) == (201, 7, 1)
    assert counted(create(2)) == (201, 7, 1)
    entries = [{"resource": {**_patient(n), "id": f"t{n}"},
                "request": {"method": "PUT", "url": f"Patient/t{n}"}} for n in range(100)]
    bundle = orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert counted(lambda c: c.post("/fhir", content=bundle, headers=FHIR_JSON)) == (200, 7, 1)


def test_the_outbox_records_of_a_write_are_one_bulk_write(counted: Counted) -> None:
    counted(lambda c: c.post("/fhir/Patient", content=orjson.dumps(_patient(1)), headers=FHIR_JSON))
    counted(lambda c: c.post("/fhir/Patient", content=orjson.dumps(_patient(2)), headers=FHIR_JSON))
    outbox = [call.method for call in counted.calls() if call.collection == "outbox"]
    assert outbox == ["bulk_write"]
