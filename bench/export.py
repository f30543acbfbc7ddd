"""Bulk Data `$export` on the SQLite store (issue 19 targets: a system export at 1M resources
>= 10,000 resources/s, memory flat whatever the size; kick-off p99 < 200 ms, poll p99 < 50 ms).

An encrypted SQLite store is filled with N resources (one Patient, then 9 Observations,
Conditions and Encounters per patient), by the store's own unit of work (index entries
extracted, bodies sealed: as the server stores them). Then, in this one process:
- the system export, run by the export worker as the server runs it (access layer, per-page
  keyset cursor, ndjson files sealed into the store, the job's AuditEvents built): resources/s
  on the wall clock and per CPU second, the resident memory sampled every 0.1 s during it
  (and, with `--heap`, the Python heap as tracemalloc counts it, sampled alike: tracemalloc
  slows the export, so its speed is then not the one to quote);
- in the same run, a bare loop over the same file (one SQL scan of current versions, each
  body opened by the same codec, written as ndjson to a file), and the same without opening;
- through the whole app in process (authentication off): `--requests` kick-offs
  (`$export?_type=Organization`, cheap jobs) and status polls, latency p50/p95/p99.
CPU time (`time.process_time`) is given beside wall-clock: the machine is shared.

    .venv/bin/python -m bench.export [--resources 100000] [--requests 200] [--reuse DIR] [--heap]

`--reuse DIR` measures again on the store an earlier run left in DIR (its path is printed),
without filling it again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sqlite3
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bench.common import machine, percentile
from fhir_server.access import server_principal
from fhir_server.app import body_codec, create_app, export_policy
from fhir_server.bulk import ExportWorker
from fhir_server.crypto import BodyCodec, create_key_ring
from fhir_server.model.validation import Validator
from fhir_server.search import default_registry, extract
from fhir_server.services import export
from fhir_server.services.context import Context
from fhir_server.settings import Settings
from fhir_server.store.base import Write
from fhir_server.store.sqlite import SqliteStore

PER_PATIENT = 10
BATCH = 1000


def made(n: int) -> dict[str, Any]:
    """Resource number `n`: a Patient every PER_PATIENT, else one of theirs."""
    patient = f"p{n // PER_PATIENT}"
    subject = {"reference": f"Patient/{patient}"}
    day = f"{2000 + n % 25}-{n % 12 + 1:02d}-{n % 28 + 1:02d}"
    match n % PER_PATIENT:
        case 0:
            return {"resourceType": "Patient", "id": patient, "gender": "female", "birthDate": day,
                    "name": [{"family": f"Nom{n}", "given": ["Hélène"]}]}
        case 1:
            return {"resourceType": "Condition", "id": f"c{n}", "subject": subject,
                    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "C50.9"}]},
                    "onsetDateTime": day}
        case 2:
            return {"resourceType": "Encounter", "id": f"e{n}", "status": "finished",
                    "class": {"code": "AMB"}, "subject": subject, "period": {"start": day}}
        case _:
            return {"resourceType": "Observation", "id": f"o{n}", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "subject": subject, "effectiveDateTime": day,
                    "valueQuantity": {"value": 50 + n % 70 + 0.25, "unit": "kg"}}


async def fill(store: SqliteStore, count: int) -> None:
    for start in range(0, count, BATCH):
        writes = [Write(r["resourceType"], r["id"], r, extract(r))
                  for r in map(made, range(start, min(count, start + BATCH)))]
        await store.commit(writes)


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def anon_mib() -> float:
    """RssAnon: the resident heap memory (Python's and SQLite's), without mapped files."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


class Sampler:
    """Resident memory (and the traced Python heap, if tracing) every 0.1 s while a block runs."""

    def __init__(self) -> None:
        self.rss: list[float] = []
        self.anon: list[float] = []
        self.heap: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.rss.append(rss_mib())
        self.anon.append(anon_mib())
        if tracemalloc.is_tracing():
            self.heap.append(tracemalloc.get_traced_memory()[0] / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def __enter__(self) -> Sampler:
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def summary(self) -> dict[str, Any]:
        def span(values: list[float]) -> dict[str, int]:
            return {"start": round(values[0]), "max": round(max(values)), "end": round(values[-1])}

        figures: dict[str, Any] = {"rss_mib": span(self.rss), "rss_anon_mib": span(self.anon)}
        if self.heap:
            figures["python_heap_mib"] = {**span(self.heap),
                                          "peak": round(tracemalloc.get_traced_memory()[1] / 2**20)}
        return figures


async def sqlite_cache_cap(store: SqliteStore) -> dict[str, Any]:
    """The page cache bound: `PRAGMA cache_size` (negative: KiB) times the store's connections."""
    size = await store._read(lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0])
    connections = len(store._connections)  # the writer and the readers that have run so far
    per_connection = -size / 1024 if size < 0 else size * 4096 / 2**20
    return {"per_connection_mib": per_connection, "connections": connections,
            "cap_mib": per_connection * connections}


async def system_export(store: SqliteStore, settings: Settings) -> dict[str, Any]:
    ctx = Context(store=store, validator=Validator(), registry=default_registry(),
                  principal=server_principal("bench"))
    recorded: list[int] = []

    async def record(events: Any, ids: Any) -> None:
        recorded.append(len(events))

    policy = export_policy(settings)
    wall, cpu = time.perf_counter(), time.process_time()
    with Sampler() as memory:
        id = await export.kick_off(ctx, "system", [], request="bench", lenient=False, policy=policy)
        worker = ExportWorker(ctx, policy, record)
        # Jobs an earlier run's kick-offs left queued (`--reuse`) are run too: oldest first.
        while (await export.status(ctx, id, policy)).manifest is None:
            assert await worker.run_one()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    status = await export.status(ctx, id, policy)
    assert status.manifest is not None
    exported = sum(o["count"] for o in status.manifest["output"])
    return {"resources": exported, "files": len(status.manifest["output"]),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "per_s": round(exported / wall), "per_cpu_s": round(exported / cpu),
            "audit_events": sum(recorded), **memory.summary(),
            "sqlite_cache": await sqlite_cache_cap(store)}


def bare_loop(path: Path, codec: BodyCodec, out: Path, open_bodies: bool) -> dict[str, Any]:
    """Every current version, one scan, each body opened (or not) and written as a line."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = 0
    with sqlite3.connect(path) as conn, out.open("wb") as file:
        rows = conn.execute("SELECT r.type, r.id, r.version, h.body FROM resource r "
                            "JOIN history h ON h.seq = r.seq WHERE r.deleted = 0 ORDER BY r.pk")
        for rtype, id, version, body in rows:
            file.write((codec.open(rtype, id, version, body) if open_bodies else body) + b"\n")
            count += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"resources": count, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "per_s": round(count / wall), "per_cpu_s": round(count / cpu)}


def requests(settings: Settings, store: SqliteStore, count: int) -> dict[str, Any]:
    """Kick-off and poll latencies through the whole app (auth off)."""
    app = create_app(settings.model_copy(update={"auth": "off"}), store)
    kick, poll = [], []
    headers = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
    with TestClient(app) as client:
        locations = []
        for _ in range(count):
            started = time.perf_counter()
            response = client.get("/fhir/$export?_type=Organization", headers=headers)
            kick.append(time.perf_counter() - started)
            assert response.status_code == 202, response.text
            locations.append(response.headers["Content-Location"].split("/fhir", 1)[1])
        for location in locations:
            started = time.perf_counter()
            response = client.get(f"/fhir{location}")
            poll.append(time.perf_counter() - started)
            assert response.status_code in (200, 202), response.text
    kick.sort()
    poll.sort()
    return {name: {f"p{q}_ms": round(percentile(values, q) * 1000, 1) for q in (50, 95, 99)}
            for name, values in (("kick_off", kick), ("poll", poll))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--reuse", type=Path, help="a directory an earlier run filled")
    parser.add_argument("--heap", action="store_true",
                        help="trace the Python heap during the export (tracemalloc; slower)")
    args = parser.parse_args()
    directory = args.reuse or Path(tempfile.mkdtemp(prefix="bench-export-"))
    if args.reuse is None:
        create_key_ring(directory / "keyring.json")
    settings = Settings(data_dir=directory, key_ring=directory / "keyring.json",
                        base_url="http://testserver/fhir", publish_definitions=False)
    codec = body_codec(settings)
    store = SqliteStore(directory / "fhir.db", codec=codec)
    print(f"machine: {machine()}\nstore: {directory}")

    async def build_and_export() -> dict[str, Any]:
        await store.open()
        if args.reuse is None:
            started = time.perf_counter()
            await fill(store, args.resources)
            print(f"filled {args.resources} resources in {time.perf_counter() - started:.0f} s")
        if args.heap:
            tracemalloc.start()
        try:
            return await system_export(store, settings)
        finally:
            tracemalloc.stop()

    exported = asyncio.run(build_and_export())
    print(f"system export:        {exported}")
    print(f"bare loop, opened:    {bare_loop(store.path, codec, directory / 'bare.ndjson', True)}")
    print(f"bare loop, as stored: {bare_loop(store.path, codec, directory / 'raw.ndjson', False)}")
    fresh = SqliteStore(directory / "fhir.db", codec=codec)
    print(f"requests:             {requests(settings, fresh, args.requests)}")
    print(f"peak RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")


if __name__ == "__main__":
    main()
