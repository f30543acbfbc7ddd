"""The re-match job measured through the store (`python -m bench.rematch --job DIR`; see
bench/rematch.py): fill a data directory once, then time a full re-match and a 1% re-match."""

from __future__ import annotations

import asyncio
import os
import random
import resource
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import load_average
from bench.matching import synthetic_group, synthetic_patient
from fhir_server.app import open_context
from fhir_server.crypto import create_key_ring
from fhir_server.search import extract
from fhir_server.settings import Settings
from fhir_server.store.base import Write
from fhir_server.trials import rematch
from fhir_server.trials.alerts import TRIAL_MATCHING
from fhir_server.trials.eligibility_codes import PROFILE
from fhir_server.workers import settle_heap
from tests.builders import consent

PHYSICIANS = 200  # each with ~500 patients at 100,000 (a physician's reach is read whole)
UNIT = 1000  # resources per unit of work when filling
FILTER = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"


def _trial(rng: random.Random, n: int, title: str = "") -> list[dict[str, Any]]:
    group = {**synthetic_group(rng, n), "id": f"g{n}", "meta": {"profile": [PROFILE]}}
    study = {"resourceType": "ResearchStudy", "id": f"s{n}", "status": "active",
             "title": title or f"Trial {n}", "enrollment": [{"reference": f"Group/g{n}"}]}
    return [group, study]


def _patient(rng: random.Random, n: int) -> list[dict[str, Any]]:
    physician = f"Practitioner/dr-{n % PHYSICIANS}"
    return [*synthetic_patient(rng, n), consent(f"p{n}", actor=physician) | {"id": f"cp{n}"},
            consent(f"p{n}", "research") | {"id": f"cr{n}"}]


def _subscription(n: int) -> dict[str, Any]:
    return {"resourceType": "Subscription", "id": f"sub{n}", "status": "active", "reason": "bench",
            "criteria": TRIAL_MATCHING,
            "_criteria": {"extension": [{"url": FILTER,
                                         "valueString": f"ResearchStudy?practitioner=Practitioner/dr-{n}"}]},
            "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook",
                        "payload": "application/fhir+json"}}


async def _write(ctx: Any, resources: list[dict[str, Any]]) -> None:
    for start in range(0, len(resources), UNIT):
        unit = resources[start:start + UNIT]
        for resource in unit:
            resource.pop("meta", None) if resource["resourceType"] != "Group" else None
        await ctx.store.commit([Write(r["resourceType"], r["id"], r, extract(r)) for r in unit])


async def _fill(settings: Settings, patients: int, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    async with open_context(settings) as ctx:
        await _write(ctx, [{"resourceType": "Practitioner", "id": f"dr-{n}", "active": True}
                           for n in range(PHYSICIANS)] + [_subscription(n) for n in range(PHYSICIANS)])
        for start in range(0, patients, 1000):
            await _write(ctx, [r for n in range(start, min(patients, start + 1000)) for r in _patient(rng, n)])
        await _write(ctx, [r for n in range(trials) for r in _trial(rng, n)])
        await rematch.start(ctx)


def _threads() -> dict[str, float]:
    """CPU seconds of this process's threads so far (Linux `/proc`), by kind: the event loop
    (the engine, parsing), the SQLite writer (sealing, commits), the readers (SQL, decryption)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    spent: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        name = names.get(int(tid), "other")
        kind = ("event loop" if name == "MainThread" else "writer" if "writer" in name
                else "readers" if "reader" in name else "other")
        spent[kind] = spent.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return spent


def _spent(before: dict[str, float]) -> str:
    after = _threads()
    return ", ".join(f"{kind} {after[kind] - before.get(kind, 0.0):.1f} s" for kind in sorted(after))


def _workers() -> float:
    """CPU seconds of the worker processes ended so far (a full re-match's pool)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


async def _rematch_changed(ctx: Any, trials: int, rng: random.Random, label: str) -> None:
    """1% of the trials written again, then the job's look that re-matches them."""
    changed = rng.sample(range(trials), max(1, trials // 100))
    await _write(ctx, [r for n in changed for r in _trial(random.Random(n), n, title=f"Trial {n}, amended {label}")])
    c0, t0, threads = time.process_time(), time.perf_counter(), _threads()
    report = await rematch.look(ctx)
    print(f"re-match after 1% changed ({len(changed)} trials written again), the job's look, {label}: "
          f"{rematch.summary(report)}; wall {time.perf_counter() - t0:.1f} s, "
          f"{time.process_time() - c0:.1f} s CPU ({_spent(threads)}); load average {load_average()}", flush=True)


async def _measure(settings: Settings, trials: int, workers: int, seed: int, full: bool) -> None:
    async with open_context(settings) as ctx:
        # The collector as a server's worker runs it (start-up frozen, rarer collections): with
        # Python's defaults, full collections walking the catalogue and the pass's state took
        # a fifth of a look's CPU at 100,000 patients, which a server does not spend.
        settle_heap()
        # A look first, past the margin it reads again: the writes of the fill are not news.
        await asyncio.sleep(rematch.MARGIN.total_seconds())
        report = await rematch.look(ctx)
        print(f"first look: {rematch.summary(report)}", flush=True)
        rng = random.Random(seed + 1)
        await _rematch_changed(ctx, trials, rng, "the process's first pass (Consents read)")
        await _rematch_changed(ctx, trials, rng, "a later pass (no Consent written since: kept)")
        if not full:
            return
        for run in ("first", "second"):  # the second finds every match told already
            c0, t0, threads, w0 = time.process_time(), time.perf_counter(), _threads(), _workers()
            report = await rematch.full(ctx, partial(open_context, settings), workers)
            print(f"full re-match ({run} run), {workers} worker(s): {rematch.summary(report)}; "
                  f"wall {time.perf_counter() - t0:.1f} s, this process {time.process_time() - c0:.1f} s CPU "
                  f"({_spent(threads)}), its workers {_workers() - w0:.1f} s CPU; "
                  f"load average {load_average()}", flush=True)


def measure_job(where: Path, patients: int, trials: int, workers: int, seed: int, full: bool) -> None:
    where.mkdir(parents=True, exist_ok=True)
    ring = where / "keyring.json"
    os.environ["FHIR_SERVER_KEY_RING"] = str(ring)
    os.environ["FHIR_SERVER_DATA_DIR"] = str(where)
    settings = Settings(data_dir=where, key_ring=ring)
    if not ring.exists():
        create_key_ring(ring)
        c0, t0 = time.process_time(), time.perf_counter()
        asyncio.run(_fill(settings, patients, trials, seed))
        print(f"filled {patients} patients, {trials} trials, {PHYSICIANS} subscribed physicians in "
              f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU", flush=True)
    asyncio.run(_measure(settings, trials, workers, seed, full))
