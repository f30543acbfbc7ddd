"""An erased patient leaves no export file behind, on each store (docs/export.md): the
files are sealed under the export's key, not the patient's, so destroying the patient's keys
would leave them readable (in the store and its backups) until they expire."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.bulk.conftest import jobs
from tests.bulk.helpers import export, status_path, kick_off, wait
from tests.http.helpers import send


def _path(url: str) -> str:
    return "/fhir" + url.split("/fhir", 1)[1]


def _erase(client: TestClient, patient: str) -> None:
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    own = {"Authorization": "Bearer " + tokens.issue(
        subject="p", client_id="portal", scope="patient/*.cruds", patient=patient,
        fhir_user=f"Patient/{patient}")["access_token"]}
    body = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "asked"}]}
    assert send(client, "POST", f"/fhir/Patient/{patient}/$erase", body, **own).status_code == 200


def test_erasure_deletes_the_exports_that_hold_the_patient(seeded: TestClient) -> None:
    holding = export(seeded, "/fhir/$export?_type=Patient,Observation")
    other = status_path(kick_off(seeded, "/fhir/Group/g/$export?_type=Condition&patient=Patient/b"))
    wait(seeded, other)
    assert len(jobs(seeded)) == 2
    _erase(seeded, "a")
    for entry in holding["output"]:
        assert seeded.get(_path(entry["url"])).status_code == 404
    # the export of b alone is kept; the store holds no file naming a
    assert len(jobs(seeded)) == 1 and seeded.get(f"/fhir{other}").status_code == 200
