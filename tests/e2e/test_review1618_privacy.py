"""Review of the person's rights over real HTTP (issues 16 and 18), against `serve --workers 2`,
so that a poll or a download may reach either worker: the asynchronous `$erase` answers 202
then its outcome to the patient who asked, and 404 to another patient, on every poll; the
asynchronous `$everything`'s status and files likewise; the CSV export neutralises formulas."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
import zipfile

import httpx2 as httpx

from tests.builders import observation, patient
from tests.e2e.conftest import Server

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _seed(server: Server) -> tuple[str, str]:
    """Two patients (fresh ids: the module's server is shared), one with an Observation whose
    text is a formula."""
    first, second = f"p{uuid.uuid4().hex[:12]}", f"p{uuid.uuid4().hex[:12]}"
    with server.client() as http:
        for id in (first, second):
            assert http.put(f"/Patient/{id}", content=json.dumps({**patient(), "id": id}),
                            headers=FHIR).status_code == 201
        body = {**observation(f"Patient/{first}"), "id": f"{first}-obs", "code": {"text": "=1+2"}}
        assert http.put(f"/Observation/{first}-obs", content=json.dumps(body),
                        headers=FHIR).status_code == 201
    return first, second


def _as(server: Server, id: str) -> dict[str, str]:
    token = server.token("patient/*.cruds", subject=f"user-{id}", patient=id, fhir_user=f"Patient/{id}")
    return {**FHIR, "Authorization": f"Bearer {token}"}


def _polled(url: str, mine: dict[str, str], theirs: dict[str, str]) -> httpx.Response:
    """Poll `url` (a new connection each time, so either worker answers) until it is done;
    every poll of the other patient is 404."""
    for _ in range(300):
        assert httpx.get(url, headers=theirs).status_code == 404
        response = httpx.get(url, headers=mine)
        assert response.status_code in (200, 202), response.text
        if response.status_code == 200:
            return response
        time.sleep(0.05)
    raise AssertionError(f"{url} did not end")


def test_async_erase_is_answered_by_every_worker(server: Server) -> None:
    first, second = _seed(server)
    mine, theirs = _as(server, first), _as(server, second)
    body = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "my right"}]}
    response = httpx.post(f"{server.base}/fhir/Patient/{first}/$erase", content=json.dumps(body),
                          headers={**mine, "Prefer": "respond-async"})
    assert response.status_code == 202, response.text
    done = _polled(response.headers["content-location"], mine, theirs)
    assert done.json()["parameter"][0]["valueReference"] == {"reference": f"Patient/{first}"}
    for _ in range(6):  # answered alike, whichever worker
        assert httpx.get(response.headers["content-location"], headers=mine).json() == done.json()
    with server.client() as http:
        assert http.get(f"/Patient/{first}").status_code == 404


def test_async_everything_files_are_the_callers_only(server: Server) -> None:
    first, second = _seed(server)
    mine, theirs = _as(server, first), _as(server, second)
    response = httpx.get(f"{server.base}/fhir/Patient/{first}/$everything",
                         headers={**mine, "Prefer": "respond-async"})
    assert response.status_code == 202, response.text
    manifest = _polled(response.headers["content-location"], mine, theirs).json()
    assert manifest["output"]
    for output in manifest["output"]:
        assert httpx.get(output["url"], headers=theirs).status_code == 404
        assert httpx.get(output["url"]).status_code in (401, 404)
        got = httpx.get(output["url"], headers=mine)
        assert got.status_code == 200 and got.headers["content-type"].startswith("application/fhir+ndjson")
    assert httpx.get(f"{server.base}/fhir/Patient/{first}/$everything",
                     headers=theirs).status_code == 404


def test_the_csv_export_neutralises_formulas(server: Server) -> None:
    first, second = _seed(server)
    url = f"{server.base}/fhir/Patient/{first}/$record-export?format=csv&language=fr"
    assert httpx.get(url, headers=_as(server, second)).status_code == 404
    response = httpx.get(url, headers=_as(server, first))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    rows = list(csv.reader(io.StringIO(archive.read("Observation.csv").decode("utf-8-sig"))))
    assert rows[0][:3] == ["Type", "Date", "Intitulé"]
    assert rows[1][rows[0].index("code.text")] == "'=1+2"
    unsupported = httpx.get(url.replace("csv", "docx"), headers=_as(server, first))
    assert unsupported.status_code == 400
    assert unsupported.json()["issue"][0]["expression"] == ["format"]
