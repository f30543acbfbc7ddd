"""Search benchmark on the SQLite store at scale (a benchmark, not a test: nothing asserts times).

Run from the repository root:

    .venv/bin/python -m bench.search [--resources 1000000] [--db PATH] [--rebuild]
                                     [--runs 100] [--seconds 20] [--only NAME,...] [--no-load]

1. Build (skipped when PATH exists from an earlier complete build of the same size, unless
   --rebuild): the Synthea sample plus a synthetic scale-up (bench/synthetic.py) to at least
   --resources resources, written through the store API directly: `extract(resource)` +
   `Write(...)` in large `store.commit([...])` batches. No validation: it is not what is
   measured here (bench/validation.py measures it). Load rates per resource type are printed.
2. Queries: a fixed set of typical searches, run through the service layer
   (`services.search.search(ctx, type, params, strict=False)`, the bundle serialised with
   orjson as the HTTP layer does), single client. Per query: warm-up, then up to --runs runs
   (at most --seconds each) cycling through varied parameter values drawn from the data;
   p50 / p99 / mean latency and throughput. Then one traced run captures every SQL statement
   the store executed; each is EXPLAINed (EXPLAIN QUERY PLAN) and re-run alone on a separate
   connection to time it and count SQLite VM steps (a proxy for rows scanned).
3. A table on stdout, and JSON with everything in bench/results/search-<time>.json.

Default database: /tmp/fhir-bench/search-<resources>.db (about 4 GB for 1M resources).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import load_average, machine, percentile, write_results  # noqa: E402
from bench.synthetic import INS_NIR, Cloner, load_sample  # noqa: E402
from fhir_server.access.principal import server_principal  # noqa: E402
from fhir_server.model.validation import Validator  # noqa: E402
from fhir_server.search import default_registry  # noqa: E402
from fhir_server.search.extract import Extractor  # noqa: E402
from fhir_server.services.context import Context  # noqa: E402
from fhir_server.services.search import search  # noqa: E402
from fhir_server.store.base import Write  # noqa: E402
from fhir_server.store.sqlite import SqliteStore  # noqa: E402
from fhir_server.store.sqlite.schema import MIGRATIONS  # noqa: E402

TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
BASE_URL = "http://localhost:8080/fhir"


# -- build ---------------------------------------------------------------------------------


def _files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), _meta_path(db)]


def _meta_path(db: Path) -> Path:
    return db.with_name(db.name + ".build.json")


def schema_fingerprint() -> str:
    """Changes whenever the store's DDL does: a database built on other DDL is rebuilt."""
    return hashlib.sha256("\n".join(MIGRATIONS).encode()).hexdigest()[:16]


def code_state() -> dict[str, Any]:
    """Which store code was measured: HEAD, local changes, a hash of fhir_server/store/*.py."""
    root = Path(__file__).resolve().parents[1]
    store_files = sorted((root / "fhir_server" / "store").glob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in store_files)).hexdigest()[:16]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return "?"

    return {"head": git("rev-parse", "--short", "HEAD"),
            "store_changes": git("status", "--porcelain", "--", "fhir_server/store").splitlines(),
            "store_sha256": digest, "schema": schema_fingerprint()}


@dataclass
class TypeLoad:
    count: int = 0
    entries: int = 0
    extract_s: float = 0.0
    write_s: float = 0.0


@dataclass
class Loader:
    """Extracts index entries and commits Writes in batches, timing both per resource type."""

    store: SqliteStore
    batch: int
    extractor: Extractor = field(default_factory=lambda: Extractor(default_registry()))
    per_type: dict[str, TypeLoad] = field(default_factory=lambda: collections.defaultdict(TypeLoad))
    pending: dict[str, list[Write]] = field(default_factory=dict)
    size: int = 0
    total: int = 0
    clone_s: float = 0.0

    async def add(self, resources: list[dict[str, Any]]) -> None:
        for resource in resources:
            rtype = resource["resourceType"]
            t0 = time.perf_counter()
            entries = self.extractor.extract(resource)
            stats = self.per_type[rtype]
            stats.extract_s += time.perf_counter() - t0
            stats.count += 1
            stats.entries += len(entries)
            self.pending.setdefault(rtype, []).append(
                Write(rtype, resource["id"], resource, entries, "POST")
            )
        self.size += len(resources)
        self.total += len(resources)
        if self.size >= self.batch:
            await self.flush()

    async def flush(self) -> None:
        # One commit per resource type and batch, so that write time can be told per type.
        for rtype, writes in self.pending.items():
            t0 = time.perf_counter()
            await self.store.commit(writes)
            self.per_type[rtype].write_s += time.perf_counter() - t0
        self.pending.clear()
        self.size = 0


async def build(db: Path, target: int, seed: int, batch: int) -> dict[str, Any]:
    for path in _files(db):
        path.unlink(missing_ok=True)
    db.parent.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(db, readers=1)
    await store.open()
    sample = load_sample()
    cloner = Cloner(sample, seed)
    loader = Loader(store, batch)
    print(f"building {db}: Synthea sample ({len(sample.shared)} shared, "
          f"{sum(map(len, sample.originals))} patient resources) + clones to {target:,} resources")
    started = time.perf_counter()
    last_report, last_count = started, 0
    await loader.add(sample.shared)
    for original in sample.originals:
        await loader.add(original)
    patients = len(sample.originals)
    population = cloner.population()
    while loader.total < target:
        t0 = time.perf_counter()
        _, resources = next(population)
        loader.clone_s += time.perf_counter() - t0
        await loader.add(resources)
        patients += 1
        now = time.perf_counter()
        if now - last_report >= 30:
            rate = (loader.total - last_count) / (now - last_report)
            print(f"  {loader.total:>9,} resources  {now - started:6.0f} s  "
                  f"{loader.total / (now - started):6.0f}/s overall  {rate:6.0f}/s last 30 s", flush=True)
            last_report, last_count = now, loader.total
    await loader.flush()
    elapsed = time.perf_counter() - started
    await store.close()
    # Checkpoint the WAL so the query phase starts from a compact main file.
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    info = {
        "target": target,
        "schema": schema_fingerprint(),
        "code": code_state(),
        "seed": seed,
        "batch": batch,
        "resources": loader.total,
        "patients": patients,
        "seconds": round(elapsed, 1),
        "rate_per_s": round(loader.total / elapsed),
        "clone_us_per_resource": round(loader.clone_s / loader.total * 1e6, 1),
        "validation": "none (not measured here)",
        "per_type": {
            rtype: {
                "count": s.count,
                "entries_per_resource": round(s.entries / s.count, 1),
                "extract_us": round(s.extract_s / s.count * 1e6, 1),
                "write_us": round(s.write_s / s.count * 1e6, 1),
                "rate_per_s": round(s.count / (s.extract_s + s.write_s)),
            }
            for rtype, s in sorted(loader.per_type.items(), key=lambda kv: -kv[1].count)
        },
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
    }
    _meta_path(db).write_text(json.dumps(info, indent=2))
    return info


def print_load(info: dict[str, Any]) -> None:
    print(f"\nload: {info['resources']:,} resources ({info['patients']:,} patients) in "
          f"{info['seconds']:.0f} s = {info['rate_per_s']:,} resources/s "
          f"(cloning {info['clone_us_per_resource']} µs/resource; no validation)")
    print(f"  {'type':<22}{'count':>9}{'entries':>9}{'extract µs':>12}{'write µs':>10}{'res/s':>8}")
    for rtype, s in info["per_type"].items():
        print(f"  {rtype:<22}{s['count']:>9,}{s['entries_per_resource']:>9}{s['extract_us']:>12}"
              f"{s['write_us']:>10}{s['rate_per_s']:>8,}")


# -- parameter values ----------------------------------------------------------------------


class Values:
    """Parameter values drawn from the stored data (read-only connection, seeded sampling)."""

    def __init__(self, db: Path, rng: random.Random) -> None:
        self.conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        self.rng = rng
        self.pids = {(t, c): p for p, t, c in self.conn.execute("SELECT pid, rtype, code FROM search_param")}

    def _bodies(self, rtype: str, n: int) -> list[dict[str, Any]]:
        pks = [r[0] for r in self.conn.execute(
            "SELECT pk FROM resource WHERE type = ? AND deleted = 0", (rtype,))]
        chosen = self.rng.sample(pks, min(n, len(pks)))
        return [orjson.loads(self.conn.execute(
            "SELECT h.body FROM resource a JOIN history h ON h.seq = a.seq WHERE a.pk = ?", (pk,)
        ).fetchone()[0]) for pk in chosen]

    def patients(self, n: int) -> list[dict[str, Any]]:
        return self._bodies("Patient", n)

    def observations(self, n: int) -> list[dict[str, Any]]:
        found = []
        for body in self._bodies("Observation", n * 2):
            codings = [c for c in body.get("code", {}).get("coding", []) if c.get("system") == LOINC]
            when = body.get("effectiveDateTime")
            subject = body.get("subject", {}).get("reference", "")
            if codings and when and subject.startswith("Patient/"):
                found.append({"patient": subject.removeprefix("Patient/"), "code": codings[0]["code"],
                              "date": when[:10]})
        return found[:n]

    def code_counts(self, rtype: str, param: str, system: str) -> list[tuple[str, int]]:
        pid = self.pids[(rtype, param)]
        return self.conn.execute(
            "SELECT code, count(*) FROM idx_token WHERE pid = ? AND system = ? GROUP BY code",
            (pid, system)).fetchall()


@dataclass
class Spec:
    """One benchmarked query: a name, a description and its parameter sets."""

    name: str
    shape: str
    rtype: str
    params: list[list[tuple[str, str]]]
    pages: int = 1  # > 1: follow `next` links, time only the last page


def _years(day: str, delta: int) -> str:
    return f"{int(day[:4]) + delta:04d}{day[4:]}" if day[5:] != "02-29" else f"{int(day[:4]) + delta:04d}-02-28"


def specs(values: Values, n: int, rng: random.Random) -> list[Spec]:
    patients = values.patients(max(n, 100))
    families = [p["name"][0]["family"] for p in patients]
    nirs = [i["value"] for p in patients for i in p.get("identifier", []) if i.get("system") == INS_NIR]
    observations = values.observations(max(n, 100))
    obs_patients = [o["patient"] for o in observations]
    condition_codes = [c for c, _ in values.code_counts("Condition", "code", SNOMED)]
    obs_codes = values.code_counts("Observation", "code", LOINC)
    frequent = [c for c, k in obs_codes if k >= 1100]

    def cycle(items: list[Any]) -> list[Any]:
        items = list(items)
        rng.shuffle(items)
        return [items[i % len(items)] for i in range(n)]

    return [
        Spec("patient_name", "Patient?name={family}", "Patient",
             [[("name", f)] for f in cycle(families)]),
        Spec("patient_identifier", f"Patient?identifier={INS_NIR}|{{nir}}", "Patient",
             [[("identifier", f"{INS_NIR}|{v}")] for v in cycle(nirs)]),
        Spec("obs_patient_code_date",
             "Observation?patient={id}&code=http://loinc.org|{code}&date=ge{d-2y}&date=le{d+2y}",
             "Observation",
             [[("patient", o["patient"]), ("code", f"{LOINC}|{o['code']}"),
               ("date", f"ge{_years(o['date'], -2)}"), ("date", f"le{_years(o['date'], 2)}")]
              for o in cycle(observations)]),
        Spec("condition_code", "Condition?code=http://snomed.info/sct|{code}", "Condition",
             [[("code", f"{SNOMED}|{c}")] for c in cycle(condition_codes)]),
        Spec("chain_subject_name", "Observation?subject:Patient.name={family}&code=http://loinc.org|{code}",
             "Observation",
             [[("subject:Patient.name", f), ("code", f"{LOINC}|{o['code']}")]
              for f, o in zip(cycle(families), cycle(observations), strict=True)]),
        Spec("has_observation_code", "Patient?_has:Observation:patient:code=http://loinc.org|{code}", "Patient",
             [[("_has:Observation:patient:code", f"{LOINC}|{c}")] for c, _ in cycle(obs_codes)]),
        Spec("include_subject", "Observation?patient={id}&_include=Observation:subject", "Observation",
             [[("patient", p), ("_include", "Observation:subject")] for p in cycle(obs_patients)]),
        Spec("revinclude_observations", "Patient?_id={id}&_revinclude=Observation:subject", "Patient",
             [[("_id", p), ("_revinclude", "Observation:subject")] for p in cycle(obs_patients)]),
        Spec("total_accurate", "Patient?name={family}&_total=accurate", "Patient",
             [[("name", f), ("_total", "accurate")] for f in cycle(families)]),
        Spec("sort_date_desc", "Observation?patient={id}&_sort=-date", "Observation",
             [[("patient", p), ("_sort", "-date")] for p in cycle(obs_patients)]),
        Spec("page_50", "Observation?code=http://loinc.org|{frequent code} (page 50 of 20)", "Observation",
             [[("code", f"{LOINC}|{c}")] for c in cycle(frequent)], pages=50),
        # Beyond the brief's list: a population-wide sort, the worst case of _sort.
        Spec("sort_code_date_desc", "Observation?code=http://loinc.org|{code}&_sort=-date", "Observation",
             [[("code", f"{LOINC}|{c}"), ("_sort", "-date")] for c, _ in cycle(obs_codes)]),
    ]


# -- running -------------------------------------------------------------------------------


def _next_params(bundle: dict[str, Any]) -> list[tuple[str, str]] | None:
    for link in bundle.get("link", []):
        if link["relation"] == "next":
            return parse_qsl(urlsplit(link["url"]).query)
    return None


async def run_one(ctx: Context, spec: Spec, params: list[tuple[str, str]]) -> tuple[float, int, Any]:
    """(seconds of the timed request, entries in its bundle, total)."""
    for _ in range(spec.pages - 1):
        bundle = await search(ctx, spec.rtype, params, strict=False)
        following = _next_params(bundle)
        if following is None:
            raise RuntimeError(f"{spec.name}: fewer than {spec.pages} pages for {params}")
        params = following
    t0 = time.perf_counter()
    bundle = await search(ctx, spec.rtype, params, strict=False)
    orjson.dumps(bundle)
    elapsed = time.perf_counter() - t0
    return elapsed, len(bundle.get("entry", [])), bundle.get("total")


def explain(conn: sqlite3.Connection, sql: str) -> list[str]:
    rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    depth = {0: -1}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return lines


def replay(conn: sqlite3.Connection, sql: str) -> dict[str, Any]:
    """Run one captured statement alone: rows, time, SQLite VM steps (thousands)."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 1000)
    t0 = time.perf_counter()
    rows = len(conn.execute(sql).fetchall())
    elapsed = time.perf_counter() - t0
    conn.set_progress_handler(None, 0)
    return {"rows": rows, "ms": round(elapsed * 1000, 2), "vm_ksteps": steps[0]}


_NOISE = re.compile(r"^(PRAGMA|SELECT pid FROM search_param|BEGIN|COMMIT)")


async def capture(store: SqliteStore, work: Callable[[], Awaitable[Any]]) -> list[str]:
    """Every SQL statement (values inlined) the store's reader runs during `work`."""
    statements: list[str] = []
    # The store has one reader connection here (readers=1); trace it.
    await store._read(lambda conn: conn.set_trace_callback(statements.append))
    try:
        await work()
    finally:
        await store._read(lambda conn: conn.set_trace_callback(None))
    return [s for s in statements if not _NOISE.match(s)]


async def measure(ctx: Context, store: SqliteStore, spec: Spec, runs: int, seconds: float,
                  probe: sqlite3.Connection, warmup: int) -> dict[str, Any]:
    params = spec.params
    for i in range(warmup):
        await run_one(ctx, spec, params[-1 - i % len(params)])
    load_before = load_average()
    latencies, entries, totals = [], [], []
    started = time.perf_counter()
    for i in range(runs):
        elapsed, n, total = await run_one(ctx, spec, params[i % len(params)])
        latencies.append(elapsed)
        entries.append(n)
        totals.append(total)
        if time.perf_counter() - started > seconds:
            break
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    p50, p99 = percentile(ordered, 50) * 1000, percentile(ordered, 99) * 1000
    # Throughput: timed requests per second of timing (for paging, of page 50 alone).
    qps = len(latencies) / sum(latencies)
    # The plan: one more traced run, with the parameters of the median run.
    median_index = min(range(len(latencies)), key=lambda i: abs(latencies[i] * 1000 - p50))
    sample = params[median_index % len(params)]
    if spec.pages > 1:
        # Trace page 50 only: walk to page 49 untraced, then trace the last request.
        walk = Spec(spec.name, spec.shape, spec.rtype, [], pages=1)
        current = sample
        for _ in range(spec.pages - 1):
            following = _next_params(await search(ctx, spec.rtype, current, strict=False))
            assert following is not None
            current = following
        statements = await capture(store, lambda: run_one(ctx, walk, current))
    else:
        statements = await capture(store, lambda: run_one(ctx, spec, sample))
    captured = []
    for sql in statements:
        captured.append({"sql": sql, "plan": explain(probe, sql), **replay(probe, sql)})
    return {
        "name": spec.name,
        "shape": spec.shape,
        "runs": len(latencies),
        "pages": spec.pages,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "qps": round(qps, 1),
        "wall_s": round(wall, 1),
        "entries_mean": round(statistics.fmean(entries), 1),
        "entries_max": max(entries),
        "total_mean": round(statistics.fmean(t for t in totals if t is not None), 1)
        if any(t is not None for t in totals) else None,
        "meets_target": p50 < TARGET_P50_MS and p99 < TARGET_P99_MS,
        "load_average": [load_before, load_average()],
        "plan_params": sample,
        "statements": captured,
    }


def store_facts(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    types = dict(conn.execute("SELECT type, count(*) FROM resource WHERE deleted = 0 GROUP BY type"))
    rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
            for t in ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_number",
                      "idx_quantity", "idx_uri", "idx_position")}
    size = sum(p.stat().st_size for p in _files(db)[:3] if p.exists())
    analyzed = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()[0]
    conn.close()
    return {"resources": sum(types.values()), "by_type": types, "index_rows": rows,
            "file_gib": round(size / 2**30, 2), "analyzed": bool(analyzed)}


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"\n{'query':<26}{'runs':>5}{'p50 ms':>9}{'p99 ms':>9}{'mean':>8}{'q/s':>8}"
          f"{'entries':>9}{'SQL ms':>8}{'VM k':>7}{'  target'}")
    for r in results:
        mark = "ok" if r["meets_target"] else "MISS"
        sql_ms = sum(s["ms"] for s in r["statements"])
        steps = sum(s["vm_ksteps"] for s in r["statements"])
        print(f"{r['name']:<26}{r['runs']:>5}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['mean_ms']:>8.2f}"
              f"{r['qps']:>8.1f}{r['entries_mean']:>9.1f}{sql_ms:>8.2f}{steps:>7}  {mark}")
    print("(SQL ms, VM k: the traced run's statements replayed alone: summed time and thousands of "
          "SQLite VM steps)")


def print_plans(results: list[dict[str, Any]]) -> None:
    for r in results:
        print(f"\n== {r['name']}: {r['shape']}")
        print(f"   traced with {urlencode_short(r['plan_params'])}")
        for s in r["statements"]:
            sql = s["sql"] if len(s["sql"]) < 400 else s["sql"][:400] + " ..."
            print(f"   -- {s['rows']} rows, {s['ms']} ms, {s['vm_ksteps']}k VM steps: {sql}")
            for line in s["plan"]:
                print(f"      {line}")


def urlencode_short(params: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" for k, v in params)


async def query_phase(db: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = random.Random(args.seed)
    values = Values(db, rng)
    all_specs = specs(values, args.runs, rng)
    if args.only:
        wanted = set(args.only.split(","))
        all_specs = [s for s in all_specs if s.name in wanted]
    store = SqliteStore(db, readers=1)
    await store.open()
    ctx = Context(store=store, validator=Validator(use_models=False), registry=default_registry(),
                  base_url=BASE_URL, default_page_size=20, max_page_size=1000,
                  principal=server_principal("bench"))
    probe = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    probe.execute("PRAGMA cache_size = -65536")
    results = []
    try:
        for spec in all_specs:
            runs = max(5, args.runs // 5) if spec.pages > 1 else args.runs
            warmup = 2 if spec.pages > 1 else args.warmup
            result = await measure(ctx, store, spec, runs, args.seconds, probe, warmup)
            print(f"  {spec.name:<26} p50 {result['p50_ms']:8.2f} ms  p99 {result['p99_ms']:8.2f} ms  "
                  f"{result['qps']:7.1f} q/s  ({result['runs']} runs, "
                  f"load {result['load_average'][0][0]:.2f})", flush=True)
            results.append(result)
    finally:
        await store.close()
        probe.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n")[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per query (paging: /5)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per query")
    parser.add_argument("--only", default="", help="comma-separated query names")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--batch", type=int, default=10_000, help="resources per commit round")
    parser.add_argument("--no-queries", action="store_true", help="build only")
    parser.add_argument("--reuse-stale", action="store_true",
                        help="reuse a database built on older store DDL (measure new queries on old indexes)")
    args = parser.parse_args(argv)
    db: Path = args.db or Path(f"/tmp/fhir-bench/search-{args.resources}.db")

    meta = _meta_path(db)
    info = json.loads(meta.read_text()) if meta.exists() and db.exists() else None
    stale = info is not None and info.get("schema") != schema_fingerprint() and not args.reuse_stale
    if stale:
        print(f"{db} was built on other store DDL: rebuilding")
    if args.rebuild or info is None or stale or info.get("target") != args.resources:
        info = asyncio.run(build(db, args.resources, args.seed, args.batch))
        built_now = True
    else:
        print(f"reusing {db} (built {info['finished']}; --rebuild to build again)")
        built_now = False
    print_load(info)
    if args.no_queries:
        return
    facts = store_facts(db)
    print(f"\nstore: {facts['resources']:,} current resources, {facts['file_gib']} GiB, "
          f"index rows {sum(facts['index_rows'].values()):,}; machine load {load_average()}")
    print(f"\nqueries ({args.runs} runs or {args.seconds:.0f} s each, after {args.warmup} warm-up runs):")
    results = asyncio.run(query_phase(db, args))
    print_table(results)
    print_plans(results)
    path = write_results("search", {
        "command": " ".join(["python -m bench.search", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "code": code_state(),
        "store": facts,
        "load": info,
        "load_built_in_this_run": built_now,
        "target": {"p50_ms": TARGET_P50_MS, "p99_ms": TARGET_P99_MS},
        "queries": results,
    })
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
