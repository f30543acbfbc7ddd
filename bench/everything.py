"""`Patient/[id]/$everything` and the PDF export of one large record (issue 18 targets: a
patient with 5,000 resources, $everything p95 < 1 s; the PDF of such a record < 5 s).

One patient is given N resources (Observations on many days, Conditions, Encounters,
Immunizations, a Consent naming a physician), stored by transaction Bundles on an embedded
store. Then, in process through the whole app (authentication, access, audit):
- each page of `$everything?_count=1000` read by the patient's own token, whole record over,
  `--runs` times: p50/p95 of a page and of the whole record;
- the PDF export, `--pdf-runs` times.
CPU time of the process (`time.process_time`) is reported beside wall-clock: the machine is
shared, CPU time is the steadier figure.

    .venv/bin/python -m bench.everything [--resources 5000] [--runs 20] [--pdf-runs 3]
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from bench.common import machine, percentile
from fhir_server.app import create_app
from fhir_server.crypto import create_key_ring
from fhir_server.settings import Settings

PATIENT = "bench-patient"
LOINC = [("29463-7", "Body weight", "kg"), ("8302-2", "Body height", "cm"),
         ("8867-4", "Heart rate", "/min"), ("2339-0", "Glucose", "mg/dL")]


def resources(count: int) -> list[dict[str, Any]]:
    """The patient and `count - 1` resources in their compartment."""
    subject = {"reference": f"Patient/{PATIENT}"}
    made: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": PATIENT, "name": [{"family": "Lefèvre", "given": ["Hélène"]}],
         "birthDate": "1961-02-03"},
        {"resourceType": "Consent", "id": "bench-consent", "status": "active", "patient": subject,
         "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                               "code": "patient-privacy"}]},
         "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
         "provision": {"type": "permit", "period": {"start": "2020-01-01"}}}]
    n = 0
    while len(made) < count:
        day = f"{2000 + n // 365 % 25}-{n % 12 + 1:02d}-{n % 28 + 1:02d}"
        kind = n % 10
        if kind == 0:
            made.append({"resourceType": "Encounter", "id": f"enc-{n}", "status": "finished",
                         "class": {"code": "AMB"}, "subject": subject, "period": {"start": day}})
        elif kind == 1:
            made.append({"resourceType": "Condition", "id": f"cond-{n}", "subject": subject,
                         "code": {"text": f"Affection n° {n} (évolutive)"}, "onsetDateTime": day})
        elif kind == 2:
            made.append({"resourceType": "Immunization", "id": f"imm-{n}", "status": "completed",
                         "patient": subject, "vaccineCode": {"text": "Grippe"}, "occurrenceDateTime": day})
        else:
            code, text, unit = LOINC[n % len(LOINC)]
            made.append({"resourceType": "Observation", "id": f"obs-{n}", "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": text}]},
                         "subject": subject, "effectiveDateTime": day,
                         "valueQuantity": {"value": 50 + n % 70 + 0.25, "unit": unit}})
        n += 1
    return made


def load(client: TestClient, made: list[dict[str, Any]]) -> None:
    for start in range(0, len(made), 500):
        entries = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                   for r in made[start:start + 500]]
        response = client.post("/fhir", content=orjson.dumps(
            {"resourceType": "Bundle", "type": "transaction", "entry": entries}),
            headers={"Content-Type": "application/fhir+json"})
        assert response.status_code == 200, response.text[:500]


def whole_record(client: TestClient, headers: dict[str, str]) -> tuple[list[float], int]:
    """CPU seconds of each page, and the resources read."""
    url: str | None = f"/fhir/Patient/{PATIENT}/$everything?_count=1000"
    pages, seen = [], 0
    while url:
        cpu = time.process_time()
        body = client.get(url, headers=headers).json()
        pages.append(time.process_time() - cpu)
        seen += len(body.get("entry", []))
        url = next((link["url"].removeprefix("http://testserver") for link in body["link"]
                    if link["relation"] == "next"), None)
    return pages, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pdf-runs", type=int, default=3)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-everything-"))
    atexit.register(shutil.rmtree, data, True)  # a key ring and its store: not left in /tmp
    create_key_ring(data / "keyring.json")  # stored bodies encrypted, as by default
    settings = Settings(data_dir=data, base_url="http://testserver/fhir", key_ring=data / "keyring.json")
    app = create_app(settings)
    with TestClient(app) as client:
        client.headers["Authorization"] = "Bearer " + app.state.tokens.issue(
            subject="bench", client_id="bench", scope="system/*.cruds")["access_token"]
        made = resources(args.resources)
        started = time.perf_counter()
        load(client, made)
        print(f"loaded {len(made)} resources in {time.perf_counter() - started:.1f} s")
        headers = {"Authorization": "Bearer " + app.state.tokens.issue(
            subject="p", client_id="portal", scope="patient/*.rs", patient=PATIENT,
            fhir_user=f"Patient/{PATIENT}")["access_token"]}
        page_cpu: list[float] = []
        record_cpu: list[float] = []
        record_wall: list[float] = []
        for _ in range(args.runs):
            wall = time.perf_counter()
            pages, seen = whole_record(client, headers)
            record_wall.append(time.perf_counter() - wall)
            page_cpu += pages
            record_cpu.append(sum(pages))
        print(f"$everything: {seen} entries in {len(pages)} pages of 1,000 (patient token)")
        for name, values in (("page CPU", page_cpu), ("whole record CPU", record_cpu),
                             ("whole record wall", record_wall)):
            ordered = sorted(values)
            print(f"  {name:18} p50 {percentile(ordered, 50) * 1000:7.0f} ms   "
                  f"p95 {percentile(ordered, 95) * 1000:7.0f} ms   (n={len(values)})")
        for language in ("fr",) * args.pdf_runs:
            cpu, wall = time.process_time(), time.perf_counter()
            response = client.get(f"/fhir/Patient/{PATIENT}/$record-export?format=pdf&language={language}",
                                  headers=headers)
            assert response.status_code == 200, response.text[:300]
            print(f"PDF export: {len(response.content) / 1e6:.1f} MB, CPU {time.process_time() - cpu:.2f} s, "
                  f"wall {time.perf_counter() - wall:.2f} s")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
