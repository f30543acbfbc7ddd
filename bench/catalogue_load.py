"""`POST ResearchStudy/$load` in one process (issue 17 §7, "import ≥ 300 trials/s"): the trials
bench/match_server.py imports (the ECLAIRE example renumbered, its eligibility Group, ~5
recruiting sites among 500 hospitals), posted in Bundles of `--per-load` trials through the
whole app (routing, a SMART token, access, validation, indexing, sealing, audit) on a fresh
encrypted SQLite data directory; then the same Bundles again (all unchanged); then one more
Bundle of new trials and one look of the re-match job, timed alone.

    .venv/bin/python -m bench.catalogue_load [--trials 1000] [--per-load 100] [--poll 30 | --look-every 10]
                                             [--profile FILE]

CPU is `time.process_time` around the posts (the app runs in this process, its garbage
collector tuned as the server's, `workers.settle_heap`; the Bundles are built and serialised
before the clock starts). The server's re-match job looks every `--poll` seconds (30, as
`fhir-server serve`; 0: it never looks) while trials arrive, and its work counts in the CPU as
it does in a server's: the looks are counted and their wall time printed. How many fall in the
import depends on the machine's speed; `--look-every N` makes the job look after every N
Bundles instead (its own looks stopped), the same looks at the same points on every run.
`--profile` writes a cProfile of the first load to FILE and prints its top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson

from bench.common import load_average
from bench.match_server import hospitals, trial_unit
from fhir_server import clock
from fhir_server.app import create_app
from fhir_server.crypto import create_key_ring
from fhir_server.settings import Settings
from fhir_server.trials import rematch
from fhir_server.workers import settle_heap

NEVER = 1e9  # seconds between the job's looks: it never looks


def bundles(trials: int, per_load: int, sites: int, seed: int = 8) -> list[bytes]:
    """The `$load` bodies: `per_load` trials each, with the hospitals they use."""
    rng = random.Random(seed)
    places, today = hospitals(), clock.now().date()
    bodies = []
    for start in range(0, trials, per_load):
        units = [trial_unit(rng, n, sites, today) for n in range(start, min(trials, start + per_load))]
        used = {s["reference"] for u in units for s in u[0]["site"]}
        entries = [*(r for u in units for r in u), *(h for h in places if f"Location/{h['id']}" in used)]
        bodies.append(orjson.dumps({"resourceType": "Bundle", "type": "collection",
                                    "entry": [{"resource": r} for r in entries]}))
    return bodies


async def post_all(client: httpx.AsyncClient, bodies: list[bytes], headers: dict[str, str]) -> dict[str, int]:
    """Post every body to `$load`; the outcomes summed (RuntimeError on any other answer)."""
    outcomes: dict[str, int] = {}
    for body in bodies:
        response = await client.post("/ResearchStudy/$load", content=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"$load: {response.status_code} {response.text[:1000]}")
        for p in response.json()["parameter"]:
            outcomes[p["name"]] = outcomes.get(p["name"], 0) + p.get("valueInteger", 1)
    return outcomes


async def posted(app: Any, client: httpx.AsyncClient, bodies: list[bytes], headers: dict[str, str],
                 look_every: int) -> dict[str, int]:
    """Post `bodies`, the re-match job looking after every `look_every` of them (0: never)."""
    outcomes: dict[str, int] = {}
    step = look_every or len(bodies)
    for start in range(0, len(bodies), step):
        for name, count in (await post_all(client, bodies[start:start + step], headers)).items():
            outcomes[name] = outcomes.get(name, 0) + count
        if look_every:
            await rematch.look(app.state.context)
    return outcomes


def counted_looks() -> list[float]:
    """The wall time of each look the server's re-match job takes from now on."""
    looks: list[float] = []
    real = rematch.look

    async def timed(*args: Any, **kwargs: Any) -> rematch.Report:
        began = time.perf_counter()
        try:
            return await real(*args, **kwargs)
        finally:
            looks.append(time.perf_counter() - began)

    rematch.look = timed  # type: ignore[assignment]  # rematch.run calls it by this name
    return looks


async def one_look(app: Any, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> None:
    """A look with the catalogue kept, then one Bundle of new trials posted and the look that
    follows, timed alone (CPU of this process: the job's, with nothing else running)."""
    await rematch.look(app.state.context)
    await post_all(client, [body], headers)
    wall, cpu = time.perf_counter(), time.process_time()
    report = await rematch.look(app.state.context)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"one look after {report.studies} new trials: {cpu * 1000:.0f} ms CPU, {wall * 1000:.0f} ms wall; "
          f"load average {load_average()}")


async def run(trials: int, per_load: int, sites: int, poll: float, look_every: int,
              profile: Path | None) -> None:
    *bodies, extra = bundles(trials + per_load, per_load, sites)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        create_key_ring(where / "keyring.json")
        app = create_app(Settings(data_dir=where, key_ring=where / "keyring.json",
                                  notify_poll_seconds=(poll if not look_every else 0) or NEVER))
        looks = counted_looks()
        settle_heap()  # the garbage collector tuned as `fhir-server serve` tunes it once the app is loaded
        # The app runs on this thread's event loop (no TestClient thread), so that cProfile sees it.
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://bench/fhir", timeout=600) as client:
            issued = app.state.tokens.issue(subject="catalogue", client_id="catalogue", scope="system/*.cruds")
            headers = {"Authorization": f"Bearer {issued['access_token']}",
                       "Content-Type": "application/fhir+json"}
            for label in ("first load", "second load (unchanged)"):
                profiler = cProfile.Profile() if profile and label == "first load" else None
                wall, cpu = time.perf_counter(), time.process_time()
                with profiler or contextlib.nullcontext():
                    outcomes = await posted(app, client, bodies, headers, look_every)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                print(f"{label}: {trials} trials, {per_load} a Bundle ({outcomes}) in {wall:.1f} s wall, "
                      f"{cpu:.1f} s CPU: {trials / cpu:.0f} trials/s of CPU ({trials / wall:.0f}/s wall); "
                      f"{len(looks)} looks of the re-match job ({sum(looks):.1f} s wall); "
                      f"load average {load_average()}")
                looks.clear()
                if profiler and profile:
                    profiler.dump_stats(profile)
                    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            if not poll or look_every:
                await one_look(app, client, extra, headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--per-load", type=int, default=100, help="trials per $load Bundle")
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--poll", type=float, default=30.0,
                        help="seconds between the re-match job's looks (0: it never looks; then one "
                        "look after one more Bundle is timed alone)")
    parser.add_argument("--look-every", type=int, default=0,
                        help="the job looks after every N Bundles instead, whatever the machine's "
                        "speed (its own looks stopped)")
    parser.add_argument("--profile", type=Path, help="cProfile the first load into this file")
    args = parser.parse_args()
    asyncio.run(run(args.trials, args.per_load, args.sites, args.poll, args.look_every, args.profile))


if __name__ == "__main__":
    main()
