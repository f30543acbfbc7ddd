"""The operator loads a licensed code system we may not ship (MedDRA here, fictitious codes in
its official URL) with `fhir-server terminology load`; after a restart `$lookup`,
`$validate-code` and `$expand` answer from it. A file the server cannot hold is refused, nothing kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server import cli
from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.conftest import authorized

MEDDRA = "http://terminology.hl7.org/CodeSystem/mdr"
# Made-up codes and terms in MedDRA's shape (SOC > HLT > PT): no licensed content.
FICTITIOUS = {
    "resourceType": "CodeSystem", "id": "mdr", "url": MEDDRA, "version": "0.0-test",
    "name": "MedDRAFictitious", "status": "active", "content": "complete",
    "hierarchyMeaning": "is-a",
    "concept": [{"code": "90000001", "display": "Fictitious neoplasms SOC", "concept": [
        {"code": "90000100", "display": "Fictitious carcinomas HLT", "concept": [
            {"code": "90001000", "display": "Fictitious breast carcinoma"}]}]}],
}


@pytest.fixture
def data(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setattr(cli, "configure", lambda level: None)  # keep pytest's log handlers
    return settings.data_dir


def _server(settings: Settings) -> Iterator[TestClient]:
    with authorized(TestClient(create_app(settings))) as client:
        yield client


def _lookup(client: TestClient, code: str) -> Any:
    return client.get("/fhir/CodeSystem/$lookup", params={"system": MEDDRA, "code": code})


def _write(path: Path, resource: Any) -> Path:
    path.write_bytes(orjson.dumps(resource))
    return path


def test_a_loaded_code_system_answers_lookup_and_validate_code(
        settings: Settings, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for client in _server(settings):
        assert _lookup(client, "90001000").status_code == 404  # not held before the load

    assert cli.main(["terminology", "load", str(_write(tmp_path / "mdr.json", FICTITIOUS))]) == 0
    assert "restart the server" in capsys.readouterr().out
    assert (data / "terminology" / "CodeSystem-mdr.json").is_file()

    for client in _server(settings):
        found = _lookup(client, "90001000")
        assert found.status_code == 200, found.text
        answer = {p["name"]: p for p in found.json()["parameter"]}
        assert answer["display"]["valueString"] == "Fictitious breast carcinoma"
        assert answer["version"]["valueString"] == "0.0-test"
        parents = [p for p in found.json()["parameter"] if p["name"] == "property"
                   and p["part"][0]["valueCode"] == "parent"]
        assert parents[0]["part"][1]["valueCode"] == "90000100"

        valid = client.get("/fhir/CodeSystem/$validate-code",
                           params={"url": MEDDRA, "code": "90000100"}).json()
        assert valid["parameter"][0] == {"name": "result", "valueBoolean": True}
        unknown = client.get("/fhir/CodeSystem/$validate-code",
                             params={"url": MEDDRA, "code": "10000000"}).json()
        assert unknown["parameter"][0] == {"name": "result", "valueBoolean": False}

        # A value set drawing on it (a SOC and what it holds) can now be expanded.
        soc = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [{
            "system": MEDDRA, "filter": [{"property": "concept", "op": "is-a", "value": "90000100"}]}]}}
        expanded = client.post("/fhir/ValueSet/$expand", headers={"Content-Type": "application/fhir+json"},
                               json={"resourceType": "Parameters", "parameter": [
                                   {"name": "valueSet", "resource": soc},
                                   {"name": "excludeNested", "valueBoolean": True}]})
        assert expanded.status_code == 200, expanded.text
        assert [c["code"] for c in expanded.json()["expansion"]["contains"]] == ["90000100", "90001000"]


@pytest.mark.parametrize(("resource", "reason"), [
    ({**FICTITIOUS, "resourceType": "ValueSet"}, "not a CodeSystem"),
    ({**FICTITIOUS, "content": "not-present", "concept": []}, "content 'complete'"),
    ({**FICTITIOUS, "id": "../escape"}, "needs an id"),
    ({k: v for k, v in FICTITIOUS.items() if k != "url"}, "no url"),
    ({**FICTITIOUS, "url": "https://oncotrials.example.org/fhir/CodeSystem/cancer-type"},
     "ships"),
])
def test_a_file_the_server_cannot_hold_is_refused_and_nothing_kept(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        resource: dict[str, Any], reason: str) -> None:
    assert cli.main(["terminology", "load", str(_write(tmp_path / "bad.json", resource))]) == 1
    assert reason in capsys.readouterr().err
    assert not list((data / "terminology").glob("*"))  # an absent folder globs to nothing
