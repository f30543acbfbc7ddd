"""The retention run over a large store (issue 18 target: 1M resources in < 10 min, with
requests served meanwhile and the p99 read latency within 2x of idle), SQLite, encryption on.

    python -m bench.retention [--resources 100000] [--reads-per-s 50] [--profile FILE]
                              [--store DIR]

Builds `--resources` resources (Synthea clones, whole patients) on a simulated clock, then
measures, on that clock two years and a day later (every record inactive):
- the idle p99 of a read (an Organization, through the store, as a request's read is), for 10 s;
- the **real** run: every patient's record archived under a pseudonym (read, pseudonymised,
  written, original erased with its keys), while a reader reads an Organization `--reads-per-s`
  times a second in the same process; the reads' p50/p95/p99 during the run; the actions
  that failed (a run that archives nothing is no measure);
- the **steady** run the day after, when nothing is due: the cost of the daily plan.
Wall time and the run's CPU time (`time.process_time`: the machine is shared), and the load
average before and after the run. The run shares the reader's process (as the server's
scheduled runs do), or with `--apart NICENESS` runs in a process of its own at that niceness
(as `fhir-server retention run` from cron does); the idle reads last `--idle-seconds`. Numbers go to bench/results/. `--profile FILE` writes a
cProfile of the real run (CPU time of each thread, `time.thread_time`, every thread: the
stores are opened afresh after the build, so that their threads start under the profiler),
merged into one pstats file. `--store DIR` keeps the built store in DIR (built there the first
time, for `--resources`) and runs on a copy of it, so that versions compared run on the same
data and a large store is built once. `--records K` archives only the first K records due (the
cost per record at that store's size, in a minute rather than the whole run; the next day's
run then archives the rest, unless `--no-steady`). The bytes the
run's process wrote (`/proc/self/io` `wchar`) are reported: the store's page writes are what
grows with its size (docs/privacy.md).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import multiprocessing
import os
import pstats
import shutil
import threading
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Any

from bench.common import machine, write_results
from bench.erasure import Timer, _codec, _fill, _write
from fhir_server import clock
from fhir_server.access import server_principal
from fhir_server.audit.chain import Chain
from fhir_server.audit.prune import Trimmer
from fhir_server.audit.recorder import AuditRecorder
from fhir_server.crypto import ErasureLedger, ledger_key
from fhir_server.model.validation import Validator
from fhir_server.privacy.pseudonym import Pseudonyms
from fhir_server.privacy.retention import Lifecycle, apply, plan, run
from fhir_server.privacy.retention_holds import Holds
from fhir_server.privacy.retention_policy import load_policy
from fhir_server.search import default_registry
from fhir_server.services import erase
from fhir_server.services.context import Context
from fhir_server.store.routing import RoutingStore
from fhir_server.store.sqlite import SqliteStore

START = datetime(2027, 1, 10, 9, tzinfo=UTC)


def _quantiles(samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        return {"n": len(samples)}
    cuts = statistics.quantiles(samples, n=100)
    return {"n": len(samples), "p50_ms": round(cuts[49] * 1000, 2),
            "p95_ms": round(cuts[94] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2)}


async def _reader(store: RoutingStore, patient_id: str, per_s: float, stop: asyncio.Event,
                  seconds: list[float]) -> None:
    """Read one resource `per_s` times a second until `stop`; each read's latency."""
    while not stop.is_set():
        began = time.perf_counter()
        await store.read("Organization", patient_id)
        seconds.append(time.perf_counter() - began)
        try:
            await asyncio.wait_for(stop.wait(), 1 / per_s)
        except TimeoutError:
            pass


async def _measured(store: RoutingStore, patient_id: str, per_s: float, work: Any) -> tuple[Any, list[float]]:
    stop, seconds = asyncio.Event(), []
    reader = asyncio.create_task(_reader(store, patient_id, per_s, stop, seconds))
    try:
        result = await work
    finally:
        stop.set()
        await reader
    return result, seconds


@contextmanager
def _profiled(path: Path) -> Iterator[None]:
    """cProfile every thread (those started in the block) and this one, by thread CPU time,
    merged into `path`."""
    profiles: list[cProfile.Profile] = []

    def start(*_: object) -> None:  # the first event of each new thread
        threading.setprofile(None)
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()

    threading.setprofile(start)
    mine = cProfile.Profile(time.thread_time)
    mine.enable()
    try:
        yield
    finally:
        mine.disable()
        threading.setprofile(None)
        for profile in profiles:
            profile.disable()  # only in its thread; the others stopped with their pools
        stats = pstats.Stats(mine)
        for profile in profiles:
            try:
                stats.add(profile)
            except TypeError:  # a thread that recorded nothing
                pass
        stats.dump_stats(path)


async def _stores(where: Path, codec: Any) -> tuple[SqliteStore, SqliteStore]:
    main, audit = SqliteStore(where / "fhir.db", codec=codec), SqliteStore(where / "audit.db", codec=codec)
    await main.open()
    await audit.open()
    return main, audit


async def _build(resources: int, where: Path) -> int:
    """About `resources` resources in a new store in `where`; how many."""
    codec = _codec(where)
    main, audit = await _stores(where, codec)
    try:
        with clock.frozen(START):
            filled = await _fill(main, resources)
            # what the reader reads: outside every patient's record, so never archived
            await main.commit([_write({"resourceType": "Organization", "id": "reader",
                                       "name": "Reader"})])
    finally:
        await main.close()
        await audit.close()
        codec.keys.close()
    (where / "built.json").write_text(json.dumps({"resources": filled}))
    return filled


async def _built(resources: int, where: Path, kept: Path | None) -> int:
    """The store to run on, in `where`: built there, or copied from `kept` (built there
    first if it holds none); how many resources it holds."""
    if kept is None:
        return await _build(resources, where)
    if not (kept / "built.json").exists():
        kept.mkdir(parents=True, exist_ok=True)
        await _build(resources, kept)
    shutil.copytree(kept, where, dirs_exist_ok=True)
    return int(json.loads((where / "built.json").read_text())["resources"])


async def bench(resources: int, per_s: float, where: Path, profile: Path | None = None,
                apart: int | None = None, idle_s: float = 30.0,
                kept: Path | None = None, records: int | None = None,
                steady: bool = True) -> dict[str, Any]:
    with Timer() as building:
        filled = await _built(resources, where, kept)
    codec = _codec(where)
    with _profiled(profile) if profile else nullcontext():
        main, audit = await _stores(where, codec)  # their threads start under the profiler
        try:
            store = RoutingStore(main, audit)
            with clock.frozen(DUE):
                _, idle = await _measured(store, "reader", per_s, asyncio.sleep(idle_s))
            load_before = os.getloadavg()
            written = _written()
            with Timer() as real:
                work = (_run_apart(where, apart, records) if apart is not None
                        else _real_run(where, store, codec, records))
                done, during = await _measured(store, "reader", per_s, work)
            load_after = os.getloadavg()
            cpu = done.pop("cpu_s") if apart is not None else real.cpu
            written = done.pop("written") if apart is not None else _written() - written
            with Timer() as next_day:
                quiet = (await _life_run(where, store, codec, DUE + timedelta(days=1)) if steady
                         else {"counts": "not run (--no-steady)"})
        finally:
            await main.close()
            await audit.close()
    return {"resources": filled, "build_s": round(building.wall, 1),
            "run": f"in a process of its own, niceness {apart}" if apart is not None
            else "in the reader's process",
            "load_average_before_after_run": [round(load_before[0], 2), round(load_after[0], 2)],
            "real_run": {"wall_s": round(real.wall, 1), "cpu_s": round(cpu, 1),
                         "cpu_ms_per_resource": round(cpu * 1000 / filled, 3),
                         "cpu_ms_per_record": round(cpu * 1000 / max(
                             1, done["counts"].get("patient-record archive", 0)), 1),
                         "written_mb": round(written / 1e6), **done},
            "steady_run": {"wall_s": round(next_day.wall, 2), "cpu_s": round(next_day.cpu, 2),
                           "counts": quiet["counts"]},
            "reads_idle": _quantiles(idle), "reads_during_run": _quantiles(during),
            "extrapolated_1m_real_run_min": round(real.wall * 1_000_000 / filled / 60, 1),
            "extrapolated_1m_real_run_cpu_min": round(cpu * 1_000_000 / filled / 60, 1)}


DUE = START + timedelta(days=2 * 366)  # every record inactive for two years


async def _life_run(where: Path, store: RoutingStore, codec: Any, on: datetime,
                    records: int | None = None) -> dict[str, Any]:
    """A real retention run on day `on`, as the server wires it (only the first `records`
    records due archived, if given); what it did."""
    chain = Chain(where / "audit-chain.db")
    try:
        audit = store.audit
        recorder = AuditRecorder(audit, chain)
        context = Context(store=store, validator=Validator(use_models=False),
                          registry=default_registry(), principal=server_principal("bench"),
                          erasures=erase.Erasures(
                              ErasureLedger(where / "erasure-ledger.jsonl",
                                            ledger_key(codec.keys.provider)),
                              codec.keys, recorder.record))
        life = Lifecycle(context, load_policy(), Pseudonyms(b"p" * 32), Holds(context),
                         Trimmer(audit, chain.path, b"c" * 32))
        with clock.frozen(on):
            if records is None:
                made = await run(life)
            else:
                made = await plan(life)
                made.actions = [a for a in made.actions if (a.rule, a.step) == (
                    "patient-record", "archive")][:records]
                await apply(life, made)
        return {"counts": made.counts(), "failed": len(made.failed),
                "failures": made.failures()[:3]}
    finally:
        chain.close()


async def _real_run(where: Path, store: RoutingStore, codec: Any,
                    records: int | None = None) -> dict[str, Any]:
    return await _life_run(where, store, codec, DUE, records)


def _written() -> int:
    """The bytes this process has written so far (`wchar`: to files, before the page cache)."""
    return int(next(line for line in Path("/proc/self/io").read_text().splitlines()
                    if line.startswith("wchar:")).split()[1])


def _apart(where: str, niceness: int, records: int | None) -> dict[str, Any]:
    """The real run in a process of its own (as `fhir-server retention run` from cron is),
    at `niceness`; what it did, and its CPU time."""
    os.nice(niceness)

    async def work() -> dict[str, Any]:
        codec = _codec(Path(where))
        main, audit = await _stores(Path(where), codec)
        try:
            return await _real_run(Path(where), RoutingStore(main, audit), codec, records)
        finally:
            await main.close()
            await audit.close()

    began, written = time.process_time(), _written()
    done = asyncio.run(work())
    return {**done, "cpu_s": time.process_time() - began, "written": _written() - written}


async def _run_apart(where: Path, niceness: int, records: int | None) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return await asyncio.get_running_loop().run_in_executor(pool, _apart, str(where), niceness,
                                                                records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.retention")
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--reads-per-s", type=float, default=50.0)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the real run here")
    parser.add_argument("--apart", type=int, metavar="NICENESS",
                        help="run the retention in a process of its own at this niceness")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="keep the built store in DIR and run on a copy of it")
    parser.add_argument("--records", type=int, metavar="K",
                        help="archive only the first K records due (a quicker measure of the "
                        "cost per record at the store's size)")
    parser.add_argument("--steady", action=argparse.BooleanOptionalAction, default=True,
                        help="run the next day's run after the real one (with --records, it "
                        "archives the rest: --no-steady leaves it out)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fhir-bench-retention-") as tmp:
        result = asyncio.run(bench(args.resources, args.reads_per_s, Path(tmp), args.profile,
                                   args.apart, args.idle_seconds, args.store, args.records,
                                   args.steady))
    result["machine"] = machine()
    print(result)
    print("written to", write_results("retention", result))


if __name__ == "__main__":
    main()
