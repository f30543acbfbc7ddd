"""The parameters the audit trail is searched by (docs/audit.md, "Searching the trail").

Every request leaves an AuditEvent per patient it touched, and each indexed value is a row
of each of them: the trail is indexed under the parameters patients and auditors search by,
and AuditEvent's `address`, `agent-name` and `entity-role` are neither indexed nor offered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.search.registry import NOT_OFFERED
from fhir_server.settings import Settings
from tests.builders import patient
from tests.conftest import authorized, token
from tests.http.helpers import send

UNOFFERED = ("address", "agent-name", "entity-role")


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        assert send(client, "PUT", "/fhir/Patient/a", {**patient(), "id": "a"}).status_code == 201
        yield client


def test_the_capability_statement_offers_only_what_is_indexed(client: TestClient) -> None:
    assert {("AuditEvent", code) for code in UNOFFERED} == NOT_OFFERED
    resources = client.get("/fhir/metadata").json()["rest"][0]["resource"]
    [audit] = [r for r in resources if r["type"] == "AuditEvent"]
    offered = {p["name"] for p in audit["searchParam"]}
    assert not offered & set(UNOFFERED)
    assert {"patient", "entity", "entity-name", "agent", "altid", "date", "type", "subtype",
            "action", "outcome"} <= offered


@pytest.mark.parametrize("code", UNOFFERED)
def test_a_search_by_an_unoffered_parameter_is_refused_when_strict(client: TestClient, code: str) -> None:
    headers = {"Prefer": "handling=strict"}
    response = client.get(f"/fhir/AuditEvent?{code}=testclient", headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "MSG_PARAM_UNKNOWN"
    # Lenient (the default): ignored, as any unknown parameter, not answered with "no match".
    assert client.get(f"/fhir/AuditEvent?{code}=testclient&_summary=count").json()["total"] > 0


def test_the_trail_keeps_no_rows_under_them(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/fhir/Patient/a").status_code == 200
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        codes = {row[0] for row in conn.execute(
            "SELECT code FROM search_param WHERE rtype = 'AuditEvent'")}
        # `date`, `type`, `subtype`, `action`, `outcome`, `altid`: columns of one row per
        # event (store/sqlite/audit_index.py), no generic rows.
        dated = conn.execute("SELECT count(*) FROM idx_audit WHERE date__low IS NOT NULL").fetchone()[0]
    assert "patient" in codes and dated > 0
    assert not codes & set(UNOFFERED)


def test_the_trail_is_found_by_each_offered_parameter(client: TestClient) -> None:
    site = {"Authorization": f"Bearer {token(client, 'system/*.rs')}"}
    assert client.get("/fhir/Patient/a", headers=site).status_code == 200
    for query in ("patient=Patient/a", "entity=Patient/a", "subtype=read", "action=R", "outcome=0",
                  "altid=test-client", "type=rest", "date=gt2000-01-01"):
        response = client.get(f"/fhir/AuditEvent?{query}&subtype=read&_count=100", headers=site)
        assert response.status_code == 200, response.text
        events = [e["resource"] for e in response.json().get("entry", [])]
        assert any(e["agent"][0].get("altId") == "test-client" for e in events), query
