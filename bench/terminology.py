"""Latency of the terminology operations, in process (issue 20 targets: $lookup and
$validate-code p95 < 5 ms; $expand of 1,000 codes < 50 ms).

Each call goes through the whole ASGI application (middleware, authentication off, routes,
service layer with its access decision and audit record, the terminology engine), one at a
time, on an embedded store. For each operation it prints the wall-clock p50/p95/p99 and the
process CPU per call (the machine is shared: CPU time is the steadier figure); then the same
for the terminology engine alone (no HTTP, access or audit), to show where the time goes.

    .venv/bin/python -m bench.terminology [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import orjson

from bench.common import machine, percentile
from bench.requests import Client
from fhir_server.app import create_app
from fhir_server.crypto import create_key_ring
from fhir_server.settings import Settings
from fhir_server.terminology_service import (CODE_SYSTEM_VALIDATE, EXPAND, LOOKUP,
                                             VALUE_SET_VALIDATE, Inputs, expand, load_catalogue,
                                             lookup, validate_in_system, validate_in_value_set)

OURS = "https://oncotrials.example.org/fhir"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CANCER = f"{OURS}/CodeSystem/cancer-type"
# A value set of 1,116 codes (R4 core, hierarchical): its first 1,000 codes, flat.
ACT_CODES = "http://terminology.hl7.org/ValueSet/v3-ActCode"
DICOM = {"resourceType": "Parameters", "parameter": [
    {"name": "valueSet", "resource": {"resourceType": "ValueSet", "status": "active", "compose": {
        "include": [{"system": "http://dicom.nema.org/resources/ontology/DCM"}]}}},
    {"name": "count", "valueInteger": 1000}]}


def _calls(client: Client) -> dict[str, Callable[[int], Awaitable[int]]]:
    codes = ["AMB", "EMER", "IMP", "HH", "VR", "CASH", "CPTM", "FFS"]

    def get(path: str, **params: str) -> Callable[[int], Awaitable[int]]:
        return lambda i: client("GET", f"/fhir/{path}", query=urlencode(params))

    return {
        "lookup (core)": lambda i: client("GET", "/fhir/CodeSystem/$lookup", query=urlencode(
            {"system": ACT_CODE, "code": codes[i % len(codes)]})),
        "lookup (ours, fr)": get("CodeSystem/$lookup", system=CANCER, code="nsclc",
                                 displayLanguage="fr"),
        "validate-code CodeSystem": get("CodeSystem/$validate-code", url=CANCER, code="lung",
                                        display="Cancer du poumon"),
        "validate-code ValueSet (1,116 codes)": lambda i: client(
            "GET", "/fhir/ValueSet/$validate-code", query=urlencode(
                {"url": ACT_CODES, "system": ACT_CODE, "code": codes[i % len(codes)]})),
        "validate-code ValueSet (is-a)": get("ValueSet/solid-tumour-type/$validate-code",
                                             system=CANCER, code="nsclc"),
        "expand 1,000 of v3-ActCode": get("ValueSet/$expand", url=ACT_CODES, count="1000"),
        "expand v3-ActCode nested (1,116)": get("ValueSet/$expand", url=ACT_CODES),
        "expand 1,000 of DICOM inline (POST)": lambda i: client(
            "POST", "/fhir/ValueSet/$expand", orjson.dumps(DICOM)),
        "expand ours with filter": get("ValueSet/cancer-type/$expand", filter="poumon",
                                       displayLanguage="fr"),
    }


def _engine_calls() -> dict[str, Callable[[int], Awaitable[int]]]:
    catalogue = load_catalogue()
    act_codes = catalogue.resource("ValueSet", ACT_CODES)
    assert act_codes is not None

    def timed(work: Callable[[], object]) -> Callable[[int], Awaitable[int]]:
        async def call(i: int) -> int:
            work()
            return 200
        return call

    return {
        "engine: lookup": timed(lambda: lookup(catalogue, Inputs(
            [("system", CANCER), ("code", "nsclc"), ("displayLanguage", "fr")], LOOKUP))),
        "engine: validate-code CodeSystem": timed(lambda: validate_in_system(catalogue, Inputs(
            [("url", CANCER), ("code", "lung"), ("display", "Cancer du poumon")],
            CODE_SYSTEM_VALIDATE))),
        "engine: validate-code ValueSet (1,116)": timed(lambda: validate_in_value_set(
            catalogue, act_codes, Inputs([("system", ACT_CODE), ("code", "AMB")],
                                         VALUE_SET_VALIDATE))),
        "engine: expand 1,000 of v3-ActCode": timed(lambda: expand(
            catalogue, act_codes, Inputs([("count", "1000")], EXPAND))),
    }


async def _measure(call: Callable[[int], Awaitable[int]], calls: int) -> dict[str, float]:
    for i in range(calls // 10):  # warm-up: first-use indexes, caches
        assert await call(i) == 200
    wall, cpu = [], []
    for i in range(calls):
        started, started_cpu = time.perf_counter(), time.process_time()
        status = await call(i)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        assert status == 200, status
    wall.sort()
    cpu.sort()
    return {"p50": percentile(wall, 50), "p95": percentile(wall, 95), "p99": percentile(wall, 99),
            "cpu_p50": percentile(cpu, 50), "cpu_p95": percentile(cpu, 95)}


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="bench-terminology-"))
    create_key_ring(data / "keyring.json")  # stored data is encrypted (docs/security.md)
    started = time.process_time()
    app = create_app(Settings(data_dir=data, auth="off", publish_definitions=False))
    print(f"app with catalogue: {(time.process_time() - started) * 1000:.0f} ms CPU")
    client = Client(app)
    print(machine())
    async with app.router.lifespan_context(app):
        print(f"{'operation':40} {'p50':>7} {'p95':>7} {'p99':>7}   {'CPU p50':>7} {'CPU p95':>7}  (ms)")
        for name, call in {**_calls(client), **_engine_calls()}.items():
            r = await _measure(call, args.calls)
            print(f"{name:40} {r['p50']:7.2f} {r['p95']:7.2f} {r['p99']:7.2f}   "
                  f"{r['cpu_p50']:7.2f} {r['cpu_p95']:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="measured calls per operation")
    asyncio.run(main(parser.parse_args()))
