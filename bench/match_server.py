"""Issue 17 §7 through the server: a real data directory (SQLite, bodies encrypted under a key
ring, audit on) holding synthetic oncology patients, a real `fhir-server serve` (uvicorn, one
worker) and real SMART tokens; trials imported and matched over HTTP.

1. **Patients** (not timed: the set-up): bench/matching.py's synthetic patients (a Patient with
   a postal code, a Condition, up to four Observations), each with an active patient-privacy
   Consent naming one of 500 physicians and an active research Consent: counted in
   investigators' figures. Written through the store's unit of work (`Store.commit`, 1,000
   resources a unit, bodies sealed and search indexes written as the server writes them;
   no validation and no audit, as for any bench fill: bench/erasure.py).
2. **Import**: the trials (bench/matching.py's eligibility Groups; each trial a renumbered
   ECLAIRE example with ~5 sites from a pool of 500 hospitals, each recruiting, confirmed
   today) posted to `ResearchStudy/$load` in Bundles of `--per-load` trials by a catalogue
   system client (`system/*.cruds`): trials per second, wall.
3. **Forward `$match`** (`POST ResearchStudy/$match`, `patient`, `count` 50: the top 50
   explained) by a referring physician signed in through the server's login pages
   (`user/*.cruds`), for their consented patients: latency p50/p95 and the server process's
   CPU per call (/proc: utime + stime). The first call (catalogue read into memory) is
   reported apart.
4. **Inverse `$match`** (`POST ResearchStudy/{id}/$match`) by an investigator site system
   (`--acts-for` a care team of the organisation managing the study's first site): one trial
   against every counted patient, for `--inverse` studies, each the first call of the day for
   its study (the daily snapshot is computed: figures a run stored earlier the same day are
   dropped before the server starts); then the same studies again (snapshot kept).
   With `--figures-pass`, the day's figures pass (`fhir-server figures run --nice 10`,
   trials/figures_pass.py) runs first, in a process of its own beside the server (its CPU
   and wall, its pairs and events reported), and the first round is served from it.

    .venv/bin/python -m bench.match_server [--trials 10000] [--patients 100000] [--dir DIR]
                                           [--calls 100] [--inverse 10] [--figures-pass]

`--dir` keeps the data directory (patients are written once; a second run reuses them and
loads the trials again: all unchanged; `--no-import` skips that). Wall times depend on the shared machine's load,
printed beside them; the server's CPU is the steadier figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx2 as httpx

from bench.common import load_average, machine, percentile
from bench.matching import synthetic_group, synthetic_patient
from fhir_server import clock
from fhir_server.app import open_context
from fhir_server.crypto import create_key_ring
from fhir_server.search import extract
from fhir_server.services.erase import forget_figures
from fhir_server.settings import Settings
from fhir_server.store.base import Outbox, Write
from fhir_server.trials import figures_pass
from fhir_server.trials.catalogue_sites import with_site_status
from fhir_server.trials.eligibility_codes import PROFILE
from tests.builders import consent
from tests.e2e.conftest import Server
from tests.e2e.test_referral_story import PASSWORD, REDIRECT, _backend, _backend_token, _cli, _user_token
from tests.trials.eclaire import example_unit

HOSPITALS = 500  # the Locations trials' sites are drawn from
ORGANISATIONS = 50  # each manages every 50th hospital
PHYSICIANS = 500
TEAM = "CareTeam/onco-bench"  # the investigators' team, of Organization/org-0
UNIT = 1000  # resources per unit of work when filling
DEPARTMENTS = [f"{d:02d}" for d in range(1, 96) if d != 20]


def _postal(n: int) -> str:
    return f"{DEPARTMENTS[n % len(DEPARTMENTS)]}000"


def hospitals() -> list[dict[str, Any]]:
    return [{"resourceType": "Location", "id": f"hospital-{n}",
             "meta": {"profile": ["https://interop.esante.gouv.fr/ig/fhir/eclaire/StructureDefinition/eclaire-location"]},
             "status": "active", "name": f"Centre {n}", "address": {"postalCode": _postal(n * 7)},
             "managingOrganization": {"reference": f"Organization/org-{n % ORGANISATIONS}"}}
            for n in range(HOSPITALS)]


def trial_unit(rng: random.Random, n: int, sites: int, today: date) -> list[dict[str, Any]]:
    """Trial `n`: the IG example renumbered, its ECLAIRE Group and sponsor, our eligibility
    Group (bench/matching.py) in its enrollment, and ~`sites` recruiting hospitals."""
    number = f"2024-5{n:05d}-10-00"
    study, *rest = [r for r in example_unit(number, sites=0) if not (r["resourceType"] == "Organization"
                                                                      and r["id"] == "ctis")]
    group = synthetic_group(rng, n)
    group["id"] = f"{number}-eligibility"
    group["meta"] = {"profile": [PROFILE]}
    study["enrollment"].append({"reference": f"Group/{group['id']}"})
    chosen = rng.sample(range(HOSPITALS), max(1, sites + rng.randint(-1, 1)))
    if n % 10 == 0:  # every tenth trial is run at the investigators' organisation too
        chosen[0] = 0
    study["site"] = [{"reference": f"Location/hospital-{h}"} for h in chosen]
    for h in chosen:
        study = with_site_status(study, f"Location/hospital-{h}", "recruiting", today)
    return [study, *rest, group]


def patient_resources(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Patient `n` (bench/matching.py's), with a postal code and the two Consents that let
    them be counted; their physician is Practitioner/dr-(n mod 500)."""
    resources = synthetic_patient(rng, n)
    resources[0]["address"] = [{"postalCode": _postal(n)}]
    hosting = consent(f"p{n}", actor=f"Practitioner/dr-{n % PHYSICIANS}") | {"id": f"cp{n}"}
    research = consent(f"p{n}", "research") | {"id": f"cr{n}"}
    return [*resources, hosting, research]


async def fill(settings: Settings, patients: int, seed: int) -> int:
    """Write the patients, physicians and organisations through the store; resources written."""
    rng = random.Random(seed)
    fixed = [*({"resourceType": "Practitioner", "id": f"dr-{n}", "active": True} for n in range(PHYSICIANS)),
             *({"resourceType": "Organization", "id": f"org-{n}", "name": f"Organisation {n}"}
               for n in range(ORGANISATIONS)),
             {"resourceType": "CareTeam", "id": TEAM.split("/")[1], "status": "active",
              "managingOrganization": [{"reference": "Organization/org-0"}]}]
    written, pending = 0, fixed
    async with open_context(settings) as ctx:
        for n in range(patients + 1):
            if len(pending) >= UNIT or n == patients:
                for resource in pending:
                    resource.pop("meta", None)
                await ctx.store.commit([Write(r["resourceType"], r["id"], r, extract(r)) for r in pending])
                written, pending = written + len(pending), []
            if n < patients:
                pending.extend(patient_resources(rng, n))
    return written


@dataclass
class Calls:
    wall: list[float] = field(default_factory=list)  # ms
    cpu: list[float] = field(default_factory=list)  # ms of the server's CPU

    def line(self, label: str) -> str:
        w, c = sorted(self.wall), sorted(self.cpu)
        if not w:
            return f"{label}: no calls"
        return (f"{label}: {len(w)} calls; wall ms p50 {percentile(w, 50):.0f} p95 {percentile(w, 95):.0f} "
                f"max {w[-1]:.0f}; server CPU ms p50 {percentile(c, 50):.0f} p95 {percentile(c, 95):.0f} "
                f"max {c[-1]:.0f}")


def _cpu_ms(pid: int) -> float:
    """CPU time (user + system) of process `pid` and its children, in ms."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for task in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) * 1000 / ticks
    return total


def _children(pid: int) -> list[int]:
    try:
        found = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [*found, *(g for c in found for g in _children(c))]


def _timed(calls: Calls, pid: int, send: Any) -> httpx.Response:
    c0, t0 = _cpu_ms(pid), time.perf_counter()
    response = send()
    calls.wall.append((time.perf_counter() - t0) * 1000)
    calls.cpu.append(_cpu_ms(pid) - c0)
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:500]}")
    return response


def _outcome(bundle: dict[str, Any]) -> str:
    return next(i["diagnostics"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"
                for i in e["resource"]["issue"] if i["severity"] == "information")


def run(args: argparse.Namespace, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    ring = where / "keyring.json"
    os.environ["FHIR_SERVER_KEY_RING"] = str(ring)
    os.environ["FHIR_SERVER_DATA_DIR"] = str(where)
    settings = Settings(data_dir=where, key_ring=ring)
    today = clock.now().date()
    if not ring.exists():
        create_key_ring(ring)
        c0, t0 = time.process_time(), time.perf_counter()
        written = asyncio.run(fill(settings, args.patients, args.seed))
        print(f"filled {args.patients} patients ({written} resources) through Store.commit in "
              f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU")
    asyncio.run(_new_day(settings))
    # The server computes no figures by itself: the bench runs the pass, and measures it.
    server = Server(where, workers=1, log_level="info" if args.settle else "warning",
                    env={"FHIR_SERVER_TOKEN_LIFETIME": "3600", "FHIR_SERVER_FIGURES_DAILY": "false"})
    try:
        if args.settle:
            print(f"reads ahead done (catalogue, Consents): server CPU {warmed(server):.0f} ms")
        _measure(args, server, today)
    finally:
        server.stop()


def warmed(server: Server) -> float:
    """Wait until the server has read the trial catalogue and the Consents ahead (its log
    says so: the catalogue is read first); its CPU then (ms)."""
    while b"the Consents were read ahead" not in (server.data_dir / "server.log").read_bytes():
        time.sleep(0.5)
    return _cpu_ms(server.process.pid)


async def _new_day(settings: Settings) -> None:
    """Drop the studies' figures an earlier run stored today, and the mark of its figures
    pass, as a new day would: the inverse calls' first round (or the pass) must compute them."""
    async with open_context(settings) as ctx:
        await forget_figures(ctx.store)
        await ctx.store.commit([Outbox(remove=(figures_pass.DONE,))])


def _measure(args: argparse.Namespace, server: Server, today: date) -> None:
    where, pid = server.data_dir, server.process.pid
    _cli(where, "client", "add-app", "portal", "--redirect-uri", REDIRECT, "--scope", "openid fhirUser user/*.cruds")
    catalogue = _backend_token(server, _backend(server, "catalogue", "system/*.cruds"), "system/*.cruds")
    site = _backend_token(server, _backend(server, "site", "system/*.rs", "--acts-for", TEAM), "system/*.rs")
    _cli(where, "user", "add", "dr0", "--fhir-user", "Practitioner/dr-0", "--password", PASSWORD)
    physician = _user_token(server, "dr0", "openid fhirUser user/*.cruds")
    fhir = httpx.Client(base_url=f"{server.base}/fhir", timeout=600)
    print(f"machine: {json.dumps(machine())}")

    if not args.no_import:
        _import(args, fhir, catalogue, pid, today)
    _forward(args, fhir, physician, pid)
    if args.figures_pass:
        _figures_pass()
    _inverse(args, fhir, {"investigator": site, "physician": physician}, pid)
    fhir.close()


def _import(args: argparse.Namespace, fhir: httpx.Client, catalogue: dict[str, str], pid: int, today: date) -> None:
    """The trials posted to $load, `--per-load` a Bundle; trials per second."""
    rng = random.Random(args.seed + 1)
    places = hospitals()
    loaded: dict[str, int] = {}
    c0, t0 = _cpu_ms(pid), time.perf_counter()
    for start in range(0, args.trials, args.per_load):
        units = [trial_unit(rng, n, args.sites, today) for n in range(start, min(args.trials, start + args.per_load))]
        used = {s["reference"] for u in units for s in u[0]["site"]}
        entries = [*(r for u in units for r in u), *(h for h in places if f"Location/{h['id']}" in used)]
        response = fhir.post("/ResearchStudy/$load", headers=catalogue, json={
            "resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in entries]})
        if response.status_code != 200:
            raise RuntimeError(f"$load: {response.status_code} {response.text[:1000]}")
        for p in response.json()["parameter"]:
            loaded[p["name"]] = loaded.get(p["name"], 0) + p["valueInteger"]
    wall, cpu = time.perf_counter() - t0, (_cpu_ms(pid) - c0) / 1000
    print(f"import: {args.trials} trials through $load ({args.per_load} a Bundle; {loaded}) in {wall:.1f} s wall "
          f"({args.trials / wall:.0f} trials/s), server CPU {cpu:.1f} s ({args.trials / cpu:.0f} trials/s of CPU); "
          f"load average {load_average()}")


def _figures_pass() -> None:
    """The day's figures pass, as the server starts it: a child process at niceness 10."""
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fhir_server.cli", "figures", "run", "--nice", "10"],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"figures run: exit status {done.returncode}: {done.stderr.strip()}")
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"figures pass: {done.stdout.strip()}; its process {cpu:.1f} s CPU, {wall:.1f} s wall, "
          f"max RSS {after.ru_maxrss / 1024:.0f} MiB; load average {load_average()}")


def _forward(args: argparse.Namespace, fhir: httpx.Client, physician: dict[str, str], pid: int) -> None:
    """`--calls` forward matches of the physician's patients, the top 50 explained."""
    patients = [f"p{n}" for n in range(0, args.patients, PHYSICIANS)][:args.calls]  # dr-0's patients
    forward, first = Calls(), Calls()
    for k, patient in enumerate(patients):
        response = _timed(first if k == 0 else forward, pid, lambda: fhir.post(
            "/ResearchStudy/$match", headers=physician, json={"resourceType": "Parameters", "parameter": [
                {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
                {"name": "count", "valuePositiveInt": 50}]}))
        calls = first if k == 0 else forward
        print(f"  Patient/{patient}: {calls.wall[-1]:.0f} ms wall, {calls.cpu[-1]:.0f} ms server CPU; "
              f"{len(response.json()['entry']) - 1} listed; {_outcome(response.json())}")
    print(first.line("forward $match, first call (catalogue read)"))
    print(forward.line("forward $match, physician, top 50 explained") + f"; load average {load_average()}")


def _inverse(args: argparse.Namespace, fhir: httpx.Client, tokens: dict[str, dict[str, str]], pid: int) -> None:
    """`--inverse` studies matched against every patient by the investigator (twice: the day's
    snapshot computed, then kept), then by the physician (their consented patients)."""
    site, physician = tokens["investigator"], tokens["physician"]
    studies = [f"2024-5{n:05d}-10-00" for n in range(0, args.trials, 10)]
    chosen = random.Random(args.seed).sample(studies, min(args.inverse, len(studies)))
    first = "served from the figures pass" if args.figures_pass else "snapshot computed"
    for label in (f"first call of the day ({first})", "again (snapshot kept)"):
        inverse = Calls()
        for study in chosen:
            response = _timed(inverse, pid, lambda: fhir.post(f"/ResearchStudy/{study}/$match", headers=site,
                                                              json={"resourceType": "Parameters"}))
            figures = ", ".join(f"{p['name']} {p['valueInteger']}" for p in response.json()["parameter"]
                                if "valueInteger" in p)
            print(f"  ResearchStudy/{study}: {inverse.wall[-1]:.0f} ms wall, {inverse.cpu[-1]:.0f} ms server CPU; "
                  f"{figures}; load average {load_average()}")
        print(inverse.line(f"inverse $match x {args.patients} patients, investigator, {label}")
              + f"; load average {load_average()}")
    mine = Calls()
    for study in chosen:
        _timed(mine, pid, lambda: fhir.post(f"/ResearchStudy/{study}/$match", headers=physician,
                                            json={"resourceType": "Parameters"}))
    print(mine.line(f"inverse $match, physician ({args.patients // PHYSICIANS} consented patients)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--per-load", type=int, default=100, help="trials per $load Bundle")
    parser.add_argument("--calls", type=int, default=100, help="forward $match calls (patients)")
    parser.add_argument("--inverse", type=int, default=10, help="studies of the inverse $match")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-import", action="store_true", help="the trials are loaded already (--dir)")
    parser.add_argument("--figures-pass", action="store_true",
                        help="run the day's figures pass before the inverse calls, and measure it")
    parser.add_argument("--settle", action="store_true",
                        help="time calls only once the server has read ahead what the first call needs")
    parser.add_argument("--dir", type=Path, help="data directory, kept (default: a temporary one)")
    args = parser.parse_args()
    if args.dir:
        run(args, args.dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(args, Path(tmp))


if __name__ == "__main__":
    main()
