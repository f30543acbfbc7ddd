"""Who can open sealed content: the public sealing keys of the platform's identities
(docs/sealed-messages.md).

- A user (`Patient/..`, `Practitioner/..`, `RelatedPerson/..`) enrols one EC P-256 public key
  from their app; a new enrolment replaces it (`EnrolledKeys`, a table of `auth.db` in the data
  directory beside the accounts; public keys only, the private key never leaves the app).
- A site system (a backend client) seals and opens with the encryption keys of the JWK Set it
  was registered with (`use` enc or `alg` ECDH-ES*): it receives for the identities it acts for
  (`--acts-for`), and sends as itself.

`KeyDirectory` answers both; the service layer expands groups (services/sealed.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import orjson

from .seal import is_sealing_key, public_key

USER_TYPES = ("Patient", "Practitioner", "RelatedPerson")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sealing_key (
    fhir_user TEXT PRIMARY KEY,   -- Patient/..., Practitioner/..., RelatedPerson/...
    jwk       TEXT NOT NULL,      -- the public key (JSON), with its kid
    enrolled  REAL NOT NULL
);
"""


class SiteSystem(Protocol):
    """A registered backend client, as the key directory reads it (auth/registry.py Client)."""

    @property
    def id(self) -> str: ...
    @property
    def jwks(self) -> dict[str, Any] | None: ...
    @property
    def acts_for(self) -> tuple[str, ...]: ...


class EnrolledKeys:
    """Users' current public sealing keys, one per user, in a table of the file `connect`
    opens (auth.db, beside the accounts: app.py)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self.connect = connect
        self._ready = False

    def _conn(self) -> sqlite3.Connection:
        conn = self.connect()
        if not self._ready:
            conn.executescript(_SCHEMA)
            self._ready = True
        return conn

    def enrol(self, fhir_user: str, jwk: Mapping[str, Any]) -> dict[str, Any]:
        """Make `jwk` (public: private members are dropped) the user's current key; the key
        stored (SealError if it is no EC P-256 encryption key)."""
        kind, _, id = fhir_user.partition("/")
        if kind not in USER_TYPES or not id:
            raise ValueError("keys are enrolled for Patient/<id>, Practitioner/<id> or RelatedPerson/<id>")
        public = public_key(jwk)
        self._conn().execute("INSERT OR REPLACE INTO sealing_key (fhir_user, jwk, enrolled) "
                             "VALUES (?, ?, ?)", (fhir_user, orjson.dumps(public).decode(), time.time()))
        return public

    def current(self, fhir_user: str) -> list[dict[str, Any]]:
        """The user's current key (none if they enrolled none)."""
        row = self._conn().execute("SELECT jwk FROM sealing_key WHERE fhir_user = ?",
                                   (fhir_user,)).fetchone()
        return [orjson.loads(row[0])] if row else []


def sealing_keys(jwks: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The encryption keys of a registered JWK Set, as public keys with their kid (signing
    keys, and keys that are no EC P-256, are left out)."""
    found = []
    for jwk in (jwks or {}).get("keys", []):
        if isinstance(jwk, Mapping) and is_sealing_key(jwk) and ("use" in jwk or "alg" in jwk):
            found.append(public_key(jwk))
    return found


class KeyDirectory:
    """The current public sealing keys of an identity: a user's enrolled key, and the
    encryption keys of the site systems acting for it."""

    def __init__(self, enrolled: EnrolledKeys,
                 systems: Callable[[], Iterable[SiteSystem]] = lambda: ()) -> None:
        self.enrolled = enrolled
        self.systems = systems

    def keys_of(self, identity: str) -> list[dict[str, Any]]:
        """Keys that must open content addressed to `identity` (a local reference Type/id)."""
        keys = self.enrolled.current(identity) if identity.partition("/")[0] in USER_TYPES else []
        for system in self.systems():
            if identity in system.acts_for:
                keys += sealing_keys(system.jwks)
        return keys

    def keys_of_client(self, client_id: str) -> list[dict[str, Any]]:
        """A site system's own encryption keys (it sends in its own name)."""
        return [k for s in self.systems() if s.id == client_id for k in sealing_keys(s.jwks)]
