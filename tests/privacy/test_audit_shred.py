"""After a patient's erasure, no AuditEvent that still opens holds their name or identifier:
the query strings of searches on protected parameters are stored without those values."""

from __future__ import annotations

import base64
import sqlite3

import orjson
import pytest

from fhir_server import cli
from fhir_server.app import body_codec
from fhir_server.crypto import UnreadableBody
from fhir_server.services.auditing import without_protected_values
from tests.http.helpers import send
from tests.privacy.conftest import Server

NAME, IDENTIFIER = "Zelandrixqu", "QXMARK7731"


def _opened_events(server: Server) -> list[dict]:
    """Every AuditEvent version of the audit store that still decrypts."""
    codec = body_codec(server.settings)
    conn = sqlite3.connect(server.settings.data_dir / "audit.db")
    events = []
    for type_, id, version, body in conn.execute(
            "SELECT type, id, version, body FROM history WHERE body IS NOT NULL"):
        try:
            events.append(orjson.loads(codec.open(type_, id, version, body)))
        except UnreadableBody:
            continue
    conn.close()
    return events


def _queries(events: list[dict]) -> list[str]:
    return [base64.b64decode(entity["query"]).decode() for event in events
            for entity in event.get("entity", []) if "query" in entity]


def test_searches_on_an_erased_patients_name_leave_no_readable_trace(
        sqlite_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    client = sqlite_server.client
    assert send(client, "PUT", "/fhir/Patient/m", {
        "resourceType": "Patient", "id": "m", "name": [{"family": NAME}], "birthDate": "1961-07-23",
        "identifier": [{"system": "urn:x", "value": IDENTIFIER}]}).status_code == 201
    searches = [f"Patient?name={NAME}", f"Patient?identifier=urn:x|{IDENTIFIER}",
                f"Patient?name={NAME}&gender=unknown", f"Observation?subject:Patient.name={NAME}",
                f"Patient?name:exact={NAME}&_count=0", f"Patient?family={NAME.lower()}",
                "Patient?birthdate=1961-07-23"]
    for search in searches:
        assert client.get(f"/fhir/{search}").status_code == 200, search
    assert send(client, "POST", "/fhir/Patient", {"resourceType": "Patient"},
                If_None_Exist=f"identifier=urn:x|{IDENTIFIER}").status_code == 200

    # The auditors' events keep each query, the protected values replaced, the rest as sent.
    queries = _queries(_opened_events(sqlite_server))
    assert "name=***&gender=unknown" in queries
    assert "subject:Patient.name=***" in queries
    assert "identifier=***" in queries
    assert "birthdate=***" in queries

    assert sqlite_server.erase("m").status_code == 200
    for event in _opened_events(sqlite_server):
        text = orjson.dumps(event).decode() + " ".join(_queries([event]))
        assert NAME.lower() not in text.lower() and IDENTIFIER not in text, event
        assert "1961-07-23" not in text, event
    assert cli.main(["audit", "verify"]) == 0
    assert "intact" in capsys.readouterr().err


@pytest.mark.parametrize(("query", "kept"), [
    ("name=Ann&gender=female", "name=***&gender=female"),
    ("family:contains=ann&_count=5", "family:contains=***&_count=5"),
    ("subject:Patient.identifier=urn:x|42&code=1234-5", "subject:Patient.identifier=***&code=1234-5"),
    ("_has:Observation:patient:code=1234-5&telecom=555", "_has:Observation:patient:code=1234-5&telecom=***"),
    ("fa%6Dily=Ann", "fa%6Dily=***"),  # an encoded parameter name is still a name
    ("_content=Ann%20Smith&_sort=family", "_content=***&_sort=family"),
    ("name=&_id=a", "name=&_id=a"),  # nothing to hide
])
def test_only_the_values_of_personal_parameters_are_replaced(query: str, kept: str) -> None:
    assert without_protected_values(query) == kept
