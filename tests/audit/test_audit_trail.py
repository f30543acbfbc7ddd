"""The audit trail: an AuditEvent per interaction (denials included), a patient reading who
accessed their data, append-only through the API, and a hash chain that detects tampering."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server import cli
from fhir_server.app import body_codec, create_app
from fhir_server.audit.chain import Chain
from fhir_server.search import extract
from fhir_server.settings import Settings
from fhir_server.store.base import Delete, Write
from fhir_server.store.sqlite import SqliteStore
from tests.builders import observation, patient
from tests.conftest import authorized, token
from tests.http.helpers import send


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        for id in ("a", "b"):
            assert send(client, "PUT", f"/fhir/Patient/{id}", {**patient(), "id": id}).status_code == 201
            body = {**observation(f"Patient/{id}"), "id": f"{id}-obs"}
            assert send(client, "PUT", f"/fhir/Observation/{id}-obs", body).status_code == 201
        yield client


def _events(client: TestClient, headers: dict[str, str], query: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/AuditEvent?{query}&_count=100", headers=headers)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _patients(event: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", [])
            if e.get("role", {}).get("code") == "1"}


def test_a_patient_reads_who_accessed_their_data(world: TestClient) -> None:
    site = {"Authorization": f"Bearer {token(world, 'system/Observation.rs')}"}
    assert world.get("/fhir/Observation?subject=Patient/a", headers=site).status_code == 200
    a = {"Authorization": f"Bearer {token(world, 'patient/*.rs', patient='a')}"}
    assert world.get("/fhir/Observation/b-obs", headers=a).status_code == 404  # denied, unseen
    mine = _events(world, a, "patient=Patient/a")
    assert mine and all("Patient/a" in _patients(e) for e in mine)
    searches = [e for e in mine if e["subtype"][0]["code"] == "search-type"]
    assert any(e["agent"][0]["altId"] == "test-client" and e["outcome"] == "0" for e in searches)
    assert not any("Patient/b" in _patients(e) for e in mine)
    assert _events(world, a, "patient=Patient/b") == []  # confined to her compartment


def test_every_interaction_is_audited_denials_included(world: TestClient) -> None:
    admin = {"Authorization": f"Bearer {token(world, 'system/*.rs')}"}
    before = len(_events(world, admin, "_sort=-_lastUpdated"))
    assert world.get("/fhir/Observation", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    events = _events(world, admin, "_sort=-_lastUpdated")
    assert len(events) >= before + 1
    denied = [e for e in events if e["outcome"] == "4" and e.get("outcomeDesc") == "HTTP 401"]
    assert denied and denied[0]["agent"][0]["who"]["display"] == "unauthenticated"
    assert denied[0]["agent"][0]["network"]["address"]


def test_a_search_event_carries_the_query_as_sent(world: TestClient) -> None:
    admin = {"Authorization": f"Bearer {token(world, 'system/*.rs')}"}
    query = "gender=unknown,other&_sort=-_lastUpdated&_count=5"
    assert world.get(f"/fhir/Patient?{query}", headers=admin).status_code == 200
    assert world.get("/fhir/Patient?family=Dupont%20Martin&_count=5", headers=admin).status_code == 200
    events = _events(world, admin, "subtype=search-type&_sort=-_lastUpdated")
    sent = [base64.b64decode(e["query"]).decode() for event in events
            for e in event.get("entity", []) if e.get("role", {}).get("code") == "24"]
    assert query in sent
    # A protected parameter's value (a name) is not kept: test_audit_shred.py.
    assert "family=***&_count=5" in sent
    assert events[0]["agent"][0]["network"]["address"]


def test_a_search_posted_as_a_form_carries_its_parameters_as_its_query(world: TestClient) -> None:
    admin = {"Authorization": f"Bearer {token(world, 'system/*.rs')}",
             "Content-Type": "application/x-www-form-urlencoded"}
    sent = world.post("/fhir/Patient/_search?_count=3", content="gender=unknown&family=Dupont", headers=admin)
    assert sent.status_code == 200, sent.text
    events = _events(world, {"Authorization": admin["Authorization"]}, "subtype=search-type&_sort=-_lastUpdated")
    queries = [base64.b64decode(e["query"]).decode() for event in events
               for e in event.get("entity", []) if e.get("role", {}).get("code") == "24"]
    # The query string and the form body, the name's value not kept (a protected parameter).
    assert "_count=3&gender=unknown&family=***" in queries, queries


def test_the_trail_is_append_only_through_the_api(world: TestClient) -> None:
    event = _events(world, world.headers, "_count=1")[0]  # type: ignore[arg-type]
    forged = {**event, "outcome": "8"}
    assert send(world, "PUT", f"/fhir/AuditEvent/{event['id']}", forged).status_code == 403
    assert world.delete(f"/fhir/AuditEvent/{event['id']}").status_code == 403
    assert send(world, "POST", "/fhir/AuditEvent", {**event, "id": None}).status_code == 403


def _verify(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["audit", "verify"])
    return code, capsys.readouterr().out


def test_the_hash_chain_detects_changes_removals_and_additions(
    world: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert _verify(capsys) == (0, "")
    chain = Chain(tmp_path / "audit-chain.db")
    links = chain.links()
    chain.close()
    [changed], [removed] = links[1].event_ids, links[2].event_ids
    # Changed by someone holding the keys (stored bodies are encrypted: docs/security.md).
    codec = body_codec(Settings(data_dir=tmp_path))
    conn = sqlite3.connect(tmp_path / "audit.db")
    stored = conn.execute("SELECT body FROM history WHERE id = ?", (changed,)).fetchone()[0]
    body = orjson.loads(codec.open("AuditEvent", changed, 1, stored))
    body["outcome"] = "8"
    resealed = codec.seal("AuditEvent", changed, 1, orjson.dumps(body), ())
    conn.execute("UPDATE history SET body = ? WHERE id = ?", (resealed, changed))
    conn.commit()
    conn.close()

    async def tamper() -> None:
        store = SqliteStore(tmp_path / "audit.db", codec=codec)
        await store.open()
        await store.commit([Delete("AuditEvent", removed)])
        extra = {"resourceType": "AuditEvent", "id": "slipped-in", "type": {"code": "rest"},
                 "recorded": "2026-01-01T00:00:00Z", "agent": [{"requestor": True}],
                 "source": {"observer": {"display": "x"}}}
        await store.commit([Write("AuditEvent", "slipped-in", extra, extract(extra))])
        await store.close()

    asyncio.run(tamper())
    code, out = _verify(capsys)
    assert code == 1
    assert f"AuditEvent/{changed} (link 2) was changed" in out
    assert f"AuditEvent/{removed} (link 3) was removed" in out
    assert "AuditEvent/slipped-in is not in the chain" in out


def test_token_requests_are_audited(world: TestClient) -> None:
    """Security events (BALP): every request to the token endpoint, refused ones included."""
    assert world.post("/auth/token", data={"grant_type": "client_credentials",
                                           "client_id": "nobody"}).status_code in (400, 401)
    admin = {"Authorization": f"Bearer {token(world, 'system/*.rs')}"}
    events = _events(world, admin, "type=110114")
    assert any(e["agent"][0]["altId"] == "nobody" and e["outcome"] == "4" for e in events)


def test_a_server_failure_is_audited(world: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception still leaves its AuditEvent (outcome 8), and what the request
    read before failing."""
    from fhir_server.services import crud

    real = crud.read

    async def failing(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **kwargs)
        raise RuntimeError("a fault")

    monkeypatch.setattr(crud, "read", failing)
    failing_client = TestClient(world.app, raise_server_exceptions=False)
    failing_client.headers.update(world.headers)
    assert failing_client.get("/fhir/Patient/a").status_code == 500
    monkeypatch.setattr(crud, "read", real)
    admin = {"Authorization": f"Bearer {token(world, 'system/*.rs')}"}
    failed = [e for e in _events(world, admin, "patient=Patient/a") if e["outcome"] == "8"]
    assert failed and failed[0]["subtype"][0]["code"] == "read"


def test_a_write_keeps_its_audit_record_until_its_events_are_stored(world: TestClient) -> None:
    """The outbox (docs/audit.md, "Writes and crashes"): each write's unit of work keeps the
    request's record; the next unit of work removes it once the events are in the trail."""
    clinical = world.app.state.context.store  # type: ignore[attr-defined]

    def records() -> list[tuple[str, bytes]]:
        return asyncio.run(clinical.outbox("audit/"))

    [(key, body)] = records()  # the last write of the fixture's: not removed yet
    request_id = key.split("/")[2]
    assert [e["id"] for e in orjson.loads(body)] == [request_id]
    admin = {"Authorization": f"Bearer {token(world, 'system/*.rs')}"}
    assert world.get(f"/fhir/AuditEvent/{request_id}", headers=admin).status_code == 200
    assert world.get("/fhir/Patient/a").status_code == 200
    assert records() == [(key, body)]  # a read commits nothing
    assert send(world, "PUT", "/fhir/Patient/c", {**patient(), "id": "c"}).status_code == 201
    [(newer, _)] = records()
    assert newer != key
