"""Catalogue import rate (issue 17 §7: ≥ 300 trials/s): synthetic ECLAIRE trials, each the
IG example renumbered with its enrollment Group, its sponsor and ~5 sites, stored through
`trials.catalogue.store_all` (validation against the ECLAIRE profiles, indexing, one unit of
work per 50 trials, audit) on a fresh SQLite store; then the same again (all unchanged: reads and
comparisons only).

    .venv/bin/python -m bench.catalogue [--trials 10000] [--sites 5] [--profile]
                                        [--no-validate-with-models]

Reports wall time and process CPU time (the machine is shared: CPU is the steadier figure).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from fhir_server.app import open_context
from fhir_server.crypto import create_key_ring
from fhir_server.settings import Settings
from fhir_server.trials import catalogue
from tests.trials.eclaire import example_unit


def synthetic(trials: int, sites: int, seed: int = 17) -> list[dict[str, Any]]:
    """`trials` trials of about `sites` sites each (4 to 6 when `sites` is 5)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for n in range(trials):
        unit = example_unit(f"2024-5{n:05d}-10-00", sites=max(1, sites + rng.randint(-1, 1)),
                            status=rng.choice(["active", "active", "closed-to-accrual"]))
        out.extend(r for r in unit if not (r["resourceType"] == "Organization" and r["id"] == "ctis"))
    return out


async def run(trials: int, sites: int, profile: bool, models: bool = True) -> None:
    resources = synthetic(trials, sites)
    with tempfile.TemporaryDirectory() as tmp:
        create_key_ring(Path(tmp) / "keyring.json")  # stored bodies are sealed, as by default
        settings = Settings(data_dir=Path(tmp), publish_definitions=False, validate_with_models=models,
                            key_ring=None)
        async with open_context(settings) as ctx:
            for label in ("first load", "second load (unchanged)"):
                profiler = cProfile.Profile() if profile and label == "first load" else None
                wall, cpu = time.perf_counter(), time.process_time()
                if profiler:
                    profiler.enable()
                outcomes = (await catalogue.store_all(ctx, resources)).outcomes
                if profiler:
                    profiler.disable()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                print(f"{label}: {trials} trials, {len(resources)} resources "
                      f"({dict(outcomes)}) in {wall:.1f} s wall, {cpu:.1f} s CPU: "
                      f"{trials / wall:.0f} trials/s wall, {trials / cpu:.0f} trials/s CPU")
                if profiler:
                    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile the first load")
    parser.add_argument("--validate-with-models", action=argparse.BooleanOptionalAction, default=True,
                        help="the server's FHIR_SERVER_VALIDATE_WITH_MODELS (default on)")
    args = parser.parse_args()
    asyncio.run(run(args.trials, args.sites, args.profile, args.validate_with_models))


if __name__ == "__main__":
    main()
