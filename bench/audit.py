"""CPU per AuditEvent recorded through `AuditRecorder.record_all` on an encrypted SQLite audit
store and its hash chain (docs/audit.md, "What an event costs"; issue 15).

By default one request's trail of N patients (as an investigator's inverse `$match` leaves:
one event per patient, plus the request's own) is recorded in one batch: one commit of the
audit store, one link of the chain. `--per-request 20 --batch 10` records them as a server
answering 20-hit searches does: requests of 20 patients (21 events each), 10 requests per
batch. Three cases of the patients' data keys: `new` (none exists yet: each
is made, wrapped and stored, as in a fresh data directory), `cached` (they exist and are in
the key cache: the same trail recorded once before) and `stored` (they exist in datakeys.db
but not in the cache, as in a server whose patients outnumber its key cache, 10,000 keys).
CPU time (`time.process_time`, every thread, and `time.thread_time` of the event loop and of
the store's writer thread), never wall time: the machine is shared.

    .venv/bin/python -m bench.audit [--patients 10000] [--keys new,cached,stored] [--rounds 3]
                                    [--per-request 20 --batch 10]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fhir_server.access import server_principal
from fhir_server.audit.chain import Chain
from fhir_server.audit.events import request_events
from fhir_server.audit.outbox import event_ids
from fhir_server.audit.recorder import AuditRecorder
from fhir_server.audit.trail import Trail
from fhir_server.crypto import DataKeys, EnvelopeCodec, LocalKeyRing, create_key_ring
from fhir_server.model.ids import new_id
from fhir_server.store.sqlite import SqliteStore


def _requests(patients: int, per_request: int) -> list[list[dict[str, Any]]]:
    """The events of each request, `per_request` patients each (0: all in one request)."""
    per_request = per_request or patients
    requests = []
    for start in range(0, patients, per_request):
        trail = Trail({f"Patient/p{n}": frozenset({f"p{n}"})
                       for n in range(start, min(start + per_request, patients))}, set())
        requests.append(request_events(
            interaction="operation", status=200, recorded="2026-12-06T20:00:00Z",
            principal=server_principal("bench"), address=None, trail=trail, query=None))
    return requests


async def _record(recorder: AuditRecorder, requests: list[list[dict[str, Any]]], batch: int) -> None:
    """Record the requests `batch` at a time: those recorded together share a batch. Each
    request's events take the ids the server gives them (`<request id>`, `<request id>-2`, …:
    neighbours in the `(type, id)` indexes), not one random id each."""
    for start in range(0, len(requests), batch):
        await asyncio.gather(*(recorder.record_all(events, event_ids(new_id(), len(events)))
                               for events in requests[start:start + batch]))


async def _round(args: argparse.Namespace, keys: str) -> tuple[float, float, float, int]:
    """CPU seconds (process, event loop, writer thread) of one batch, and its events."""
    data = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    create_key_ring(data / "keyring.json")
    codec = EnvelopeCodec(DataKeys(LocalKeyRing(data / "keyring.json"), data / "datakeys.db"))
    store = SqliteStore(data / "audit.db", codec=codec)
    await store.open()
    recorder = AuditRecorder(store, Chain(data / "audit-chain.db"))
    try:
        if keys != "new":  # the patients' keys made, and cached
            await _record(recorder, _requests(args.patients, args.per_request), args.batch)
        if keys == "stored":
            codec.keys = DataKeys(codec.keys.provider, codec.keys.path)  # nothing cached
        loop = asyncio.get_running_loop()
        writer = await loop.run_in_executor(store._writer, time.thread_time)
        process, thread = time.process_time(), time.thread_time()
        requests = _requests(args.patients, args.per_request)
        await _record(recorder, requests, args.batch)
        process, thread = time.process_time() - process, time.thread_time() - thread
        writer = await loop.run_in_executor(store._writer, time.thread_time) - writer
        return process, thread, writer, sum(len(events) for events in requests)
    finally:
        recorder.close()
        await store.close()
        shutil.rmtree(data, ignore_errors=True)  # a key ring and its store: not left in /tmp


async def main(args: argparse.Namespace) -> None:
    for keys in args.keys.split(","):
        rounds = [await _round(args, keys) for _ in range(args.rounds)]
        events = rounds[0][3]
        process, loop, writer = (statistics.median(r[n] for r in rounds) / events * 1e6 for n in range(3))
        shape = (f"requests of {args.per_request} patients, {args.batch} per batch"
                 if args.per_request else "in one batch")
        print(f"{keys} keys, {events:,} events {shape}: {process:.0f} CPU µs/event "
              f"(event loop {loop:.0f}, writer thread {writer:.0f}; median of {args.rounds})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--keys", default="new,cached,stored")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-request", type=int, default=0, help="patients per request (0: all)")
    parser.add_argument("--batch", type=int, default=1, help="requests recorded together")
    asyncio.run(main(parser.parse_args()))
