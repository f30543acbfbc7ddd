"""Data keys: one random AES-256 key per patient compartment, one per resource type outside
any compartment, each stored only wrapped by the key ring's key-encryption key.

Wrapped keys live in their own SQLite file (`datakeys.db`, beside the databases but never
inside them nor in their backups), so destroying a patient's keys there makes every copy of
their ciphertext unreadable: the store, its WAL, the audit trail and any backup (docs/security.md).
Keys are random, never derived from a master key: a derived key could be derived again.

Unwrapped keys are cached in memory (a bounded LRU), as bytes: a cached cipher object costs
1.4 KB of OpenSSL state and is an object the cyclic garbage collector walks at every full
collection (100,000 of them: 13 ms a walk, docs/security.md), where a key's bytes are
neither. Only the ciphers of the `CIPHERS` keys used last are kept: making one costs 1.4 µs
(3.7 on average) in a busy server, and a request uses its patient's key two or three times
within moments (a read opens the body, then its AuditEvent is sealed under the same key).
Another process's destroy, rotation or re-wrap bumps a revision number that every process
checks at most once a second, so a key destroyed elsewhere is forgotten here within that
second, its cipher with it.

A rotated-out key is kept, retired (it opens, never seals), until every backup taken before
its rotation has aged out of the backup retention: `prune` destroys it then. Erasure
destroys a scope's keys at once, retired ones included.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import clock
from ..private_files import make_private
from .envelope import KEY_ID_BYTES
from .keyring import KEY_BYTES, KeyProvider, KeyRingError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_key (
    key_id   BLOB PRIMARY KEY,
    scope    TEXT    NOT NULL,   -- Patient/<id>, or a resource type
    wrapped  BLOB    NOT NULL,
    current  INTEGER NOT NULL,   -- 1: new writes of the scope use it
    created  TEXT    NOT NULL,
    retired  TEXT                -- when a rotation replaced it (it only opens); NULL: in use
);
CREATE UNIQUE INDEX IF NOT EXISTS data_key_current ON data_key (scope) WHERE current = 1;
CREATE INDEX IF NOT EXISTS data_key_scope ON data_key (scope);
-- Ids (never keys) of the keys erasures destroyed: a body sealed under one is shredded; a body
-- sealed under a key neither here nor in data_key is a fault (500), not an erasure.
CREATE TABLE IF NOT EXISTS destroyed (key_id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revision (n INTEGER NOT NULL);
INSERT INTO revision SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM revision);
"""
RECHECK_SECONDS = 1.0
CIPHERS = 256  # more than the requests in flight together, each with its patient's key
K = TypeVar("K")
V = TypeVar("V")


class KeyDestroyed(Exception):
    """The data key a ciphertext names was destroyed by an erasure (its compartment's)."""


class UnknownKey(KeyRingError):
    """The data key a ciphertext names was never made here, or is gone without an erasure
    (another server's datakeys.db, a damaged or stale copy): a fault, never an erasure."""


def patient_scope(patient_id: str) -> str:
    """The scope of a patient compartment's key."""
    return f"Patient/{patient_id}"


def type_scope(resource_type: str) -> str:
    """The scope of the key of a type's resources outside any patient compartment."""
    return resource_type


@dataclass(frozen=True, slots=True)
class DataKeysStatus:
    """Counts for `keys status`: scopes with a key, keys, and keys per KEK."""

    scopes: int
    keys: int
    by_kek: dict[str, int]


class DataKeys:
    """The wrapped data keys in `path`, unwrapped by `provider` on demand. Thread-safe."""

    def __init__(self, provider: KeyProvider, path: Path, cache_size: int = 10_000) -> None:
        self.provider = provider
        self.path = path
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.RLock()
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()  # key id -> unwrapped key
        self._current: OrderedDict[str, bytes] = OrderedDict()  # scope -> key id
        self._ciphers: OrderedDict[bytes, AESGCM] = OrderedDict()  # key id -> its cipher
        # The keys each thread's last `prepare` readied, by thread: a batch larger than the
        # cache would otherwise evict its first keys before sealing with them, then load each
        # again, one query and one unwrap per version. Held until that thread's next prepare.
        self._held: dict[int, dict[str, tuple[bytes, bytes]]] = {}
        self._revision = self._read_revision()
        self._checked = time.monotonic()

    # -- the codec's two questions ---------------------------------------------------------

    def current(self, scope: str) -> tuple[bytes, AESGCM]:
        """The key new versions of `scope` are sealed with, created on first use."""
        self._recheck()
        with self._lock:  # the revision and the keys it holds, read together (_forget changes all)
            revision = self._revision
            held = self._held.get(threading.get_ident())
            found = held.get(scope) if held is not None else None
            if found is not None:
                key_id, key = found
            else:
                key_id = self._current.get(scope)
                key = self._keys.get(key_id) if key_id is not None else None
                if key_id is not None and key is not None:
                    self._current.move_to_end(scope)
                    self._keys.move_to_end(key_id)
        if key_id is None or key is None:
            key_id, key = self._load([scope])[scope]
        return key_id, self._cipher(key_id, key, revision)

    def prepare(self, scopes: Iterable[str]) -> None:
        """Have the current keys of `scopes` in memory, making those that are missing in one
        write of the file (one fsync for a whole group commit, not one per new patient); this
        thread's `current` finds them there until its next `prepare`, however many they are."""
        self._recheck()
        held: dict[str, tuple[bytes, bytes]] = {}
        wanted: set[str] = set()
        with self._lock:
            revision = self._revision
            for scope in scopes:
                key_id = self._current.get(scope)
                key = self._keys.get(key_id) if key_id is not None else None
                if key_id is None or key is None:
                    wanted.add(scope)
                else:
                    held[scope] = (key_id, key)
        if wanted:
            held.update(self._load(wanted))
        with self._lock:
            if self._revision == revision:  # else keys changed meanwhile: nothing is held
                self._held[threading.get_ident()] = held
            else:
                self._held.pop(threading.get_ident(), None)

    def fetch(self, key_ids: Collection[bytes]) -> None:
        """Have the keys `key_ids` in memory, those missing read in one query per 500 (the
        keys of a page of bodies about as many patients). A key the file does not hold is
        left for `cipher` to report."""
        self._recheck()
        with self._lock:
            revision = self._revision
            wanted = sorted(k for k in key_ids if k not in self._keys)[:self._cache_size]
        unwrapped = [(bytes(key_id), self.provider.unwrap(wrapped, key_id)) for key_id, wrapped
                     in self._rows_in("SELECT key_id, wrapped FROM data_key WHERE key_id IN ({marks})", wanted)]
        with self._lock:
            if self._revision != revision:  # keys changed meanwhile (an erasure?): keep none
                return
            for key_id, key in unwrapped:
                self._remember(self._keys, key_id, key)

    def cipher(self, key_id: bytes) -> AESGCM:
        """The key `key_id`, unwrapped; KeyDestroyed if it is gone."""
        self._recheck()
        with self._lock:
            revision = self._revision
            key = self._keys.get(key_id)
            if key is not None:
                self._keys.move_to_end(key_id)
        if key is not None:
            return self._cipher(key_id, key, revision)
        rows = self._query("SELECT wrapped FROM data_key WHERE key_id = ?", (key_id,))
        if not rows:
            if self._query("SELECT 1 FROM destroyed WHERE key_id = ?", (key_id,)):
                raise KeyDestroyed(f"data key {key_id.hex()} was destroyed by an erasure")
            raise UnknownKey(f"data key {key_id.hex()} is unknown to {self.path} (never made "
                             "there, or removed without an erasure)")
        key = self.provider.unwrap(rows[0][0], key_id)
        with self._lock:
            if self._revision == revision:  # else destroyed meanwhile, perhaps: answer, not cache
                self._remember(self._keys, key_id, key)
        return self._cipher(key_id, key, revision)

    # -- administration --------------------------------------------------------------------

    def destroy(self, scope: str) -> int:
        """Destroy every key of `scope` (erasure): what they sealed is unreadable from now on,
        in every copy. Idempotent; returns how many keys were destroyed. The file's freed
        pages are overwritten (secure_delete) and its WAL truncated, so no wrapped copy lingers."""
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO destroyed SELECT key_id FROM data_key WHERE scope = ?",
                         (scope,))
            gone = conn.execute("DELETE FROM data_key WHERE scope = ?", (scope,)).rowcount
        self._query("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

    def destroy_keys(self, key_ids: Iterable[bytes]) -> int:
        """Destroy the keys `key_ids` (erasures the ledger records, again: a datakeys.db put
        back from a key backup taken before them must not bring them back); how many."""
        key_ids = list(key_ids)
        with self._write() as conn:
            conn.executemany("INSERT OR IGNORE INTO destroyed VALUES (?)", ((k,) for k in key_ids))
            gone = sum(conn.execute("DELETE FROM data_key WHERE key_id = ?", (key_id,)).rowcount
                       for key_id in key_ids)
        self._query("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

    def rotate(self, scope: str) -> bytes:
        """Give `scope` a new current key; its older keys still open what they sealed until
        `retire` (after the re-encryption job moved every version to the new key)."""
        key_id = os.urandom(KEY_ID_BYTES)
        wrapped = self.provider.wrap(os.urandom(KEY_BYTES), key_id)
        with self._write() as conn:
            conn.execute("UPDATE data_key SET current = 0 WHERE scope = ? AND current = 1", (scope,))
            conn.execute("INSERT INTO data_key VALUES (?, ?, ?, 1, ?, NULL)",
                         (key_id, scope, wrapped, clock.instant()))
        return key_id

    def retire(self, scope: str, keep: bytes) -> int:
        """Retire the keys of `scope` other than `keep` (their stored versions were sealed
        again): they still open older backups' versions until `prune`; returns how many."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE data_key SET retired = ? WHERE scope = ? AND key_id != ? AND retired IS "
                "NULL", (clock.instant(), scope, keep)).rowcount

    def keys_of(self, scope: str, retired: bool = False) -> list[bytes]:
        """The ids of the keys `scope` uses (`retired`: retired ones too), current first."""
        return [row[0] for row in self._query(
            "SELECT key_id FROM data_key WHERE scope = ? AND (? OR retired IS NULL) "
            "ORDER BY current DESC", (scope, retired))]

    def prune(self, before: datetime) -> tuple[int, list[str]]:
        """Destroy the data keys retired before `before`, then the retired KEKs retired before
        it that wrap no data key any more (re-wrap first); (data keys, KEK ids) destroyed.
        `before` is now minus the backup retention: no kept archive still needs them."""
        with self._write() as conn:
            gone = conn.execute("DELETE FROM data_key WHERE retired < ?",
                                (clock.instant(before),)).rowcount
        if gone:
            self._query("PRAGMA wal_checkpoint(TRUNCATE)")
        used = self.status().by_kek
        keks = [kek for kek, at in self.provider.status().retired.items()
                if at < before and not used.get(kek)]
        for kek in keks:
            self.provider.destroy(kek)
        return gone, keks

    def rewrap(self, batch: int = 1000) -> int:
        """Re-wrap, under the active KEK, up to `batch` keys wrapped under an older one; returns
        how many (0: done). The unwrapped key never changes, so traffic goes on meanwhile."""
        active = self.provider.status().active
        # Every provider's wrapped key names its KEK in bytes 2-9 (crypto/keyring.py): the
        # stale ones are found by the file, a batch at a time, not by reading every key.
        stale = self._query("SELECT key_id, wrapped FROM data_key WHERE substr(wrapped, 2, 8) != ? "
                            "LIMIT ?", (bytes.fromhex(active), batch))
        rewrapped = [(self.provider.wrap(self.provider.unwrap(w, k), k), k, w) for k, w in stale]
        with self._write() as conn:
            # A key destroyed or re-wrapped meanwhile keeps its newer row.
            conn.executemany("UPDATE data_key SET wrapped = ? WHERE key_id = ? AND wrapped = ?",
                             rewrapped)
        return len(rewrapped)

    def check(self) -> None:
        """KeyRingError unless the provider unwraps the newest data key under each KEK the file
        names: a server started with the wrong key ring stops here, before serving."""
        for key_id, wrapped in self._query(
                "SELECT key_id, wrapped FROM data_key WHERE rowid IN (SELECT max(rowid) FROM "
                "data_key GROUP BY substr(wrapped, 2, 8))"):
            try:
                self.provider.unwrap(wrapped, key_id)
            except KeyRingError as error:
                raise KeyRingError(f"the key ring cannot open the stored data keys ({error}): "
                                   f"is it the key ring of {self.path}?") from None

    def verify(self) -> list[str]:
        """Unwrap every key; the problems found (empty: every key unwraps)."""
        problems = []
        for key_id, scope, wrapped in self._query("SELECT key_id, scope, wrapped FROM data_key"):
            try:
                self.provider.unwrap(wrapped, key_id)
            except Exception as error:  # noqa: BLE001 - each key's problem is reported
                problems.append(f"data key {key_id.hex()} of {scope}: {error}")
        return problems

    def status(self) -> DataKeysStatus:
        by_kek: dict[str, int] = {}
        for (wrapped,) in self._query("SELECT wrapped FROM data_key"):
            kek = self.provider.kek_of(wrapped)
            by_kek[kek] = by_kek.get(kek, 0) + 1
        scopes = self._query("SELECT count(DISTINCT scope) FROM data_key")[0][0]
        return DataKeysStatus(scopes, sum(by_kek.values()), by_kek)

    def close(self) -> None:
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- inside ----------------------------------------------------------------------------

    def _load(self, scopes: Iterable[str]) -> dict[str, tuple[bytes, bytes]]:
        """The current keys of `scopes` from the file, those missing made and stored first;
        remembered in the cache unless keys changed meanwhile (an erasure destroyed them?)."""
        with self._lock:
            revision = self._revision
        found = self._stored(scopes)
        made = [(os.urandom(KEY_ID_BYTES), scope, os.urandom(KEY_BYTES))
                for scope in sorted(set(scopes) - found.keys())]
        if made:
            with self._write(bump=False) as conn:
                # A scope whose key another process made meanwhile keeps that one.
                fresh = [(key_id, scope, key) for key_id, scope, key in made if conn.execute(
                    "INSERT OR IGNORE INTO data_key VALUES (?, ?, ?, 1, ?, NULL)",
                    (key_id, scope, self.provider.wrap(key, key_id), clock.instant())).rowcount]
            found.update((scope, (key_id, key)) for key_id, scope, key in fresh)
            found.update(self._stored({scope for _, scope, _ in made} - found.keys()))
        with self._lock:
            for scope, (key_id, key) in found.items() if self._revision == revision else ():
                self._remember(self._keys, key_id, key)
                self._remember(self._current, scope, key_id)
        return found

    def _stored(self, scopes: Iterable[str]) -> dict[str, tuple[bytes, bytes]]:
        """The current keys the file holds for `scopes`, unwrapped."""
        rows = self._rows_in("SELECT scope, key_id, wrapped FROM data_key WHERE current = 1 AND scope IN ({marks})",
                             sorted(scopes))
        return {scope: (bytes(key_id), self.provider.unwrap(wrapped, key_id)) for scope, key_id, wrapped in rows}

    def _rows_in(self, sql: str, values: list[Any]) -> Iterator[tuple[Any, ...]]:
        """The rows of `sql` whose `{marks}` list is `values`, 500 values a query (SQLite
        bounds a statement's parameters)."""
        for start in range(0, len(values), 500):
            chunk = values[start:start + 500]
            yield from self._query(sql.format(marks=",".join("?" * len(chunk))), tuple(chunk))

    def _remember(self, cache: OrderedDict[K, V], key: K, value: V, size: int | None = None) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > (size or self._cache_size):
            cache.popitem(last=False)

    def _cipher(self, key_id: bytes, key: bytes, revision: int) -> AESGCM:
        """The cipher of `key`, one of the last `CIPHERS` used or made now; kept unless keys
        changed since `revision` (an erasure: no cipher of a destroyed key is kept)."""
        with self._lock:
            cipher = self._ciphers.get(key_id)
            if cipher is not None:
                self._ciphers.move_to_end(key_id)
                return cipher
        cipher = AESGCM(key)
        with self._lock:
            if self._revision == revision:
                self._remember(self._ciphers, key_id, cipher, min(CIPHERS, self._cache_size))
        return cipher

    def _recheck(self) -> None:
        """Forget every cached key if another process changed keys (at most once a second)."""
        now = time.monotonic()
        if now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        revision = self._read_revision()
        if revision != self._revision:
            self._forget(revision)

    def _forget(self, revision: int) -> None:
        with self._lock:
            self._revision = revision
            self._keys.clear()
            self._current.clear()
            self._ciphers.clear()
            self._held.clear()

    def _read_revision(self) -> int:
        return int(self._query("SELECT n FROM revision")[0][0])

    @contextmanager
    def _write(self, bump: bool = True) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction; `bump`: it changes or removes keys others may cache."""
        with self._db_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                if bump:
                    conn.execute("UPDATE revision SET n = n + 1")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        if bump:
            self._forget(self._read_revision())

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:  # type: ignore[type-arg]
        with self._db_lock:
            return self._conn().execute(sql, args).fetchall()

    def _conn(self) -> sqlite3.Connection:
        """The one connection, opened on first use; callers hold `_db_lock`, so threads take
        turns (it is used on cache misses only)."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            make_private(self.path)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            for pragma in ("journal_mode = WAL", "synchronous = FULL", "secure_delete = ON"):
                db.execute(f"PRAGMA {pragma}")
            db.executescript(_SCHEMA)
            if "retired" not in {row[1] for row in db.execute("PRAGMA table_info(data_key)")}:
                db.execute("ALTER TABLE data_key ADD COLUMN retired TEXT")  # a file made before
            self._db = db
        return self._db
