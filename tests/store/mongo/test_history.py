"""`_history?_since=` on MongoDB (issue 22, second review): an answer lists only settled
versions and says up to when it is complete (Bundle.meta.lastUpdated), so a client polling
with that as its next `_since` misses nothing; the query is bounded by the history index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from fhir_server import clock
from fhir_server.app import create_app
from fhir_server.settings import Settings
from fhir_server.store.mongo.store import SETTLE_SECONDS
from tests.builders import patient
from tests.http.helpers import send
from tests.store.conftest import migrated_double

AT = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)


def _client(tmp_path: Path) -> TestClient:
    app = create_app(Settings(data_dir=tmp_path, base_url="http://testserver/fhir", auth="off"),
                     migrated_double())
    return TestClient(app)


def _put(client: TestClient, id: str) -> None:
    created = send(client, "PUT", f"/fhir/Patient/{id}",
                   {**patient(), "resourceType": "Patient", "id": id})
    assert created.status_code == 201


def test_a_poller_using_bundle_last_updated_as_its_next_since_misses_nothing(
        tmp_path: Path) -> None:
    with clock.frozen(AT) as frozen, _client(tmp_path) as client:
        since = clock.instant()
        seen: set[str] = set()
        written: list[str] = []
        for poll in range(8):  # a sync client polling every 10 s, writes landing in between
            frozen.advance(1)
            written.append(f"p{poll}")
            _put(client, written[-1])
            frozen.advance(9)
            page = client.get("/fhir/Patient/_history", params={"_since": since}).json()
            seen |= {entry["resource"]["id"] for entry in page.get("entry", ())}
            assert page["meta"]["lastUpdated"] == clock.instant(
                clock.now() - timedelta(seconds=SETTLE_SECONDS))
            since = page["meta"]["lastUpdated"]  # the client's next cursor
        frozen.advance(SETTLE_SECONDS)
        page = client.get("/fhir/Patient/_history", params={"_since": since}).json()
        seen |= {entry["resource"]["id"] for entry in page.get("entry", ())}
    assert seen == set(written)


def test_history_without_since_is_stamped_now(tmp_path: Path) -> None:
    with clock.frozen(AT), _client(tmp_path) as client:
        _put(client, "p1")
        page = client.get("/fhir/Patient/_history").json()
    assert page["meta"]["lastUpdated"] == clock.instant(AT)
    assert [entry["resource"]["id"] for entry in page["entry"]] == ["p1"]


def test_since_is_a_range_on_the_indexed_lu_field(tmp_path: Path) -> None:
    store = migrated_double()
    app = create_app(Settings(data_dir=tmp_path, base_url="http://testserver/fhir", auth="off"),
                     store)
    with clock.frozen(AT), TestClient(app) as client:
        assert client.get("/fhir/Patient/_history",
                          params={"_since": "2030-05-06T07:00:00Z"}).status_code == 200
    double = store.client
    # The request's (the server reads the Consents' history at start too: trials/consents_kept.py).
    [call] = [c for c in double.calls if c.collection == "history" and c.method == "find"
              and (c.filter or {}).get("type") == "Patient"]
    assert call.filter is not None and "lastUpdated" not in call.filter
    since = clock.micros(datetime(2030, 5, 6, 7, 0, tzinfo=UTC))
    settled = clock.micros(AT - timedelta(seconds=SETTLE_SECONDS))
    assert call.filter == {"type": "Patient", "lu": {"$gte": since, "$lte": settled}}
