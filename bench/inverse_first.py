"""Issue 17 §7: the investigator's inverse `$match` right after the server starts and right
after a Consent write, on a data directory bench/match_server.py filled, whose figures pass
ran today (its figures are kept: each call is served from them).

1. A real `fhir-server serve` (one worker) starts; an investigator site system calls
   `POST ResearchStudy/{id}/$match` at once (`--settle`: only after the server has read the
   Consents ahead, trials/consents_kept.py, as its log says), then again.
2. Another process (this one) withdraws one patient's research Consent through the store
   (`Store.commit`, as another worker would) and the investigator calls again, then again.

Each call: wall and the server process's CPU (/proc: utime + stime); the server's CPU from
its start to ready, and to the Consents read. The data directory is changed (a Consent, clients): use a
copy.

    .venv/bin/python -m bench.inverse_first --dir COPY [--settle] [--study 2024-500000-10-00]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from pathlib import Path

import httpx2 as httpx

from bench.common import load_average, machine
from bench.match_server import TEAM, _cpu_ms, _timed, Calls, warmed
from fhir_server.app import open_context
from fhir_server.search import extract
from fhir_server.settings import Settings
from fhir_server.store.base import Write
from tests.builders import consent
from tests.e2e.conftest import Server
from tests.e2e.test_referral_story import _backend, _backend_token


async def _withdraw(settings: Settings, patient: str) -> None:
    """`patient`'s research Consent made inactive, written through the store."""
    body = consent(patient, "research") | {"id": f"cr{patient.removeprefix('p')}", "status": "inactive"}
    async with open_context(settings) as ctx:
        await ctx.store.commit([Write("Consent", body["id"], body, extract(body))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="a copy of a filled data directory")
    parser.add_argument("--study", default="2024-500000-10-00")
    parser.add_argument("--patient", default="p0", help="whose research Consent is withdrawn")
    parser.add_argument("--settle", action="store_true", help="call once the Consents are read ahead")
    args = parser.parse_args()
    where = args.dir
    os.environ["FHIR_SERVER_KEY_RING"] = str(where / "keyring.json")
    os.environ["FHIR_SERVER_DATA_DIR"] = str(where)
    settings = Settings(data_dir=where, key_ring=where / "keyring.json")
    print(f"machine: {json.dumps(machine())}")
    server = Server(where, workers=1, log_level="info", env={"FHIR_SERVER_TOKEN_LIFETIME": "3600",
                                           "FHIR_SERVER_FIGURES_DAILY": "false"})
    pid = server.process.pid
    try:
        print(f"server ready: {_cpu_ms(pid):.0f} ms CPU")
        site = _backend_token(server, _backend(server, f"site-{secrets.token_hex(4)}", "system/*.rs",
                                               "--acts-for", TEAM), "system/*.rs")
        if args.settle:
            print(f"Consents read ahead: server CPU {warmed(server):.0f} ms")
        fhir = httpx.Client(base_url=f"{server.base}/fhir", timeout=600)
        calls = Calls()

        def call(label: str) -> None:
            response = _timed(calls, pid, lambda: fhir.post(f"/ResearchStudy/{args.study}/$match",
                                                            headers=site, json={"resourceType": "Parameters"}))
            figures = ", ".join(f"{p['name']} {p['valueInteger']}" for p in response.json()["parameter"]
                                if "valueInteger" in p)
            print(f"  {label}: {calls.wall[-1]:.0f} ms wall, {calls.cpu[-1]:.0f} ms server CPU; {figures}; "
                  f"load average {load_average()}")

        call("first call after start" + (" (settled)" if args.settle else ""))
        call("again")
        asyncio.run(_withdraw(settings, args.patient))
        call("first call after a Consent write (another process)")
        call("again")
        fhir.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
