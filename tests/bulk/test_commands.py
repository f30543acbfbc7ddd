"""`fhir-server export list|status|cancel` and `fhir-server export organization ORG --out DIR`
(issue 18, reversibility): the organisation's patients' records and its directory as ndjson,
the manifest and SHA-256 checksums; jobs listed, shown and cancelled by the operator."""

from __future__ import annotations

import asyncio
import hashlib
import stat
from pathlib import Path

import orjson
import pytest

from fhir_server import cli
from fhir_server.app import open_context
from fhir_server.services import export
from fhir_server.settings import Settings
from tests.builders import condition, patient


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(cli, "configure", lambda level: None)  # keep pytest's log handlers
    resources = [
        {"resourceType": "Organization", "id": "chu", "name": "CHU"},
        {"resourceType": "Organization", "id": "other", "name": "Other"},
        {"resourceType": "Location", "id": "ward", "managingOrganization": {"reference": "Organization/chu"}},
        {"resourceType": "Practitioner", "id": "dr"},
        {"resourceType": "PractitionerRole", "id": "role", "practitioner": {"reference": "Practitioner/dr"},
         "organization": {"reference": "Organization/chu"}},
        {"resourceType": "Practitioner", "id": "elsewhere"},
        patient(id="in", managingOrganization={"reference": "Organization/chu"}),
        patient(id="out", managingOrganization={"reference": "Organization/other"}),
        {**condition("Patient/in"), "id": "in-cond"}, {**condition("Patient/out"), "id": "out-cond"},
    ]
    source = tmp_path / "seed.ndjson"
    source.write_bytes(b"\n".join(orjson.dumps(r) for r in resources))
    assert cli.main(["load", str(source)]) == 0
    return tmp_path / "data"


def test_an_organisation_gets_its_data_with_a_manifest_and_checksums(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert cli.main(["export", "organization", "chu", "--out", str(out)]) == 0
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    found = set()
    for item in manifest["output"]:
        lines = (out / item["url"]).read_bytes().splitlines()
        assert len(lines) == item["count"]
        found |= {f"{r['resourceType']}/{r['id']}" for r in map(orjson.loads, lines)}
    assert found == {"Organization/chu", "Location/ward", "PractitionerRole/role",
                     "Practitioner/dr", "Patient/in", "Condition/in-cond"}
    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {*(i["url"] for i in manifest["output"]), "manifest.json"}
    for name, digest in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    assert capsys.readouterr().out.startswith(f"6 files in {out}: 1 Organization, 1 Location")
    assert cli.main(["export", "list"]) == 0  # the job is gone once its files are out
    assert capsys.readouterr().out.strip() == "no export jobs"
    assert cli.main(["export", "organization", "nowhere", "--out", str(tmp_path / "x")]) == 1
    assert cli.main(["export", "organization", "chu", "--out", str(out)]) == 1  # not empty


def test_jobs_are_listed_shown_and_cancelled(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def start() -> str:
        async with open_context(Settings()) as ctx:
            return await export.kick_off(ctx, "system", [("_type", "Patient")],
                                         request="http://x/fhir/$export", lenient=False,
                                         policy=export.Policy())

    id = asyncio.run(start())
    assert cli.main(["export", "list"]) == 0
    assert capsys.readouterr().out.startswith(f"{id} queued client cli attempts 0 0 resources")
    assert cli.main(["export", "status", id]) == 0
    assert "0 resources in 0 files" in capsys.readouterr().out
    assert cli.main(["export", "cancel", id]) == 0
    assert cli.main(["export", "status", id]) == 1
    assert "There is no export job" in capsys.readouterr().err
