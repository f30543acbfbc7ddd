"""The embedded store on SQLite (stdlib sqlite3).

WAL journal, `synchronous=FULL` (a write is acknowledged only once it is on disk), one writer
thread per process and `BEGIN IMMEDIATE` transactions, so several uvicorn workers can share a
file: SQLite's lock serialises writers across processes and readers never block. Conditional
operations evaluate their query inside the write transaction, under that lock, so two racing
conditional creates cannot both insert. Layout and indexes: docs/storage.md.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ... import clock
from ...crypto import BodyCodec, PlainCodec
from ...model.errors import FhirError, Kind, fail
from ...private_files import make_private
from ...search import BlindIndex, IndexEntry, Query, Registry, default_registry, distance_km
from .. import index_layout
from . import compartment as sqlite_compartment
from . import dump as sqlite_dump
from . import erase as sqlite_erase
from . import index as sqlite_index
from ..base import (
    ConditionalCreate,
    ConditionalDelete,
    ConditionalUpdate,
    Delete,
    Erase,
    Erasure,
    HistoryPage,
    HistoryQuery,
    Operation,
    OperationFailed,
    Outbox,
    Result,
    SearchPage,
    Version,
    Write,
    outbox_changed,
)
from .index import ParamIds
from .jobs import SqliteJobs
from .lock import WriterLock
from .query import SqliteSearch
from .schedule import SqliteSchedule
from .schema import migrate
from ..bodies import (Prepared, Rewrite, opened, opened_history, opened_page, opened_records, opened_versions,
                      prepare, sealed, sealed_records)
from ..versions import stamp

T = TypeVar("T")

_CURRENT = (
    "SELECT r.type, r.id, r.version, r.last_updated, h.method, h.body "
    "FROM resource r JOIN history h ON h.seq = r.seq WHERE r.type = ? AND r.id = ?"
)
_BUSY_TIMEOUT_MS = 30_000


def _version(row: Sequence[Any]) -> Version:
    return Version(row[0], row[1], row[2], row[3], row[4], row[5])


class SqliteStore:
    """A Store on one SQLite database file."""

    def __init__(self, path: Path, *, registry: Registry | None = None, readers: int = 4,
                 codec: BodyCodec | None = None, blind: BlindIndex | None = None,
                 index_check: bool = False) -> None:
        """`index_check`: record the index layout in an empty store, refuse to open one
        written under another (store/index_layout.py): the clinical store as the server and
        the command line open it (the audit store has no blind index)."""
        self.path = path
        self.registry = registry or default_registry()
        self.codec = codec or PlainCodec()
        self.blind = blind  # protected parameters indexed as digests (search/blind.py)
        self.index_check = index_check
        self.ids = ParamIds()
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = asyncio.Lock()
        self._queued: list[_Queued] = []
        self._writers = WriterLock(path.with_name(path.name + ".writer"), _BUSY_TIMEOUT_MS / 1000)
        self.jobs = SqliteJobs(self)

    @classmethod
    def from_url(cls, url: str, codec: BodyCodec | None = None, *,
                 blind: BlindIndex | None = None, index_check: bool = False) -> SqliteStore:
        """`sqlite:///relative/or/absolute/path.db` (three slashes, then the path)."""
        if not url.startswith("sqlite:///"):
            raise ValueError("SQLite store URLs look like sqlite:///path/to/file.db")
        return cls(Path(url.removeprefix("sqlite:///")), codec=codec, blind=blind,
                   index_check=index_check)

    # -- connections ------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            make_private(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = OFF")
            conn.execute("PRAGMA cache_size = -65536")
            conn.execute("PRAGMA secure_delete = ON")  # erased rows are zeroed (erase.py)
            conn.create_function("fhir_distance_km", 4, distance_km, deterministic=True)
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    async def _run(self, pool: ThreadPoolExecutor, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, lambda: work(self._connection()))
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise fail(Kind.BUSY, "transient", "The store is busy; retry later.") from exc
            raise

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._readers, work)

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def setup(conn: sqlite3.Connection) -> None:
            # Workers starting together would otherwise race to switch the journal mode
            # ("database is locked" at once, whatever the busy timeout) and to migrate.
            self._writers.acquire()
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                migrate(conn)
                sqlite_index.build_lookups(conn)  # a restore cut short left them out (dump.py)
                # Fresh statistics for the planner, bounded in cost (sqlite.org/lang_analyze.html).
                conn.execute("PRAGMA analysis_limit = 1000")
                conn.execute("PRAGMA optimize")
                # What a process killed amid erasures whose checkpoint it deferred (a retention
                # run: `checkpoints_deferred`) left in the WAL goes before anything is served.
                sqlite_erase.checkpoint(conn)
            finally:
                self._writers.release()

        await self._run(self._writer, setup)
        if self.index_check:
            await index_layout.ensure(self, index_layout.layout_of(self.blind))

    async def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._writers.close()

    async def migrate(self) -> None:
        """The schema is migrated by `open` (a file of one process group: it is quick)."""
        await self.open()

    async def check(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1 FROM resource LIMIT 1").fetchall())

    def status(self) -> dict[str, Any]:
        return {"kind": "sqlite", "transactions": True}

    # -- reads -------------------------------------------------------------------------

    async def read(self, resource_type: str, id: str) -> Version | None:
        def work(conn: sqlite3.Connection) -> Version | None:
            row = conn.execute(_CURRENT, (resource_type, id)).fetchone()
            return opened(self.codec, _version(row)) if row else None

        return await self._read(work)

    async def vread(self, resource_type: str, id: str, version: int) -> Version | None:
        def work(conn: sqlite3.Connection) -> Version | None:
            row = conn.execute(
                "SELECT type, id, version, last_updated, method, body FROM history "
                "WHERE type = ? AND id = ? AND version = ?",
                (resource_type, id, version),
            ).fetchone()
            return opened(self.codec, _version(row)) if row else None

        return await self._read(work)

    async def count(self, resource_type: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            sql = "SELECT count(*) FROM resource WHERE type = ? AND deleted = 0"
            return int(conn.execute(sql, (resource_type,)).fetchone()[0])

        return await self._read(work)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        where: list[str] = []
        args: list[str | int] = []
        for column, value in (("type", query.resource_type), ("id", query.id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.since is not None:
            where.append("last_updated >= ?")
            args.append(query.since)
        if query.before_seq is not None:
            where.append("seq < ?")
            args.append(query.before_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = (
            f"SELECT type, id, version, last_updated, method, body, seq FROM history {clause} "
            "ORDER BY seq DESC LIMIT ?"
        )

        def work(conn: sqlite3.Connection) -> HistoryPage:
            rows = conn.execute(sql, (*args, query.count + 1)).fetchall()
            page = rows[: query.count]
            more = len(rows) > query.count
            return opened_history(self.codec, HistoryPage(
                versions=tuple(_version(r) for r in page),
                next_seq=page[-1][6] if more else None,
            ))

        return await self._read(work)

    async def search(self, query: Query, cursor: str | None = None) -> SearchPage:
        return await self._read(lambda conn: opened_page(self.codec, SqliteSearch(
            conn, self.ids, self.registry, self.blind, partial(opened, self.codec)).search(query, cursor)))

    async def gather(self, queries: Sequence[Query]) -> list[Version]:
        return await self._read(lambda conn: list(opened_versions(self.codec, sqlite_compartment.gather(
            conn, SqliteSearch(conn, self.ids, self.registry, self.blind), queries))))

    async def outbox(self, prefix: str) -> list[tuple[str, bytes]]:
        # A range on the key (UTF-8 orders as code points): the primary key's index is used,
        # where a substr() test would read every record (the subscriptions keep thousands).
        # Both bounds plain: `(? IS NULL OR key < ?)` left the scan unbounded above, reading
        # every record after the prefix's (the subscriptions' events, hundreds of thousands).
        if not prefix:
            return await self._read(lambda conn: opened_records(self.codec, conn.execute(
                "SELECT key, body FROM outbox ORDER BY key").fetchall()))
        after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return await self._read(lambda conn: opened_records(self.codec, conn.execute(
            "SELECT key, body FROM outbox WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, after)).fetchall()))

    async def rewrite_bodies(self, rewrite: Rewrite, after: str | None,
                             limit: int) -> tuple[int, str | None]:
        rows = await self._read(lambda conn: conn.execute(
            "SELECT seq, type, id, version, body FROM history WHERE seq > ? AND body IS NOT NULL "
            "ORDER BY seq LIMIT ?", (int(after or 0), limit)).fetchall())
        changed = [(new, seq, body) for seq, rtype, id, version, body in rows
                   if (new := rewrite(rtype, id, version, body)) is not None]

        def write(conn: sqlite3.Connection) -> None:
            self._begin(conn)
            try:
                conn.executemany("UPDATE history SET body = ? WHERE seq = ? AND body = ?", changed)
            except BaseException:
                self._end(conn, False)
                raise
            self._end(conn, True)

        if changed:
            async with self._write_lock:
                await self._run(self._writer, write)
        return len(changed), str(rows[-1][0]) if len(rows) == limit else None

    async def erase(self, compartment: Sequence[Query], last: tuple[str, str],
                    unless_updated_since: datetime | None = None, *,
                    checkpoint: bool = True) -> Erasure:
        [erased] = await self.erase_each([Erase(compartment, last, unless_updated_since)],
                                         checkpoint=checkpoint)
        if isinstance(erased, FhirError):
            raise erased
        return erased

    async def erase_each(self, erasures: Sequence[Erase], *,
                         checkpoint: bool = True) -> list[Erasure | FhirError]:
        def work(conn: sqlite3.Connection) -> list[Erasure | FhirError]:
            search = SqliteSearch(conn, self.ids, self.registry)
            erased = self._within(conn, lambda: sqlite_erase.remove_each(
                conn, search, self.codec, erasures))
            if checkpoint:
                sqlite_erase.checkpoint(conn)
            return erased

        async with self._write_lock:
            return await self._run(self._writer, work)

    async def checkpoint(self) -> None:
        async with self._write_lock:
            await self._run(self._writer, sqlite_erase.checkpoint)

    @asynccontextmanager
    async def checkpoints_deferred(self) -> AsyncIterator[None]:
        # SQLite's own checkpoint after a commit that leaves the WAL over `wal_autocheckpoint`
        # pages would copy home, after each record, the pages the next records change again:
        # raised for the block, on this process's writer connection only (a setting of the
        # connection; the server's other processes keep theirs).
        await self.checkpoint()
        before = await self._wal_pages(sqlite_erase.DEFERRED_WAL_PAGES)
        try:
            yield
        finally:
            try:
                await asyncio.shield(self._wal_pages(before))
            finally:
                await asyncio.shield(self.checkpoint())

    async def _wal_pages(self, pages: int) -> int:
        """Set the writer connection's `wal_autocheckpoint` to `pages`; what it was."""
        def work(conn: sqlite3.Connection) -> int:
            [before] = conn.execute("PRAGMA wal_autocheckpoint").fetchone()
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")
            return int(before)

        async with self._write_lock:
            return await self._run(self._writer, work)

    async def dump(self, count: int = 1000) -> AsyncIterator[list[Version]]:
        upto = await self._read(sqlite_dump.top)
        after = 0
        while found := await self._read(lambda conn: sqlite_dump.page(conn, after, upto, count)):
            after = found[-1][0]
            yield [version for _, version in found]

    async def load(self, versions: Sequence[tuple[Version, Sequence[IndexEntry]]]) -> None:
        await self._exclusive(lambda conn: sqlite_dump.load(conn, self.ids, versions, self.blind))

    async def loaded(self) -> None:
        await self._exclusive(sqlite_index.build_lookups)

    async def current(self, count: int = 1000) -> AsyncIterator[list[Version]]:
        after = 0
        while found := await self._read(lambda conn: sqlite_dump.current_page(conn, after, count)):
            after = found[-1][0]
            yield [version for _, version in found]

    async def reindex(self, versions: Sequence[tuple[Version, Sequence[IndexEntry]]]) -> int:
        return await self._exclusive(lambda conn: sqlite_dump.reindex(conn, self.ids, versions, self.blind))

    @property
    def schedule(self) -> SqliteSchedule:
        """Scheduled items and notification preferences (store/schedule.py)."""
        return SqliteSchedule(self._read, self._exclusive, self.codec)

    async def _exclusive(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in a write transaction of its own."""
        async with self._write_lock:
            return await self._run(self._writer, lambda conn: self._within(conn, lambda: work(conn)))

    # -- writes ------------------------------------------------------------------------

    # One SQLite transaction at a time per process (the asyncio lock), its statements all on
    # the writer thread. Across processes, writers take turns on the file lock, then BEGIN.

    def _begin(self, conn: sqlite3.Connection) -> None:
        self._writers.acquire()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._writers.release()
            raise

    def _end(self, conn: sqlite3.Connection, committed: bool) -> None:
        try:
            conn.execute("COMMIT" if committed else "ROLLBACK")
        except BaseException:
            # A COMMIT that fails (disk full, I/O error) stores nothing: the pids it created
            # are not ours to cache.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            committed = False
            raise
        finally:
            self._writers.release()
            self.ids.settle(committed)

    def _within(self, conn: sqlite3.Connection, work: Callable[[], T]) -> T:
        """`work` in a write transaction of its own (on the writer thread)."""
        self._begin(conn)
        try:
            result = work()
        except BaseException:
            self._end(conn, False)
            raise
        self._end(conn, True)
        return result

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteUnitOfWork]:
        async with self._write_lock:

            def begin(conn: sqlite3.Connection) -> _Unit:
                self._begin(conn)
                return _Unit(conn, self.ids, self.registry, self.codec, self.blind)

            unit = await self._run(self._writer, begin)
            try:
                yield _SqliteUnitOfWork(self, unit)
            except BaseException:
                await asyncio.shield(self._run(self._writer, lambda conn: self._end(conn, False)))
                raise
            await asyncio.shield(self._run(self._writer, lambda conn: self._end(conn, True)))

    async def commit(self, operations: Sequence[Operation]) -> list[Result]:
        # Group commit. Commits that queue up while another batch is written go together into
        # the next SQLite transaction, each in a savepoint of its own (a failing one leaves
        # the others untouched), so they share one turn of the write lock and one fsync.
        # A batch is one trip to the writer thread, BEGIN to COMMIT: the lock is never held
        # while this process's event loop serves other requests.
        mine = _Queued(operations, asyncio.get_running_loop().create_future())
        self._queued.append(mine)
        try:
            await self._write_lock.acquire()
        except asyncio.CancelledError:
            if mine in self._queued:  # not taken by a batch yet: never written
                self._queued.remove(mine)
            raise
        try:
            if not mine.outcome.done():
                batch, self._queued = self._queued, []
                job = asyncio.ensure_future(
                    self._run(self._writer, lambda conn: self._write_batch(conn, batch)))
                job.add_done_callback(lambda job: _settle(batch, job))
                await asyncio.wait([job])  # the batch ends even if this request is cancelled
        finally:
            self._write_lock.release()
        return await mine.outcome

    def _write_batch(self, conn: sqlite3.Connection, batch: list[_Queued]) -> list[list[Result] | Exception]:
        prepared = prepare(self.codec, self.registry, [op for queued in batch for op in queued.operations])
        self._begin(conn)
        outcomes: list[list[Result] | Exception] = []
        try:
            for queued in batch:
                conn.execute("SAVEPOINT queued")
                pending = self.ids.savepoint()
                try:
                    unit = _Unit(conn, self.ids, self.registry, self.codec, self.blind, prepared)
                    outcomes.append(unit.apply_all(queued.operations))
                except Exception as error:  # noqa: BLE001 - this commit's own outcome
                    # Whatever one commit raises (a client error, or a fault of its own such
                    # as a number orjson cannot write) is its alone: the others of the batch
                    # go on, unless the transaction itself is gone.
                    if not conn.in_transaction:
                        raise
                    conn.execute("ROLLBACK TO queued")
                    self.ids.rolled_back(pending)
                    outcomes.append(error)
                conn.execute("RELEASE queued")
        except BaseException:
            self._end(conn, False)
            raise
        self._end(conn, True)
        return outcomes


@dataclass
class _Queued:
    """A commit waiting for its batch: its operations, and where its outcome goes."""

    operations: Sequence[Operation]
    outcome: asyncio.Future[list[Result]]


def _settle(batch: list[_Queued], job: asyncio.Future[list[list[Result] | Exception]]) -> None:
    """Hand each commit of a written batch its results or its error."""
    for index, queued in enumerate(batch):
        if queued.outcome.done():  # its request was cancelled
            continue
        if job.cancelled():
            queued.outcome.cancel()
            continue
        outcome = job.exception() or job.result()[index]
        if isinstance(outcome, BaseException):
            queued.outcome.set_exception(outcome)
        else:
            queued.outcome.set_result(outcome)


class _SqliteUnitOfWork:
    """The UnitOfWork handle: each call runs on the writer thread inside the open transaction."""

    def __init__(self, store: SqliteStore, unit: _Unit) -> None:
        self._store = store
        self._unit = unit

    async def apply(self, operations: Sequence[Operation]) -> list[Result]:
        unit, store = self._unit, self._store

        def work(conn: sqlite3.Connection) -> list[Result]:
            unit.prepared = prepare(store.codec, store.registry, operations)
            return unit.apply_all(operations)

        return await store._run(store._writer, work)

    async def match_ids(self, query: Query, limit: int | None = None) -> list[str]:
        unit = self._unit
        return await self._store._run(
            self._store._writer, lambda conn: unit.search.match_ids(query, limit)
        )


def _check_if_match(expected: int | None, current: tuple[int, int, bool] | None, what: str) -> None:
    if expected is None:
        return
    if current is None or current[1] != expected or current[2]:
        raise fail(
            Kind.PRECONDITION_FAILED,
            "conflict",
            f"Version {expected} of {what} is not the current version.",
            details_code="MSG_VERSION_AWARE_CONFLICT",
        )


def _ambiguous(query: Query) -> Exception:
    return fail(
        Kind.PRECONDITION_FAILED,
        "multiple-matches",
        f"The search criteria match more than one {query.resource_type}.",
        details_code="MSG_TRANSACTION_DUPLICATE_ID",
    )


class _Unit:
    """One unit of work inside an open IMMEDIATE transaction; every write shares its time."""

    def __init__(self, conn: sqlite3.Connection, ids: ParamIds, registry: Registry,
                 codec: BodyCodec, blind: BlindIndex | None, prepared: Prepared | None = None) -> None:
        self.conn = conn
        self.prepared = prepared  # the compartments of the writes to come (bodies.prepare)
        self.ids = ids
        self.registry = registry
        self.codec = codec
        self.blind = blind
        self.search = SqliteSearch(conn, ids, registry, blind, partial(opened, codec))
        self.rows = sqlite_index.PendingRows()  # the writes' index rows, inserted together
        self.last_updated, self.micros = clock.instant_and_micros()
        self._seq: int | None = None  # the last history row this unit inserted (`_next_seq`)

    def apply_all(self, operations: Sequence[Operation]) -> list[Result]:
        """Apply `operations` in order; OperationFailed names the one that failed."""
        results: list[Result] = []
        for index, op in enumerate(operations):
            try:
                results.append(self.apply(op))
            except FhirError as error:
                self.rows.write(self.conn)  # the writes before it are whole, as the caller sees
                raise OperationFailed.at(index, error) from None
        self.rows.write(self.conn)
        return results

    def apply(self, op: Operation) -> Result:
        if not isinstance(op, Write):
            self.rows.write(self.conn)  # what follows reads the index or removes rows
        match op:
            case Write():
                return self.write(op)
            case Delete():
                return self.delete(op.resource_type, op.id, op.if_match)
            case ConditionalCreate():
                found = self.search.match_ids(op.query, limit=2)
                if not found:
                    return self.write(op.write)
                if len(found) > 1:
                    raise _ambiguous(op.query)
                existing = self.conn.execute(_CURRENT, (op.write.resource_type, found[0])).fetchone()
                return Result("matched", (opened(self.codec, _version(existing)),))
            case ConditionalUpdate():
                return self.conditional_update(op)
            case ConditionalDelete():
                found = self.search.match_ids(op.query, limit=None)
                if len(found) > 1 and not op.multiple:
                    raise _ambiguous(op.query)
                versions: list[Version] = []
                for id in found:
                    versions.extend(self.delete(op.query.resource_type or "", id, None).versions)
                return Result("deleted" if versions else "none", tuple(versions))
            case Outbox():
                for key, body in op.expect:
                    row = self.conn.execute("SELECT body FROM outbox WHERE key = ?", (key,)).fetchone()
                    if (row and opened_records(self.codec, [(key, row[0])])[0][1]) != body:
                        raise outbox_changed(key)
                self.conn.executemany("INSERT OR REPLACE INTO outbox (key, body) VALUES (?, ?)",
                                      sealed_records(self.codec, op.put))
                self.conn.executemany("DELETE FROM outbox WHERE key = ?", [(k,) for k in op.remove])
                return Result("none")
        raise TypeError(f"unknown operation {op!r}")

    def conditional_update(self, op: ConditionalUpdate) -> Result:
        found = self.search.match_ids(op.query, limit=2)
        if len(found) > 1:
            raise _ambiguous(op.query)
        if not found:
            return self.write(op.write)
        if op.id_given and op.write.id != found[0]:
            raise fail(
                Kind.INVALID,
                "invalid",
                f"The resource id '{op.write.id}' differs from the id of the resource "
                "matching the condition.",
                expression=f"{op.write.resource_type}.id",
                details_code="MSG_RESOURCE_ID_MISMATCH",
            )
        return self.write(replace(op.write, id=found[0]))

    def current(self, resource_type: str, id: str) -> tuple[int, int, bool] | None:
        """(pk, version, deleted) of the current version."""
        row = self.conn.execute(
            "SELECT pk, version, deleted FROM resource WHERE type = ? AND id = ?",
            (resource_type, id),
        ).fetchone()
        return (row[0], row[1], bool(row[2])) if row else None

    def _next_seq(self) -> int:
        """The `seq` the next history row gets. SQLite's AUTOINCREMENT gives one more than the
        largest of `sqlite_sequence` and the table's rowids: read once per unit, then counted
        on from each row this unit inserts (`_version_row`), so that a new resource row is
        written once, `seq` included, not inserted and then updated."""
        if self._seq is None:
            self._seq = self.conn.execute(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'history'), 0), "
                "coalesce((SELECT max(seq) FROM history), 0))").fetchone()[0]
        return self._seq + 1

    def _version_row(self, pk: int, rtype: str, id: str, version: int, method: str,
                     body: bytes | None, expected: int | None = None) -> None:
        """Insert a version's history row and point its resource row at it; `expected` is
        the `seq` a new resource row (`_new`) already holds."""
        seq = self.conn.execute(
            "INSERT INTO history (resource_pk, type, id, version, last_updated, method, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (pk, rtype, id, version, self.last_updated, method, body),
        ).lastrowid
        assert seq is not None
        self._seq = seq
        if expected is not None:
            if seq != expected:  # another writer's history row came between: point at ours
                self.conn.execute("UPDATE resource SET seq = ? WHERE pk = ?", (seq, pk))
            return
        self.conn.execute(
            "UPDATE resource SET version = ?, last_updated = ?, lu = ?, deleted = ?, seq = ? "
            "WHERE pk = ?",
            (version, self.last_updated, self.micros, body is None, seq, pk),
        )

    def _new(self, rtype: str, id: str) -> tuple[int, int]:
        """The pk of a new resource row (version 1, not deleted) and the `seq` it holds, that
        of the history row to follow; sqlite3.IntegrityError if `rtype/id` exists."""
        seq = self._next_seq()
        pk = self.conn.execute(
            "INSERT INTO resource (type, id, version, last_updated, lu, deleted, seq) "
            "VALUES (?, ?, 1, ?, ?, 0, ?)",
            (rtype, id, self.last_updated, self.micros, seq),
        ).lastrowid
        assert pk is not None
        return pk, seq

    def write(self, op: Write) -> Result:
        what = f"{op.resource_type}/{op.id}"
        if op.create_only and op.if_match is None:
            # A server-assigned id: the row's UNIQUE (type, id) is the check, no look-up first
            # (a failed INSERT undoes itself alone: the transaction goes on).
            try:
                current, (pk, expected), version = None, self._new(op.resource_type, op.id), 1
            except sqlite3.IntegrityError:
                raise fail(Kind.CONFLICT, "duplicate", f"{what} already exists.") from None
        else:
            current = self.current(op.resource_type, op.id)
            if op.create_only and current is not None:
                raise fail(Kind.CONFLICT, "duplicate", f"{what} already exists.")
            _check_if_match(op.if_match, current, what)
            if current is None:
                (pk, expected), version = self._new(op.resource_type, op.id), 1
            else:
                pk, previous, _ = current
                expected, version = None, previous + 1
                self.rows.write(self.conn)  # rows kept for this pk go before they are removed
                sqlite_index.remove(self.conn, pk)
        body = stamp(op.resource, op.id, version, self.last_updated)
        stored_body = sealed(self.codec, self.registry, op, version, body, self.prepared)
        self._version_row(pk, op.resource_type, op.id, version, op.method, stored_body, expected)
        self.rows.add(self.conn, self.ids, pk, op.resource_type, op.entries, self.blind)
        created = current is None or current[2]
        stored = Version(op.resource_type, op.id, version, self.last_updated, op.method, body)
        return Result("created" if created else "updated", (stored,))

    def delete(self, resource_type: str, id: str, if_match: int | None) -> Result:
        current = self.current(resource_type, id)
        _check_if_match(if_match, current, f"{resource_type}/{id}")
        if current is None or current[2]:
            return Result("none")
        pk, previous, _ = current
        self._version_row(pk, resource_type, id, previous + 1, "DELETE", None)
        sqlite_index.remove(self.conn, pk)
        deleted = Version(resource_type, id, previous + 1, self.last_updated, "DELETE", None)
        return Result("deleted", (deleted,))
