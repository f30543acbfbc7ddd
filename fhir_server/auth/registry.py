"""What the authorization server remembers: registered clients, assertion ids already used,
revoked tokens. One SQLite file (`auth.db` in the data directory) that every worker shares.

Backend clients (SMART Backend Services) are registered with their public keys, inline as a
JWKS or as a `jwks_uri` fetched (and cached) when an assertion arrives.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS client (
    id       TEXT PRIMARY KEY,
    kind     TEXT NOT NULL,            -- 'backend'
    scope    TEXT NOT NULL,            -- the most this client may be granted
    jwks     TEXT,                     -- inline JWK Set (JSON)
    jwks_uri TEXT,
    created  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS used_jti (jti TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, expires REAL NOT NULL);
"""
_JWKS_CACHE_SECONDS = 300
_JWKS_FETCH_TIMEOUT = 5


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client; authlib's ClientMixin is implemented in auth/server.py."""

    id: str
    kind: str
    scope: str
    jwks: dict[str, Any] | None
    jwks_uri: str | None


class Registry:
    """Clients, used assertion ids and revoked tokens, in `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._jwks_cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
            self._local.conn = conn
        return conn

    # -- clients ---------------------------------------------------------------------------

    def add_backend_client(self, id: str, scope: str, *, jwks: dict[str, Any] | None = None,
                           jwks_uri: str | None = None) -> Client:
        """Register (or replace) a backend-services client and the keys it signs with."""
        if (jwks is None) == (jwks_uri is None):
            raise ValueError("give exactly one of jwks or jwks_uri")
        if jwks is not None and not isinstance(jwks.get("keys"), list):
            raise ValueError("jwks must be a JWK Set: {\"keys\": [...]}")
        self._conn().execute(
            "INSERT OR REPLACE INTO client (id, kind, scope, jwks, jwks_uri, created) "
            "VALUES (?, 'backend', ?, ?, ?, ?)",
            (id, scope, orjson.dumps(jwks).decode() if jwks else None, jwks_uri, time.time()))
        client = self.client(id)
        assert client is not None
        return client

    def client(self, id: str) -> Client | None:
        row = self._conn().execute(
            "SELECT id, kind, scope, jwks, jwks_uri FROM client WHERE id = ?", (id,)).fetchone()
        if row is None:
            return None
        return Client(row[0], row[1], row[2], orjson.loads(row[3]) if row[3] else None, row[4])

    def client_keys(self, client: Client) -> dict[str, Any]:
        """The client's JWK Set: inline, or fetched from its jwks_uri (cached a while)."""
        if client.jwks is not None:
            return client.jwks
        assert client.jwks_uri is not None
        cached = self._jwks_cache.get(client.jwks_uri)
        if cached and time.monotonic() - cached[0] < _JWKS_CACHE_SECONDS:
            return cached[1]
        with urllib.request.urlopen(client.jwks_uri, timeout=_JWKS_FETCH_TIMEOUT) as response:  # noqa: S310 - an https URL registered by an administrator
            keys: dict[str, Any] = orjson.loads(response.read())
        self._jwks_cache[client.jwks_uri] = (time.monotonic(), keys)
        return keys

    # -- one-time assertion ids and revocation -----------------------------------------------

    def use_jti(self, jti: str, expires: float) -> bool:
        """Record a client assertion's id; False if it was seen before (a replay)."""
        conn = self._conn()
        conn.execute("DELETE FROM used_jti WHERE expires < ?", (time.time(),))
        try:
            conn.execute("INSERT INTO used_jti (jti, expires) VALUES (?, ?)", (jti, expires))
        except sqlite3.IntegrityError:
            return False
        return True

    def revoke(self, jti: str, expires: float) -> None:
        """Revoke the token with id `jti` until it would have expired anyway."""
        self._conn().execute("INSERT OR IGNORE INTO revoked (jti, expires) VALUES (?, ?)",
                             (jti, expires))

    def is_revoked(self, jti: str) -> bool:
        row = self._conn().execute("SELECT 1 FROM revoked WHERE jti = ?", (jti,)).fetchone()
        return row is not None
