"""Proposed SQLite store changes, measured on the benchmark database (nothing is changed).

    .venv/bin/python -m bench.search_fixes [--db /tmp/fhir-bench/search-1000000.db] [--reps 5]

For each slow query of bench/search.py: the statement the store generates *now* (traced through
the service layer exactly as bench/search.py does) and a hand-written statement with the same
meaning, the shape proposed in docs/performance.md. Both are EXPLAINed, run `--reps` times on a
read-only connection (median), their SQLite VM steps counted, and their results compared (same
(type, id) in the same order), so a proposal cannot win by returning something else.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from bench.search import BASE_URL, LOINC, Values, capture, explain
from fhir_server.access.principal import server_principal
from fhir_server.model.validation import Validator
from fhir_server.search import default_registry, parse_query
from fhir_server.services.context import Context
from fhir_server.services.search import search
from fhir_server.store.sqlite import SqliteStore
from fhir_server.store.sqlite.predicates import TABLE_OF_TYPE, condition

COLS = "a.type, a.id, a.version, a.last_updated, h.method, h.body"


def timed(conn: sqlite3.Connection, sql: str, reps: int) -> dict[str, Any]:
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    times, rows = [], []
    for _ in range(reps):
        steps[0] = 0
        conn.set_progress_handler(tick, 1000)
        t0 = time.perf_counter()
        rows = conn.execute(sql).fetchall()
        times.append(time.perf_counter() - t0)
        conn.set_progress_handler(None, 0)
    return {"ms": statistics.median(times) * 1000, "ksteps": steps[0], "rows": rows}


def show(conn: sqlite3.Connection, label: str, sql: str, reps: int,
         reference: list[tuple[Any, ...]] | None = None, key: slice = slice(0, 2)) -> list[Any]:
    result = timed(conn, sql, reps)
    same = "" if reference is None else (
        "  same result" if [r[key] for r in result["rows"]] == [r[key] for r in reference]
        else "  RESULT DIFFERS")
    print(f"  -- {label}: {len(result['rows'])} rows, {result['ms']:.2f} ms, "
          f"{result['ksteps']}k VM steps{same}")
    for line in explain(conn, sql):
        print(f"       {line}")
    rows: list[Any] = result["rows"]
    return rows


class Fixes:
    def __init__(self, db: Path, reps: int) -> None:
        self.db = db
        self.reps = reps
        self.conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        self.conn.execute("PRAGMA cache_size = -65536")
        self.pid = {(t, c): p for p, t, c in self.conn.execute("SELECT pid, rtype, code FROM search_param")}

    async def traced(self, rtype: str, params: list[tuple[str, str]]) -> list[str]:
        store = SqliteStore(self.db, readers=1)
        await store.open()
        ctx = Context(store=store, validator=Validator(use_models=False), registry=default_registry(),
                      base_url=BASE_URL, principal=server_principal("bench"))
        try:
            return await capture(store, lambda: search(ctx, rtype, params, strict=False))
        finally:
            await store.close()

    def store_sql(self, rtype: str, params: list[tuple[str, str]]) -> list[str]:
        return asyncio.run(self.traced(rtype, params))

    def header(self, title: str) -> None:
        print(f"\n#### {title}")

    # -- cases ---------------------------------------------------------------------------

    def and_of_predicates(self, obs: dict[str, Any]) -> None:
        """AND of several predicates: one drives, the others are probed per candidate row."""
        day = obs["date"]
        params = [("patient", obs["patient"]), ("code", f"{LOINC}|{obs['code']}"),
                  ("date", f"ge{int(day[:4]) - 2}{day[4:]}"), ("date", f"le{int(day[:4]) + 2}{day[4:]}")]
        self.header("Observation?patient&code&date=ge&date=le  " + "&".join(f"{k}={v}" for k, v in params))
        before = self.store_sql("Observation", params)[0]
        ref = show(self.conn, "store now", before, self.reps)
        # The store's own per-row conditions (sqlite/predicates.condition), composed differently:
        # the first clause drives through its value index, the others probe the (pk, pid) index.
        query, _ = parse_query("Observation", params, default_registry(), base=BASE_URL)
        parts = []
        for n, clause in enumerate(query.clauses):
            predicate = clause.any_of[0]
            code: str = getattr(predicate, "param")  # simple predicates only here
            table = TABLE_OF_TYPE[self.registry_type("Observation", code)]
            sql, args = condition(predicate, "x")
            sql = _inline(sql, args)
            pid = self.pid[("Observation", code)]
            if n == 0:
                parts.append(f"a.pk IN (SELECT x.pk FROM {table} x WHERE x.pid = {pid} AND {sql})")
            else:
                parts.append(f"EXISTS (SELECT 1 FROM {table} x INDEXED BY {table}_pk "
                             f"WHERE x.pk = a.pk AND x.pid = {pid} AND {sql})")
        after = (f"SELECT {COLS}, a.pk FROM resource a JOIN history h ON h.seq = a.seq "
                 f"WHERE a.type = 'Observation' AND a.deleted = 0 AND {' AND '.join(parts)} "
                 f"ORDER BY a.pk LIMIT 21")
        show(self.conn, "proposed: most selective predicate drives (IN), the rest are EXISTS probes",
             after, self.reps, ref)

    def registry_type(self, rtype: str, code: str) -> str:
        param = default_registry().get(rtype, code)
        assert param is not None
        return param.type

    def include(self, patient: str) -> None:
        params = [("patient", patient), ("_include", "Observation:subject")]
        self.header(f"Observation?patient={patient}&_include=Observation:subject (the _include statement)")
        statements = self.store_sql("Observation", params)
        page = self.conn.execute(statements[0]).fetchall()
        include = next(s for s in statements if s.startswith("SELECT DISTINCT r.type, r.id"))
        ref = show(self.conn, "store now", include, self.reps)
        ids = ",".join(f"'{row[1]}'" for row in page[:20])
        after = (f"SELECT DISTINCT r.type, r.id FROM resource a CROSS JOIN idx_reference r ON r.pk = a.pk "
                 f"WHERE a.type = 'Observation' AND a.id IN ({ids}) "
                 f"AND r.pid IN ({self.pid[('Observation', 'subject')]}) "
                 f"AND r.url IS NULL AND r.type IS NOT NULL")
        show(self.conn, "proposed: CROSS JOIN, resource (type, id) first, then idx_reference (pk, pid)",
             after, self.reps, ref)

    def has(self, code: str, n: int) -> None:
        params = [("_has:Observation:patient:code", f"{LOINC}|{code}")]
        self.header(f"Patient?_has:Observation:patient:code={LOINC}|{code}  ({n:,} observations)")
        before = self.store_sql("Patient", params)[0]
        ref = show(self.conn, "store now", before, self.reps)
        patient, code_pid = self.pid[("Observation", "patient")], self.pid[("Observation", "code")]
        probe = (
            f"SELECT {COLS}, a.pk FROM resource a JOIN history h ON h.seq = a.seq "
            f"WHERE a.type = 'Patient' AND a.deleted = 0 AND EXISTS ("
            f"SELECT 1 FROM idx_reference r INDEXED BY idx_reference_target_any "
            f"CROSS JOIN idx_token x ON x.pk = r.pk AND x.pid = {code_pid} AND x.code = '{code}' "
            f"AND x.system = '{LOINC}' "
            f"WHERE r.id = a.id AND r.type = 'Patient' AND r.pid = {patient} AND r.url IS NULL) "
            f"ORDER BY a.pk LIMIT 21")
        show(self.conn, "proposed when the inner set is large: walk Patients in pk order, EXISTS probe",
             probe, self.reps, ref)
        bounded = (f"SELECT count(*) FROM (SELECT 1 FROM idx_token WHERE pid = {code_pid} "
                   f"AND code = '{code}' AND system = '{LOINC}' LIMIT 5000)")
        show(self.conn, "the bounded count that picks between the two (threshold 5000)", bounded, self.reps)

    def sort(self, code: str, n: int) -> None:
        params = [("code", f"{LOINC}|{code}"), ("_sort", "-date")]
        self.header(f"Observation?code={LOINC}|{code}&_sort=-date  ({n:,} matches)")
        before = self.store_sql("Observation", params)[0]
        ref = show(self.conn, "store now", before, self.reps)
        code_pid, date_pid = self.pid[("Observation", "code")], self.pid[("Observation", "date")]
        key = (f"coalesce((SELECT max(high) FROM idx_date INDEXED BY idx_date_pk "
               f"WHERE pk = a.pk AND pid = {date_pid}), -1.7e308)")
        where = (f"a.type = 'Observation' AND a.deleted = 0 AND a.pk IN (SELECT x.pk FROM idx_token x "
                 f"WHERE x.pid = {code_pid} AND x.code = '{code}' AND x.system = '{LOINC}')")
        late = (f"SELECT {COLS}, s.k0, s.pk FROM (SELECT a.pk, {key} AS k0 FROM resource a WHERE {where} "
                f"ORDER BY k0 DESC, a.pk LIMIT 21) s JOIN resource a ON a.pk = s.pk "
                f"JOIN history h ON h.seq = a.seq ORDER BY s.k0 DESC, s.pk")
        show(self.conn, "proposed (small match sets): sort keys only, bodies fetched for the page",
             late, self.reps, ref)
        driven = (
            f"SELECT {COLS}, d.high, a.pk FROM idx_date d INDEXED BY idx_date_high "
            f"CROSS JOIN resource a ON a.pk = d.pk JOIN history h ON h.seq = a.seq "
            f"WHERE d.pid = {date_pid} AND a.deleted = 0 "
            f"AND d.high = (SELECT max(high) FROM idx_date INDEXED BY idx_date_pk WHERE pk = d.pk "
            f"AND pid = {date_pid}) "
            f"AND EXISTS (SELECT 1 FROM idx_token x WHERE x.pk = a.pk AND x.pid = {code_pid} "
            f"AND x.code = '{code}' AND x.system = '{LOINC}') "
            f"ORDER BY d.high DESC, a.pk LIMIT 21")
        show(self.conn, "proposed (large match sets): walk the sort index, EXISTS probe the filter",
             driven, self.reps, ref)

    def chain(self, family: str, code: str) -> None:
        params = [("subject:Patient.name", family), ("code", f"{LOINC}|{code}")]
        self.header(f"Observation?subject:Patient.name={family}&code={LOINC}|{code}")
        before = self.store_sql("Observation", params)[0]
        ref = show(self.conn, "store now", before, self.reps)
        subject, code_pid = self.pid[("Observation", "subject")], self.pid[("Observation", "code")]
        name = self.pid[("Patient", "name")]
        value = family.lower()
        upper = value[:-1] + chr(ord(value[-1]) + 1)
        after = (
            f"SELECT {COLS}, a.pk FROM resource a JOIN history h ON h.seq = a.seq "
            f"WHERE a.type = 'Observation' AND a.deleted = 0 "
            f"AND a.pk IN (SELECT r.pk FROM idx_reference r WHERE r.pid = {subject} AND r.url IS NULL "
            f"AND r.type = 'Patient' AND r.id IN (SELECT t0.id FROM resource t0 WHERE t0.type = 'Patient' "
            f"AND t0.deleted = 0 AND t0.pk IN (SELECT x.pk FROM idx_string x WHERE x.pid = {name} "
            f"AND x.value >= '{value}' AND x.value < '{upper}'))) "
            f"AND EXISTS (SELECT 1 FROM idx_token x INDEXED BY idx_token_pk WHERE x.pk = a.pk "
            f"AND x.pid = {code_pid} AND x.code = '{code}' AND x.system = '{LOINC}') "
            f"ORDER BY a.pk LIMIT 21")
        show(self.conn, "proposed: the chain drives, the code is an EXISTS probe", after, self.reps, ref)


def _inline(sql: str, args: list[Any]) -> str:
    """`sql` with its `?` replaced by SQL literals of `args` (for EXPLAIN and replay)."""
    pieces = sql.split("?")
    assert len(pieces) == len(args) + 1
    out = [pieces[0]]
    for arg, piece in zip(args, pieces[1:], strict=True):
        literal = "NULL" if arg is None else ("'" + arg.replace("'", "''") + "'" if isinstance(arg, str) else repr(arg))
        out += [literal, piece]
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search_fixes")
    parser.add_argument("--db", type=Path, default=Path("/tmp/fhir-bench/search-1000000.db"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    fixes = Fixes(args.db, args.reps)
    values = Values(args.db, rng)
    obs = values.observations(5)
    counts = sorted(values.code_counts("Observation", "code", LOINC), key=lambda c: -c[1])
    picks = [counts[0], counts[len(counts) // 2], counts[-1]]
    family = values.patients(1)[0]["name"][0]["family"]
    fixes.and_of_predicates(obs[0])
    fixes.include(obs[1]["patient"])
    for code, n in picks:
        fixes.has(code, n)
    for code, n in picks:
        fixes.sort(code, n)
    fixes.chain(family, counts[0][0])


if __name__ == "__main__":
    main()
