"""The command line's own duties: `audit verify` refuses a directory without a trail, and every
load and administration command leaves an AuditEvent in the trail the server writes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server import cli
from fhir_server.app import body_codec, open_store
from fhir_server.model.validation import Validator
from fhir_server.search import Query
from fhir_server.settings import Settings
from tests.auth.conftest import es384
from tests.builders import patient

PASSWORD = "correct horse battery staple"


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(cli, "configure", lambda level: None)  # keep pytest's log handlers
    return tmp_path / "data"


def _audit_events(data: Path) -> list[dict[str, Any]]:
    async def search() -> list[dict[str, Any]]:
        settings = Settings(data_dir=data)
        store = open_store(settings.audit_store_url, codec=body_codec(settings))
        await store.open()
        try:
            page = await store.search(Query("AuditEvent", count=100))
        finally:
            await store.close()
        return [orjson.loads(v.body) for v in page.matches if v.body]

    events = sorted(asyncio.run(search()), key=lambda e: str(e["recorded"]))
    assert [Validator().issues(event) for event in events] == [[]] * len(events)  # valid R4
    return events


def _details(event: dict[str, Any]) -> dict[str, str]:
    return {d["type"]: d["valueString"] for d in event["entity"][0].get("detail", [])}


def test_audit_verify_without_a_trail_refuses_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FHIR_SERVER_DATA_DIR", raising=False)
    assert cli.main(["audit", "verify"]) == 2
    assert "no audit trail in" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_administration_commands_are_audited(data: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["user", "add", "helene", "--fhir-user", "Patient/helene",
                     "--password", PASSWORD]) == 0
    assert cli.main(["client", "add-app", "portal", "--scope", "openid patient/*.rs",
                     "--redirect-uri", "https://portal.example.org/cb", "--confidential"]) == 0
    secret = capsys.readouterr().out.split("store it in the app's configuration): ")[1].strip()
    keys = tmp_path / "site.jwks"
    keys.write_bytes(orjson.dumps(es384("site").jwks()))
    assert cli.main(["client", "add-backend", "site", "--scope", "system/Communication.rs",
                     "--jwks", str(keys)]) == 0
    assert cli.main(["keys", "rotate"]) == 0

    user, app, backend, rotation = _audit_events(data)
    assert [e["subtype"][0]["display"] for e in (user, app, backend, rotation)] == [
        "User Security Attributes Changed", *["Security Configuration"] * 3]
    assert {e["type"]["code"] for e in (user, app, backend, rotation)} == {"110113"}
    assert user["entity"][0]["what"] == {"reference": "Patient/helene"}  # hers to read
    assert user["entity"][0]["name"] == "helene" and _details(user) == {"administrator": "False"}
    assert _details(app)["kind"] == "confidential" and _details(backend)["kind"] == "backend"
    assert rotation["action"] == "U" and rotation["agent"][0]["altId"] == "fhir-server keys rotate"
    everything = orjson.dumps(_audit_events(data)).decode()
    assert PASSWORD not in everything and secret not in everything
    assert cli.main(["audit", "verify"]) == 0
    assert "4 links checked, intact" in capsys.readouterr().err


def test_each_load_is_audited_with_what_it_did(data: Path, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_bytes(orjson.dumps(patient(id="loaded")))
    bad.write_bytes(orjson.dumps({**patient(id="broken"), "gender": "nope"}))
    assert cli.main(["load", str(good)]) == 0
    assert cli.main(["load", str(good), str(bad)]) == 1
    first, second = _audit_events(data)
    assert first["type"]["display"] == "Import" and first["action"] == "C"
    assert first["outcome"] == "0" and first["entity"][0]["name"] == str(good)
    assert _details(first) == {"files": "1", "resources": "1", "failures": "0", "created": "1"}
    assert second["outcome"] == "4" and second["outcomeDesc"] == "1 failures"
    assert _details(second)["failures"] == "1" and _details(second)["files"] == "2"
