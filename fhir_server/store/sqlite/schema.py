"""SQLite schema and its migrations, applied at start-up (docs/storage.md).

Each migration runs once, in order, inside one IMMEDIATE transaction, so several worker
processes starting together apply it exactly once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from . import audit_index
from .index import INDEX_TABLES

_BASE = """
CREATE TABLE resource (
    pk           INTEGER PRIMARY KEY,
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated TEXT    NOT NULL,
    lu           INTEGER NOT NULL,   -- last_updated in microseconds since the epoch (_lastUpdated)
    deleted      INTEGER NOT NULL,
    seq          INTEGER NOT NULL,   -- history row of the current version
    UNIQUE (type, id)
);
CREATE INDEX resource_type ON resource (type, deleted);
CREATE INDEX resource_type_updated ON resource (type, deleted, lu);
CREATE TABLE history (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,   -- global write order, never reused
    resource_pk  INTEGER NOT NULL,
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated TEXT    NOT NULL,
    method       TEXT    NOT NULL,
    body         BLOB,                                -- NULL for a deletion
    UNIQUE (type, id, version)
);
CREATE INDEX history_type_seq ON history (type, seq);
CREATE INDEX history_updated ON history (last_updated);
"""

# (pid, id, type, pk) duplicated (id, type, pid, pk) for every lookup and cost a B-tree
# insert per reference; stores created before it was dropped from INDEX_TABLES lose it here.
_DROP_REFERENCE_TARGET = "DROP INDEX IF EXISTS idx_reference_target"

# Records a unit of work keeps for a later step outside the store (base.Outbox).
_OUTBOX = "CREATE TABLE outbox (key TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID"

# Time-based items until sent, and people's notification preferences (sqlite/schedule.py).
_SCHEDULE = """
CREATE TABLE schedule (
    key      TEXT    PRIMARY KEY,   -- the caller's deduplication key (ids only)
    due      INTEGER NOT NULL,      -- microseconds since the epoch
    body     BLOB    NOT NULL,      -- sealed (store/schedule.py)
    state    TEXT    NOT NULL,      -- pending, claimed, sent, cancelled, failed
    attempts INTEGER NOT NULL,
    owner    TEXT,
    lease    INTEGER
) WITHOUT ROWID;
CREATE INDEX schedule_due ON schedule (state, due);
CREATE INDEX schedule_lease ON schedule (state, lease);
CREATE TABLE notification_preference (person TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID
"""

# Asynchronous jobs and their files (store/jobs.py, sqlite/jobs.py); bodies sealed.
_JOBS = """
CREATE TABLE export_job (
    id TEXT PRIMARY KEY, client_id TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL,
    spec BLOB NOT NULL, progress BLOB NOT NULL, attempts INTEGER NOT NULL, lease_owner TEXT,
    lease_until REAL NOT NULL, updated REAL NOT NULL
);
CREATE INDEX export_job_claim ON export_job (state, lease_until);
CREATE TABLE export_file (
    job TEXT NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (job, name)
)
"""

# The versions sealed under a patient's keys, found by key id (bytes 2-17 of a sealed body,
# crypto/envelope.py) without reading the whole history at each erasure (sqlite/erase.py).
_HISTORY_KEY = "CREATE INDEX history_key ON history (substr(body, 2, 16))"

# The same index without AuditEvents, which no erasure removes by key: they stay in the trail
# and shred with the key (store/routing.py). A sealed event's key id is random, so indexing it
# cost every audited request an insert at a random place of an index as large as the trail:
# 7-20 CPU µs a row and more pages to write per commit (docs/security.md#cost). An erasure's
# look-ups name `ERASABLE` among their terms, so that SQLite may use the partial index.
ERASABLE = "type != 'AuditEvent'"
_HISTORY_KEY_ERASABLE = f"""
DROP INDEX history_key;
CREATE INDEX history_key ON history (substr(body, 2, 16)) WHERE {ERASABLE}
"""

MIGRATIONS: tuple[str, ...] = (_BASE, INDEX_TABLES, _DROP_REFERENCE_TARGET, _OUTBOX, _SCHEDULE,
                               _JOBS, _HISTORY_KEY, audit_index.DDL, _HISTORY_KEY_ERASABLE)

# What a migration moves into the tables it made, in its transaction: AuditEvents' compact
# index filled from a trail's generic rows (audit_index.py).
_THEN: dict[str, Callable[[sqlite3.Connection], None]] = {audit_index.DDL: audit_index.fill}


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to the latest version (idempotent, safe across processes)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for number, script in enumerate(MIGRATIONS, start=1):
            if number > current:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if script in _THEN:
                    _THEN[script](conn)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
