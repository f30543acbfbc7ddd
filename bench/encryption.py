"""What encryption at rest costs: CPU per read and per create through the whole app, with
encryption on and off side by side (docs/security.md, issue 16), and the codec alone.

Each round seeds two fresh apps (`bench.requests.seeded`: one with encryption, one without),
then measures each op on both, alternating which goes first; the median over rounds is
reported. CPU time (`time.process_time`: every thread of the process), not wall time: the
machine is shared. A create makes a new Patient, so a new patient compartment: it includes
making, wrapping and storing that patient's data key (one write of datakeys.db per group
commit); `create-observation` writes into the compartment of a seeded Patient (its key exists).

`--alternate` seeds both apps once and measures each op in `--rounds` pairs of blocks, the
two apps taking turns: fairer on a shared machine, whose load changes between two halves
of a round minutes apart (docs/security.md#cost, thirteenth session).

    .venv/bin/python -m bench.encryption [--rounds 5] [--n 1000] [--requests 2000] [--alternate]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import orjson

from bench.requests import Call, Client, _drive, _ops, _patient, seeded
from fhir_server.crypto import DataKeys, EnvelopeCodec, LocalKeyRing, create_key_ring
from fhir_server.store.versions import stamp

T = TypeVar("T")


OPS = ("read", "create", "create-observation")


def _observation(i: int, n: int) -> bytes:
    """An Observation in the compartment of one of the seeded Patients (its key exists)."""
    return orjson.dumps({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/perf-{i % n:07d}"},
        "effectiveDateTime": "2026-01-01T10:00:00Z",
        "valueQuantity": {"value": 60 + i % 40, "unit": "/min", "system": "http://unitsofmeasure.org",
                          "code": "/min"}})


class CodecTime:
    """CPU time spent inside the codec, every thread (`time.thread_time` around each call of
    seal, open and prepare): the part of a request encryption adds, without the noise of
    comparing two whole runs on a shared machine. The store-side `patients_of` of sealing
    and the Version copies of opening are outside it (a few µs)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()
        for name in ("seal", "open", "prepare"):
            setattr(EnvelopeCodec, name, self._timed(getattr(EnvelopeCodec, name)))

    def _timed(self, method: Callable[..., T]) -> Callable[..., T]:
        def timed(*args: Any) -> T:
            started = time.thread_time()
            try:
                return method(*args)
            finally:
                spent = time.thread_time() - started
                with self._lock:
                    self.seconds += spent
        return timed


CODEC_TIME = CodecTime()


class CollectorTime:
    """CPU time of the cyclic garbage collector's collections (`gc.callbacks`), whichever
    thread runs them: the part of a request a bigger live heap costs (the encrypted app's
    cached data keys, docs/security.md), which the codec's own time does not show."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._timed)

    def _timed(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._started


COLLECTOR_TIME = CollectorTime()


def _with_observation(client: Client, n: int) -> dict[str, Call]:
    """The ops of `bench.requests`, and a create in a seeded Patient's compartment."""
    ops = _ops(client, n)

    async def create_observation(i: int) -> int:
        return await client("POST", "/fhir/Observation", _observation(i, n))

    return {**ops, "create-observation": create_observation}


async def _measure(call: Call, name: str, encryption: bool, args: argparse.Namespace,
                   measured: dict[tuple[str, bool | str], float]) -> None:
    """CPU µs per request of `args.requests` calls, and of them in the codec and the collector."""
    in_codec, in_collector = CODEC_TIME.seconds, COLLECTOR_TIME.seconds
    cpu, failed = await _drive(call, args.requests, args.concurrency)
    assert failed == 0, f"{name}: {failed} failed"
    measured[name, encryption] = cpu / args.requests * 1e6
    measured[name, f"collector {encryption}"] = (COLLECTOR_TIME.seconds - in_collector) / args.requests * 1e6
    if encryption:
        measured[name, "codec"] = (CODEC_TIME.seconds - in_codec) / args.requests * 1e6


async def _round(args: argparse.Namespace, first: bool) -> dict[tuple[str, bool | str], float]:
    """CPU µs per request of each op, encryption on (True) and off (False)."""
    measured: dict[tuple[str, bool | str], float] = {}
    for encryption in (first, not first):
        async with seeded(args.n, encryption) as client:
            ops = _with_observation(client, args.n)
            for name in OPS:
                await _drive(ops[name], args.requests // 5, args.concurrency)  # warm-up
                await _measure(ops[name], name, encryption, args, measured)
    return measured


async def _alternating(args: argparse.Namespace) -> list[dict[tuple[str, bool | str], float]]:
    """`args.rounds` pairs of blocks of each op, both apps seeded at once and taking turns
    (which goes first alternates): a change of the machine's load lands on both sides of a
    pair, not between the two halves of a round minutes apart. The plain app is seeded first:
    an app's start freezes the heap it finds (trials/consents_kept.py), and the encrypted
    app's cache must stay in the collected heap, as in a server."""
    rounds: list[dict[tuple[str, bool | str], float]] = [{} for _ in range(args.rounds)]
    async with AsyncExitStack() as stack:
        apps = {encryption: _with_observation(await stack.enter_async_context(seeded(args.n, encryption)), args.n)
                for encryption in (False, True)}
        for name in OPS:
            for ops in apps.values():
                await _drive(ops[name], args.requests // 5, args.concurrency)  # warm-up
            for r, measured in enumerate(rounds):
                for encryption in (r % 2 == 0, r % 2 != 0):
                    await _measure(apps[encryption][name], name, encryption, args, measured)
    return rounds


def _codec_alone(count: int) -> tuple[float, float, int]:
    """CPU µs per seal and per open of a bench Patient's stored body, keys cached."""
    data = Path(tempfile.mkdtemp(prefix="bench-codec-"))
    atexit.register(shutil.rmtree, data, True)  # a key ring and its store: not left in /tmp
    create_key_ring(data / "keyring.json")
    codec = EnvelopeCodec(DataKeys(LocalKeyRing(data / "keyring.json"), data / "datakeys.db"))
    body = stamp(_patient(1, "x"), "perf-0000001", 2, "2026-01-01T00:00:00.000+00:00")
    sealed = codec.seal("Patient", "perf-0000001", 2, body, {"perf-0000001"})
    started = time.process_time()
    for _ in range(count):
        codec.seal("Patient", "perf-0000001", 2, body, {"perf-0000001"})
    sealing = time.process_time() - started
    started = time.process_time()
    for _ in range(count):
        codec.open("Patient", "perf-0000001", 2, sealed)
    opening = time.process_time() - started
    return sealing / count * 1e6, opening / count * 1e6, len(body)


async def main(args: argparse.Namespace) -> None:
    seal, open_, size = _codec_alone(20_000)
    print(f"codec alone, {size}-byte body: seal {seal:.1f} CPU µs, open {open_:.1f} CPU µs")
    rounds = (await _alternating(args) if args.alternate
              else [await _round(args, first=r % 2 == 0) for r in range(args.rounds)])
    for name in OPS:
        on = statistics.median(r[name, True] for r in rounds)
        off = statistics.median(r[name, False] for r in rounds)
        each = ", ".join(f"{r[name, True]:,.0f}/{r[name, False]:,.0f}" for r in rounds)
        codec = statistics.median(r[name, "codec"] for r in rounds)
        collector = [statistics.median(r[name, f"collector {e}"] for r in rounds) for e in (True, False)]
        print(f"{name}: {on:,.0f} CPU µs/request encrypted, {off:,.0f} plain: "
              f"{(on - off) / off:+.1%} (median of {args.rounds} rounds; on/off: {each}); "
              f"in the codec {codec:,.1f} µs/request = {codec / off:.1%} of plain; "
              f"in the garbage collector {collector[0]:,.0f} encrypted, {collector[1]:,.0f} plain")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=1000, help="Patients seeded per app")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per op")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--alternate", action="store_true",
                        help="seed both apps once; a round is a pair of blocks of --requests each")
    asyncio.run(main(parser.parse_args()))
