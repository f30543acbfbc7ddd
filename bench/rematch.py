"""Patients against trials in bulk (issue 17 §7): one trial against every patient (target p95
<= 2 s at 100,000 patients), a full re-match (<= 15 min at 10,000 trials x 100,000 patients),
and a re-match after 1% of the trials changed (<= 30 s); pairs pruned vs evaluated.

What is timed is the engine's work once the records are in memory, as
`ResearchStudy/{id}/$match` does it after reading them (trials/inverse.py: per patient, the
index of the one trial prunes, else the trial is evaluated): reading 100,000 records from the
store is not in it. Synthetic trials and patients are bench/matching.py's. CPU time is the
figure to read (the machine is shared).

    .venv/bin/python -m bench.rematch [--patients 100000] [--trials 10000] [--full-trials 10000]
                                      [--full-patients 100000] [--one 20] [--seed 7] [--workers 1]
    .venv/bin/python -m bench.rematch --job DIR [--job-full] [--patients N] [--trials N] [--workers N]

`--job DIR` measures the server's re-match job instead (trials/rematch.py; docs/matching.md,
"The re-match job"): a SQLite data directory (bodies encrypted under a key ring) is filled
once through `Store.commit` with the same synthetic patients, each with a Consent naming one of
PHYSICIANS physicians and a research Consent, one trial-matching Subscription per physician,
and the trials (ResearchStudy active, its eligibility Group); then a look (the fill is not
news), 1% of the trials written again and the job's look that re-matches them (the process's
first pass: it reads the Consents), another 1% and its look (the Consents' answer kept), and
with `--job-full` a full re-match (`fhir-server trials rematch`'s `full`) twice: the first
tells every match the looks did not, the second finds them told. CPU of this process (and of
the workers, in wall time), split by thread (the event loop, the SQLite writer, the readers),
and wall time are printed.

The full re-match runs at full size by default (about 3 minutes of CPU); smaller
`--full-trials` / `--full-patients` give a scaled run, extrapolated linearly. With `--workers
2` the full re-match splits the patients over two forked processes (the engine is pure: each
patient is matched alone) and reports each one's CPU time: the index built by the parent plus
the slowest worker is what it takes when both cores are free.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.common import load_average, percentile
from bench.matching import TODAY, synthetic_group, synthetic_patient
from bench.rematch_job import measure_job
from fhir_server.trials.eligibility import INELIGIBLE, TrialIndex, evaluate, pinned, read_record, read_trial
from fhir_server.trials.eligibility_format import Trial
from fhir_server.trials.eligibility_record import Record


def one_trial(trial: Trial, records: list[Record]) -> tuple[int, int, int]:
    """(pruned, evaluated, not ineligible): one trial against every record, as the inverse
    match does it."""
    index = TrialIndex([trial])
    pruned = evaluated = kept = 0
    for record in records:
        if index.candidates(record)[1]:
            pruned += 1
            continue
        evaluated += 1
        kept += evaluate(trial, record).verdict != INELIGIBLE
    return pruned, evaluated, kept


def _run(index: TrialIndex, records: list[Record]) -> tuple[int, int]:
    """(pruned, evaluated) pairs: every record against `index`."""
    pruned = evaluated = 0
    for record in records:
        found = index.verdicts(record)
        pruned += found.pruned
        evaluated += len(found.found)
    return pruned, evaluated


_SHARED: tuple[TrialIndex, list[Record]] | None = None  # a worker's, inherited through fork


def _share(index: TrialIndex, records: list[Record]) -> None:
    global _SHARED
    _SHARED = (index, records)


def _part(k: int, workers: int) -> tuple[int, int, float]:
    """Worker `k`'s share of the patients: (pruned, evaluated, its CPU seconds)."""
    assert _SHARED is not None
    index, records = _SHARED
    c0 = time.process_time()
    pruned, evaluated = _run(index, records[k::workers])
    return pruned, evaluated, time.process_time() - c0


def many(trials: list[Trial], records: list[Record], workers: int = 1) -> tuple[int, int, list[float]]:
    """(pruned, evaluated, each worker's CPU seconds): every record against the index of
    `trials`, in this process or split over `workers` forked ones."""
    index = TrialIndex(trials)
    if workers == 1:
        return (*_run(index, records), [])
    # fork: the workers inherit the index and the records instead of unpickling them.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_share, initargs=(index, records)) as pool:
        parts = list(pool.map(_part, range(workers), [workers] * workers))
    return sum(p[0] for p in parts), sum(p[1] for p in parts), [p[2] for p in parts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--full-trials", type=int, default=10_000, help="trials of the full re-match run")
    parser.add_argument("--full-patients", type=int, default=100_000, help="patients of the full re-match run")
    parser.add_argument("--one", type=int, default=20, help="trials timed one by one against every patient")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=1, help="processes of the full re-match")
    parser.add_argument("--job", type=Path, metavar="DIR", help="measure the server's job on a data directory kept here")
    parser.add_argument("--job-full", action="store_true", help="with --job: also a full re-match, twice")
    args = parser.parse_args()
    if args.job is not None:
        measure_job(args.job, args.patients, args.trials, args.workers, args.seed, args.job_full)
        return
    rng = random.Random(args.seed)
    started = time.process_time()
    trials = [read_trial(f"s{n:05d}", [synthetic_group(rng, n)]) for n in range(args.trials)]
    patients = [synthetic_patient(rng, n) for n in range(args.patients)]

    def fresh(count: int) -> list[Record]:
        """Records read anew: what one run judges of a patient is not left for the next."""
        return [read_record([(pinned(r), r) for r in resources], TODAY) for resources in patients[:count]]

    records = fresh(args.patients)
    print(f"built {args.trials} trials and {args.patients} patient records in "
          f"{time.process_time() - started:.1f} s CPU; load average {load_average()}")

    cpu, wall, pairs = [], [], [0, 0, 0]
    for trial in rng.sample(trials, args.one):
        # Each call reads its records anew (trials/inverse_counts.py): nothing judged for the
        # previous trial is kept.
        records = [dataclasses.replace(r, findings={}, verdicts={}) for r in records]
        c0, t0 = time.process_time(), time.perf_counter()
        found = one_trial(trial, records)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
        pairs = [a + b for a, b in zip(pairs, found)]
    cpu.sort()
    wall.sort()
    print(f"one trial x {args.patients} patients ({args.one} trials): CPU p50 {percentile(cpu, 50):.2f} s, "
          f"p95 {percentile(cpu, 95):.2f} s, max {cpu[-1]:.2f} s (wall p95 {percentile(wall, 95):.2f} s); "
          f"pairs {pairs[0]} pruned, {pairs[1]} evaluated, {pairs[2]} not ineligible")

    sample = fresh(args.full_patients)
    c0, t0 = time.process_time(), time.perf_counter()
    pruned, evaluated, workers = many(trials[:args.full_trials], sample, args.workers)
    parent, wall_full = time.process_time() - c0, time.perf_counter() - t0
    full = parent + max(workers, default=0)  # the critical path with a free core per worker
    scale = (args.trials / args.full_trials) * (args.patients / len(sample))
    split = (f" (parent {parent:.1f} s + slowest of {len(workers)} workers; "
             f"workers {', '.join(f'{w:.1f}' for w in workers)} s; wall {wall_full:.1f} s)") if workers else ""
    print(f"full re-match {args.full_trials} trials x {len(sample)} patients: {full:.1f} s CPU{split}; "
          f"{pruned} pairs pruned ({100 * pruned / (pruned + evaluated):.1f}%), {evaluated} evaluated; "
          f"x{scale:.0f} for {args.trials} x {args.patients}: ~{full * scale / 60:.1f} min CPU "
          f"({max(1, len(workers))} core(s))")

    changed = rng.sample(trials, max(1, args.trials // 100))
    del sample, records  # their judgements: memory
    records = fresh(args.patients)
    c0 = time.process_time()
    pruned, evaluated, _ = many(changed, records)
    print(f"re-match after 1% changed ({len(changed)} trials x {args.patients} patients): "
          f"{time.process_time() - c0:.1f} s CPU; {pruned} pairs pruned, {evaluated} evaluated")


if __name__ == "__main__":
    main()
