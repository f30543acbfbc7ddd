"""Erasure and restore benchmarks (issue 16 targets): `Patient/$erase` of a patient with
1,000 resources and their history (target < 2 s), and restore throughput with the index
rebuilt (target: 1M resources in < 15 min), on the SQLite store with encryption on.

    python -m bench.erasure erase   [--others 20000] [--resources 1000]
    python -m bench.erasure restore [--resources 100000]

`erase` builds a store of `--others` resources of other patients (Synthea clones) plus one
patient with `--resources` Observations, each written twice (2 versions), then runs the
service-layer erasure (store, data keys, ledger, AuditEvent) and reports wall time and this
process's CPU time. `restore` builds `--resources` resources (Synthea clones), backs them up,
restores the archive into an empty store (checking pass, then load with index extraction),
and reports resources/s, with a linear extrapolation to 1M. Numbers go to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import machine, write_results
from bench.synthetic import Cloner, load_sample
from fhir_server.access import server_principal
from fhir_server.audit.chain import Chain
from fhir_server.audit.recorder import AuditRecorder
from fhir_server.backup import Target, restore, take
from fhir_server.crypto import (DataKeys, EnvelopeCodec, ErasureLedger, LocalKeyRing,
                                create_key_ring, ledger_key)
from fhir_server.model.validation import Validator
from fhir_server.search import default_registry, extract
from fhir_server.services import erase
from fhir_server.services.context import Context
from fhir_server.store.base import Store, Write
from fhir_server.store.routing import RoutingStore
from fhir_server.store.sqlite import SqliteStore

BATCH = 1000


class Timer:
    """Wall and process CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _write(resource: dict[str, Any]) -> Write:
    return Write(resource["resourceType"], resource["id"], resource, extract(resource))


async def _fill(store: Store, count: int) -> int:
    """About `count` resources of Synthea clones (whole patients), committed by the thousand."""
    cloner, sample = Cloner(load_sample()), load_sample()
    await store.commit([_write(r) for r in sample.shared])
    written, number, pending = len(sample.shared), 0, []
    while written < count:
        template = sample.templates[number % len(sample.templates)]
        for resource in cloner.clone(template, number):
            pending.append(_write(resource))
            if len(pending) == BATCH:
                await store.commit(pending)
                written, pending = written + len(pending), []
        number += 1
    if pending:
        await store.commit(pending)
        written += len(pending)
    return written


def _codec(where: Path) -> EnvelopeCodec:
    ring = where / "keyring.json"
    if not ring.exists():
        create_key_ring(ring)
    return EnvelopeCodec(DataKeys(LocalKeyRing(ring), where / "datakeys.db"))


async def bench_erase(others: int, resources: int, where: Path) -> dict[str, Any]:
    codec = _codec(where)
    main, audit = SqliteStore(where / "fhir.db", codec=codec), SqliteStore(where / "audit.db", codec=codec)
    await main.open()
    await audit.open()
    chain = Chain(where / "audit-chain.db")
    try:
        filled = await _fill(main, others)
        patient = {"resourceType": "Patient", "id": "erased", "name": [{"family": "Zwxqvtrudel"}]}
        await main.commit([_write(patient)])
        for version in (1, 2):
            observations = [{"resourceType": "Observation", "id": f"erased-{n}", "status": "final",
                             "code": {"text": "weight"}, "subject": {"reference": "Patient/erased"},
                             "valueQuantity": {"value": 60 + version, "unit": "kg"}}
                            for n in range(resources - 1)]
            for start in range(0, len(observations), BATCH):
                await main.commit([_write(o) for o in observations[start:start + BATCH]])
        ring = codec.keys.provider
        context = Context(store=RoutingStore(main, audit), validator=Validator(use_models=False),
                          registry=default_registry(), principal=server_principal("bench"),
                          erasures=erase.Erasures(
                              ErasureLedger(where / "erasure-ledger.jsonl", ledger_key(ring)),
                              codec.keys, AuditRecorder(audit, chain).record))
        with Timer() as timer:
            output = await erase.erase(replace(context), "erased", "benchmark")
        counts = {p["part"][0]["valueCode"]: p["part"][2]["valueInteger"]
                  for p in output["parameter"] if p["name"] == "erased"}
        return {"store_resources": filled, "erased_resources": resources,
                "erased_versions": sum(counts.values()), "wall_s": round(timer.wall, 3),
                "cpu_s": round(timer.cpu, 3)}
    finally:
        chain.close()
        await main.close()
        await audit.close()


async def bench_restore(resources: int, where: Path) -> dict[str, Any]:
    codec = _codec(where)
    source = where / "source"
    source.mkdir()
    main, audit = SqliteStore(source / "fhir.db", codec=codec), SqliteStore(source / "audit.db", codec=codec)
    chain = Chain(source / "audit-chain.db")
    await main.open()
    await audit.open()
    with Timer() as building:
        filled = await _fill(main, resources)
    ring = codec.keys.provider
    with Timer() as backing_up:
        archive, counts = await take(main=main, audit=audit, chain=chain, provider=ring,
                                     directory=where / "backups", keep_days=30, operator="bench",
                                     record=AuditRecorder(audit, chain).record)
    chain.close()
    await main.close()
    await audit.close()
    target_dir = where / "target"
    target_dir.mkdir()
    target_main = SqliteStore(target_dir / "fhir.db", codec=_codec(where))
    target_audit = SqliteStore(target_dir / "audit.db", codec=_codec(where))
    target_chain = Chain(target_dir / "audit-chain.db")
    await target_main.open()
    await target_audit.open()
    try:
        with Timer() as restoring:
            done = await restore(archive, Target(
                target_main, target_audit, target_chain, ring, _codec(where), None,
                default_registry(), AuditRecorder(target_audit, target_chain).record))
    finally:
        target_chain.close()
        await target_main.close()
        await target_audit.close()
    rate = done.versions / restoring.wall
    return {"resources": filled, "versions": done.versions, "archive_bytes": archive.stat().st_size,
            "build_s": round(building.wall, 1), "backup_wall_s": round(backing_up.wall, 1),
            "restore_wall_s": round(restoring.wall, 1), "restore_cpu_s": round(restoring.cpu, 1),
            "restore_per_s": round(rate), "extrapolated_1m_min": round(1_000_000 / rate / 60, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.erasure")
    parser.add_argument("what", choices=["erase", "restore"])
    parser.add_argument("--others", type=int, default=20_000)
    parser.add_argument("--resources", type=int, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fhir-bench-erasure-") as tmp:
        where = Path(tmp)
        if args.what == "erase":
            result = asyncio.run(bench_erase(args.others, args.resources or 1000, where))
        else:
            result = asyncio.run(bench_restore(args.resources or 100_000, where))
    result["machine"] = machine()
    print(result)
    print("written to", write_results(f"erasure-{args.what}", result))


if __name__ == "__main__":
    main()
