"""What the authorization server remembers: registered clients, assertion ids already used,
revoked tokens, authorization codes, logins in progress and refresh tokens. One SQLite file
(`auth.db` in the data directory) that every worker shares.

Backend clients (SMART Backend Services) are registered with their public keys, inline as a
JWKS or as a `jwks_uri` fetched (and cached: remote_keys.py) when an assertion arrives. Apps
(SMART App Launch) are public (PKCE only), confidential with a secret (stored as a scrypt
hash) or with their public keys (private_key_jwt), with their redirect URIs. Codes and
refresh tokens are stored as SHA-256 hashes: a leak of the file does not hand out usable
credentials.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..model.platform_codes import RECIPIENT_TYPES
from ..private_files import make_private
from . import secrets_hash
from .remote_keys import check_jwks_url

_SCHEMA = """
CREATE TABLE IF NOT EXISTS client (
    id       TEXT PRIMARY KEY,
    kind     TEXT NOT NULL,            -- backend | public | confidential | asymmetric
    scope    TEXT NOT NULL,            -- the most this client may be granted
    jwks     TEXT,                     -- inline JWK Set (JSON)
    jwks_uri TEXT,
    created  REAL NOT NULL,
    acts_for TEXT                      -- JSON list: the recipients an investigator system acts as
);
CREATE TABLE IF NOT EXISTS used_jti (jti TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS app (
    id            TEXT PRIMARY KEY REFERENCES client (id),
    redirect_uris TEXT NOT NULL,       -- JSON list
    secret_hash   TEXT                 -- NULL for a public client
);
CREATE TABLE IF NOT EXISTS code (
    hash      TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    data      TEXT NOT NULL,           -- JSON: redirect_uri, scope, user, challenge, nonce...
    expires   REAL NOT NULL,
    used      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pending (
    id      TEXT PRIMARY KEY,          -- a login in progress, named by a cookie
    data    TEXT NOT NULL,             -- JSON: the authorization request, user, stage
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS launch (
    id      TEXT PRIMARY KEY,          -- the opaque `launch` an EHR gives the app
    data    TEXT NOT NULL,             -- JSON: patient, the EHR client that asked
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refresh (
    hash      TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    data      TEXT NOT NULL,           -- JSON: user, scope, patient
    expires   REAL NOT NULL,
    revoked   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS issued (
    origin        TEXT NOT NULL,       -- origin_of() the authorization code they come from
    jti           TEXT NOT NULL,       -- an access token's id
    token_expires REAL NOT NULL,
    refresh       TEXT,                -- the hash of the refresh token issued with it
    expires       REAL NOT NULL        -- as long as a replay of the code can be told
);
CREATE INDEX IF NOT EXISTS issued_origin ON issued (origin);
"""
_HASHED = frozenset({"code", "refresh"})


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client; authlib's ClientMixin is implemented in auth/server.py."""

    id: str
    kind: str  # backend | public | confidential | asymmetric (an app with keys)
    scope: str
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    redirect_uris: tuple[str, ...] = ()
    secret_hash: str | None = None
    acts_for: tuple[str, ...] = ()  # an investigator site system's recipient identities


class Registry:
    """Clients, used assertion ids and revoked tokens, in `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection to the registry file (for the user accounts)."""
        return self._conn()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            make_private(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
            add_column(conn, "client", "acts_for TEXT")
            self._local.conn = conn
        return conn

    # -- clients ---------------------------------------------------------------------------

    def add_backend_client(self, id: str, scope: str, *, jwks: dict[str, Any] | None = None,
                           jwks_uri: str | None = None, acts_for: Sequence[str] = ()) -> Client:
        """Register (or replace) a backend-services client and the keys it signs with;
        `acts_for` makes it an investigator site system receiving referrals as those
        PractitionerRole, CareTeam or Group references (and reaching nothing else)."""
        for reference in acts_for:
            kind, _, target = reference.partition("/")
            if kind not in RECIPIENT_TYPES or not target or "/" in target:
                raise ValueError("acts_for takes PractitionerRole/<id>, CareTeam/<id> or Group/<id>")
        if (jwks is None) == (jwks_uri is None):
            raise ValueError("give exactly one of jwks or jwks_uri")
        _check_keys(jwks, jwks_uri)
        self._conn().execute(
            "INSERT OR REPLACE INTO client (id, kind, scope, jwks, jwks_uri, created, acts_for) "
            "VALUES (?, 'backend', ?, ?, ?, ?, ?)",
            (id, scope, orjson.dumps(jwks).decode() if jwks else None, jwks_uri, time.time(),
             orjson.dumps(list(acts_for)).decode() if acts_for else None))
        client = self.client(id)
        assert client is not None
        return client

    def add_app(self, id: str, scope: str, redirect_uris: list[str], *,
                secret: str | None = None, jwks: dict[str, Any] | None = None,
                jwks_uri: str | None = None) -> Client:
        """Register (or replace) a SMART app: public by default, confidential with a `secret`
        (client-confidential-symmetric) or with its public keys, inline or at a URL
        (client-confidential-asymmetric: it authenticates with private_key_jwt)."""
        if not redirect_uris:
            raise ValueError("an app needs at least one redirect URI")
        keyed = jwks is not None or jwks_uri is not None
        if (jwks is not None and jwks_uri is not None) or (keyed and secret):
            raise ValueError("give at most one of a secret, jwks or jwks_uri")
        _check_keys(jwks, jwks_uri)
        kind = "asymmetric" if keyed else "confidential" if secret else "public"
        conn = self._conn()
        conn.execute("INSERT OR REPLACE INTO client (id, kind, scope, jwks, jwks_uri, created) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (id, kind, scope, orjson.dumps(jwks).decode() if jwks else None, jwks_uri,
                      time.time()))
        conn.execute("INSERT OR REPLACE INTO app (id, redirect_uris, secret_hash) VALUES (?, ?, ?)",
                     (id, orjson.dumps(redirect_uris).decode(),
                      secrets_hash.hash_secret(secret) if secret else None))
        client = self.client(id)
        assert client is not None
        return client

    def redirect_uris(self) -> list[str]:
        """Every registered app's redirect URIs."""
        return [uri for (row,) in self._conn().execute("SELECT redirect_uris FROM app")
                for uri in orjson.loads(row)]

    def client(self, id: str) -> Client | None:
        row = self._conn().execute(
            f"SELECT {_CLIENT_COLUMNS} FROM client c LEFT JOIN app a ON a.id = c.id WHERE c.id = ?",  # noqa: S608 - fixed
            (id,)).fetchone()
        return _client_of(row) if row is not None else None

    def standing(self, jti: str, client_id: str) -> tuple[bool, Client | None]:
        """Whether the token `jti` is revoked, and the registered client `client_id` (None if
        there is none): what every request with a token asks, in one statement, each trip
        through SQLite costing a request more than the look-up itself."""
        row = self._conn().execute(
            f"SELECT EXISTS (SELECT 1 FROM revoked WHERE jti = ?), {_CLIENT_COLUMNS} "  # noqa: S608 - fixed
            "FROM (SELECT 1) LEFT JOIN client c ON c.id = ? LEFT JOIN app a ON a.id = c.id",
            (jti, client_id)).fetchone()
        return bool(row[0]), _client_of(row[1:]) if row[1] is not None else None

    def backend_clients(self) -> list[Client]:
        """Every registered backend client (the key directory reads their encryption keys)."""
        ids = self._conn().execute("SELECT id FROM client WHERE kind = 'backend' ORDER BY id")
        return [client for (id,) in ids.fetchall() if (client := self.client(id)) is not None]

    # -- short-lived records: codes, logins in progress, refresh tokens ----------------------

    def put(self, table: str, key: str, data: dict[str, Any], lifetime: float,
            client_id: str | None = None) -> None:
        """Store a record under `key` (hashed for codes and refresh tokens) for `lifetime` s."""
        conn = self._conn()
        conn.execute(f"DELETE FROM {table} WHERE expires < ?", (time.time(),))  # noqa: S608
        row_key = _digest(key) if table in _HASHED else key
        columns = "hash, client_id, data, expires" if table in _HASHED else "id, data, expires"
        values = ((row_key, client_id, orjson.dumps(data).decode(), time.time() + lifetime)
                  if table in _HASHED else (row_key, orjson.dumps(data).decode(), time.time() + lifetime))
        conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608
                     values)

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        """A live record (not expired; for codes and refresh tokens, also not used/revoked)."""
        column = "hash" if table in _HASHED else "id"
        flag = {"code": " AND used = 0", "refresh": " AND revoked = 0"}.get(table, "")
        row = self._conn().execute(
            f"SELECT data FROM {table} WHERE {column} = ? AND expires >= ?{flag}",  # noqa: S608
            (_digest(key) if table in _HASHED else key, time.time())).fetchone()
        return orjson.loads(row[0]) if row else None

    def update(self, table: str, key: str, data: dict[str, Any]) -> None:
        self._conn().execute(f"UPDATE {table} SET data = ? WHERE id = ?",  # noqa: S608
                             (orjson.dumps(data).decode(), key))

    def spend(self, table: str, key: str) -> bool:
        """Mark a code used or a refresh token revoked; False if it already was (a replay)."""
        column = {"code": "used", "refresh": "revoked"}[table]
        changed = self._conn().execute(
            f"UPDATE {table} SET {column} = 1 WHERE hash = ? AND {column} = 0",  # noqa: S608
            (_digest(key),)).rowcount
        return changed == 1

    def forget(self, table: str, key: str) -> None:
        self._conn().execute(f"DELETE FROM {table} WHERE id = ?", (key,))  # noqa: S608

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

    def note_issued(self, origin: str, token_id: str, token_expires: float,
                    refresh: str | None, keep: float) -> None:
        """Tokens issued from the code `origin` names, kept `keep` seconds (see revoke_issued)."""
        conn = self._conn()
        conn.execute("DELETE FROM issued WHERE expires < ?", (time.time(),))
        conn.execute("INSERT INTO issued (origin, jti, token_expires, refresh, expires) "
                     "VALUES (?, ?, ?, ?, ?)",
                     (origin, token_id, token_expires, refresh and _digest(refresh),
                      time.time() + keep))

    def revoke_issued(self, origin: str) -> None:
        """Revoke the tokens noted as issued from the code `origin` names (it was replayed)."""
        conn = self._conn()
        rows = conn.execute("SELECT jti, token_expires, refresh FROM issued WHERE origin = ?",
                            (origin,)).fetchall()
        for jti, token_expires, refresh in rows:
            self.revoke(jti, token_expires)
            if refresh:
                conn.execute("UPDATE refresh SET revoked = 1 WHERE hash = ?", (refresh,))


_CLIENT_COLUMNS = ("c.id, c.kind, c.scope, c.jwks, c.jwks_uri, a.redirect_uris, a.secret_hash, "
                   "c.acts_for")


def _client_of(row: Sequence[Any]) -> Client:
    """The client of a row of _CLIENT_COLUMNS."""
    return Client(row[0], row[1], row[2], orjson.loads(row[3]) if row[3] else None, row[4],
                  tuple(orjson.loads(row[5])) if row[5] else (), row[6],
                  tuple(orjson.loads(row[7])) if row[7] else ())


def add_column(conn: sqlite3.Connection, table: str, column: str) -> None:
    """Add a column a registry file made by an older version lacks."""
    names = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    if column.split()[0] not in names:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _check_keys(jwks: dict[str, Any] | None, jwks_uri: str | None) -> None:
    """ValueError unless the keys given are a JWK Set, or a URL they may be fetched from."""
    if jwks is not None and not isinstance(jwks.get("keys"), list):
        raise ValueError("jwks must be a JWK Set: {\"keys\": [...]}")
    if jwks_uri is not None:
        check_jwks_url(jwks_uri)


def origin_of(code: str) -> str:
    """What names an authorization code in the records of tokens issued from it."""
    return _digest(code)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
