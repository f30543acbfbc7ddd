"""CPU cost of blind indexes (docs/blind-indexes.md): on create and on search, side by side
with plaintext indexes, on the Synthea bundles (no timed assertions).

Run: `.venv/bin/python -m bench.blind [BUNDLE_DIR] [--repeat N] [--clones N]`, or
`--layouts N` for 5. alone: the SQL cost of the string rows of 3,000 new Patients after N
others, plaintext and blind.

Measured with `time.process_time` (CPU of the whole process, the SQLite writer thread
included), so the figures hold on a shared machine:
1. rewrite: `BlindIndex.entries` per resource, beside `extract` (the write path's extraction);
2. store: committing every resource to a fresh SQLite store (one unit of work per 100), with
   and without blind indexes: CPU per resource and index rows written;
3. search: `BlindIndex.query` per query, and a whole `store.search` of protected parameters on
   both stores;
4. `_sort` on a protected parameter: the in-memory sort per match.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.extraction import DEFAULT_DIR, load_resources  # noqa: E402
from bench.requests import _patient  # noqa: E402
from fhir_server.crypto import BlindDigest  # noqa: E402
from fhir_server.search import (  # noqa: E402
    BlindIndex,
    default_protected,
    default_registry,
    extract,
    parse_query,
)
from fhir_server.store import decrypted_sort  # noqa: E402
from fhir_server.store.base import Write  # noqa: E402
from fhir_server.store.sqlite import SqliteStore  # noqa: E402
from fhir_server.store.sqlite import index as sqlite_index  # noqa: E402

PROTECTED_TYPES = ("Patient", "Practitioner", "RelatedPerson")
QUERIES = [
    [("name", "mar")], [("family", "Gottlieb")], [("family:exact", "Gottlieb")],
    [("identifier", "http://hl7.org/fhir/sid/us-ssn|999-23-8054")], [("address-city", "boston")],
    [("birthdate", "ge1960"), ("given", "jo")], [("gender", "female")],
]


def cpu_us(work: Callable[[], Any], repeat: int) -> float:
    """Median CPU microseconds of `work` over `repeat` runs."""
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        work()
        runs.append((time.process_time() - start) * 1e6)
    return statistics.median(runs)


def blind_index() -> BlindIndex:
    keys = {}
    registry = default_registry()
    return BlindIndex(default_protected(registry),
                      BlindDigest(lambda param: keys.setdefault(param, os.urandom(32))), registry)


def clone(resources: list[dict[str, Any]], times: int) -> list[dict[str, Any]]:
    """`times` copies with fresh ids (references are not followed: the cost is per resource)."""
    out = []
    for n in range(times):
        for r in resources:
            copied = copy.deepcopy(r)
            copied["id"] = f"{r['id']}-{n}"
            out.append(copied)
    return out


def rewrite(resources: list[dict[str, Any]], blind: BlindIndex, repeat: int) -> None:
    people = [r for r in resources if r["resourceType"] in PROTECTED_TYPES]
    entries = [(r["resourceType"], extract(r)) for r in people]
    extraction = cpu_us(lambda: [extract(r) for r in people], repeat) / len(people)
    cold = blind_index()  # an empty token cache: every value seen for the first time
    first = cpu_us(lambda: [cold.entries(t, e) for t, e in entries], 1) / len(people)
    rewriting = cpu_us(lambda: [blind.entries(t, e) for t, e in entries], repeat) / len(people)
    rows = statistics.mean(len(blind.entries(t, e)) / len(e) for t, e in entries)
    print(f"1. per Patient/Practitioner ({len(people)}): extract {extraction:.1f} µs, "
          f"blind rewrite {first:.0f} µs with a cold token cache, {rewriting:.0f} µs warm; "
          f"{rows:.1f}x the entries")
    everything = [(r["resourceType"], extract(r)) for r in resources]
    total = cpu_us(lambda: [blind.entries(t, e) for t, e in everything], repeat) / len(resources)
    print(f"   over all {len(resources)} Synthea resources: blind rewrite {total:.2f} µs each")


async def store_cost(resources: list[dict[str, Any]], blind: BlindIndex | None,
                     folder: Path) -> tuple[float, int, SqliteStore]:
    store = SqliteStore(folder / ("blind.db" if blind else "plain.db"), blind=blind)
    await store.open()
    writes = [Write(r["resourceType"], r["id"], r, extract(r)) for r in resources]
    start = time.process_time()
    for n in range(0, len(writes), 100):
        await store.commit(writes[n:n + 100])
    cpu = (time.process_time() - start) * 1e6 / len(writes)
    with sqlite3.connect(store.path) as conn:
        rows = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
                   for t in ("idx_string", "idx_token"))
    return cpu, rows, store


async def search_cost(store: SqliteStore, repeat: int) -> float:
    queries = [parse_query("Patient", q)[0] for q in QUERIES]
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        for q in queries:
            await store.search(q)
        runs.append((time.process_time() - start) * 1e6 / len(queries))
    return statistics.median(runs)


async def stores(resources: list[dict[str, Any]], blind: BlindIndex, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        plain_cpu, plain_rows, plain = await store_cost(resources, None, Path(folder))
        blind_cpu, blind_rows, blinded = await store_cost(resources, blind, Path(folder))
        print(f"2. create, {len(resources)} resources on SQLite: plaintext {plain_cpu:.0f} µs CPU each, "
              f"blind {blind_cpu:.0f} µs (+{100 * (blind_cpu - plain_cpu) / plain_cpu:.1f} %); "
              f"string+token index rows {plain_rows} -> {blind_rows}")
        queries = [parse_query("Patient", q)[0] for q in QUERIES]
        rewrite_us = cpu_us(lambda: [blind.query(q) for q in queries], repeat * 20) / len(queries)
        plain_search, blind_search = await search_cost(plain, repeat), await search_cost(blinded, repeat)
        print(f"3. search: query rewrite {rewrite_us:.1f} µs; store.search plaintext "
              f"{plain_search:.0f} µs CPU, blind {blind_search:.0f} µs "
              f"({100 * (blind_search - plain_search) / plain_search:+.1f} %)")
        everyone = parse_query("Patient", [("_sort", "family"), ("_count", "1000")])[0]
        patients = (await blinded.search(dataclasses.replace(everyone, sort=()))).matches
        sort_us = cpu_us(lambda: decrypted_sort.order(everyone, patients), repeat) / len(patients)
        print(f"4. _sort on a protected parameter: {sort_us:.0f} µs CPU per match sorted in "
              "memory (bodies already opened; decryption adds its own cost)")
        await plain.close()
        await blinded.close()


STRING_ROWS = """
    CREATE TABLE idx_string (pk INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER,
                             value TEXT NOT NULL, exact TEXT NOT NULL);
    CREATE INDEX idx_string_value ON idx_string (pid, value, pk);
    CREATE INDEX idx_string_pk ON idx_string (pk, pid);"""


def _string_rows(pk: int, entries: list[Any]) -> list[tuple[Any, ...]]:
    """One resource's idx_string rows (pids by parameter)."""
    pid = {p: n for n, p in enumerate(sorted({e.param for e in entries}))}
    return [(pk, pid[e.param], e.value, e.exact) for e in entries if type(e).__name__ == "StringEntry"]


class _Rows:
    """A connection that only takes the rows: the Python of building them, without SQLite."""

    def executemany(self, sql: str, rows: Any) -> None:
        list(rows)


def python_side(blind: BlindIndex, entries: list[Any]) -> None:
    """CPU µs per new Patient of the blind rewrite and the building of its index rows."""
    ids = sqlite_index.ParamIds()
    for code in {e.param for e in entries[0]} | {e.param for e in blind.entries("Patient", entries[0])}:
        ids._ids["Patient", code] = len(ids._ids) + 1  # noqa: SLF001 - no database here
    for name, index in (("plaintext", None), ("blind", blind)):
        start = time.process_time()
        for pk, found in enumerate(entries):
            sqlite_index.insert(_Rows(), ids, pk, "Patient", found, index)  # type: ignore[arg-type]
        cpu = (time.process_time() - start) * 1e6 / len(entries)
        print(f"5. Python of the index rows of a new Patient, {name}: {cpu:.0f} µs CPU")


def layouts(blind: BlindIndex, folder: Path, stored: int, measured: int) -> None:
    """CPU µs per new Patient (bench/requests.py's) of writing its string rows, SQL only, in
    units of 32 Patients after `stored` others, with the store's pragmas: plaintext rows
    against blind ones."""
    plain = [extract(_patient(n, "x")) for n in range(stored + measured)]
    python_side(blind, plain[stored:])
    for name, index in (("plaintext rows", None), ("blind rows", blind)):
        written = [index.entries("Patient", e) if index else e for e in plain]
        path = folder / f"{name.replace(' ', '-')}.db"
        conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "cache_size = -65536"):
            conn.execute(f"PRAGMA {pragma}")
        conn.executescript(STRING_ROWS)
        rows = [_string_rows(pk, list(e)) for pk, e in enumerate(written)]
        insert = "INSERT INTO idx_string VALUES (?, ?, NULL, ?, ?)"
        conn.execute("BEGIN")
        for resource in rows[:stored]:
            conn.executemany(insert, resource)
        conn.execute("COMMIT")
        start = time.process_time()
        for unit in range(stored, stored + measured, 32):
            conn.execute("BEGIN")
            for resource in rows[unit:unit + 32]:
                conn.executemany(insert, resource)
            conn.execute("COMMIT")
        cpu = (time.process_time() - start) * 1e6 / measured
        conn.close()
        print(f"5. {name}: {cpu:.0f} µs CPU of SQL per new Patient after {stored:,}, "
              f"{sum(map(len, rows[stored:])) / measured:.0f} string rows each "
              f"({path.stat().st_size / 1e6:.0f} MB)")


def main(argv: list[str]) -> None:
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 5
    clones = int(argv[argv.index("--clones") + 1]) if "--clones" in argv else 3
    args = [a for a in argv if not a.startswith("--") and not a.isdigit()]
    resources = load_resources(Path(args[0]) if args else DEFAULT_DIR)
    blind = blind_index()
    if "--layouts" in argv:  # the SQL of the string rows, on bench/requests.py's Patients
        stored = int(argv[argv.index("--layouts") + 1])
        with tempfile.TemporaryDirectory() as folder:
            layouts(blind, Path(folder), stored, 3000)
        return
    rewrite(resources, blind, repeat)
    asyncio.run(stores(clone(resources, clones), blind, repeat))


if __name__ == "__main__":
    main(sys.argv[1:])
