"""One-time codes by which a patient confirms a practitioner's proposed Consent
(docs/referrals.md, "Opening a patient record").

Kept in their own SQLite file of the data directory (`consent-codes.db`, shared by the
workers of one host), never in the FHIR store: a code's hash readable through the API could be
reversed by trying every code. (The message giving the code to the patient is in the store,
readable by the patient and by system clients, who could record the Consent themselves.) A code is stored as a salted SHA-256 hash only, compared in
constant time, lives LIFETIME seconds and allows MAX_ATTEMPTS tries; a right code is spent.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from enum import Enum
from pathlib import Path

from .. import clock

DIGITS = 8
LIFETIME = 72 * 3600.0  # seconds: time for the patient to read it and hand it over
MAX_ATTEMPTS = 5  # with 8 digits, a guess succeeds with odds of 5 in 100 million

_SCHEMA = """
CREATE TABLE IF NOT EXISTS code (
    consent  TEXT PRIMARY KEY,  -- Consent/<id> the code confirms
    salt     BLOB NOT NULL,
    hash     BLOB NOT NULL,     -- SHA-256 of salt + code
    expires  REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
"""


class CodeCheck(Enum):
    """What a code given for a Consent proved."""

    CONFIRMED = "confirmed"
    WRONG = "wrong"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"  # too many wrong attempts
    NONE = "none"  # no code is waiting for this Consent (never made, or spent)


def _digest(salt: bytes, code: str) -> bytes:
    return hashlib.sha256(salt + code.encode()).digest()


class ConfirmationCodes:
    """The codes waiting to confirm proposed Consents, in the SQLite file `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call: codes are made and tried rarely, so none is kept."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, isolation_level=None, timeout=30)) as conn:
            conn.executescript(_SCHEMA)
            yield conn

    def issue(self, consent: str) -> tuple[str, float]:
        """A new code for `consent` (`Consent/<id>`), replacing any earlier one, and when it
        expires (epoch seconds). The code itself is returned once, for the message to the
        patient: here only its hash is kept."""
        code = str(secrets.randbelow(10**DIGITS)).zfill(DIGITS)
        salt = os.urandom(16)
        now = clock.now().timestamp()
        expires = now + LIFETIME
        with self._connect() as conn:
            conn.execute("DELETE FROM code WHERE expires < ?", (now - LIFETIME,))
            conn.execute("INSERT OR REPLACE INTO code (consent, salt, hash, expires) "
                         "VALUES (?, ?, ?, ?)", (consent, salt, _digest(salt, code), expires))
        return code, expires

    def check(self, consent: str, code: str) -> CodeCheck:
        """Try `code` for `consent`: each try counts, a right one is spent."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # one try at a time: the attempt count cannot be raced
            try:
                return self._try(conn, consent, code)
            finally:
                conn.execute("COMMIT")

    @staticmethod
    def _try(conn: sqlite3.Connection, consent: str, code: str) -> CodeCheck:
        row = conn.execute("SELECT salt, hash, expires, attempts FROM code WHERE consent = ?",
                           (consent,)).fetchone()
        if row is None:
            return CodeCheck.NONE
        salt, expected, expires, attempts = row
        if expires < clock.now().timestamp():
            return CodeCheck.EXPIRED
        if attempts >= MAX_ATTEMPTS:
            return CodeCheck.EXHAUSTED
        if hmac.compare_digest(_digest(salt, code), expected):
            conn.execute("DELETE FROM code WHERE consent = ?", (consent,))
            return CodeCheck.CONFIRMED
        conn.execute("UPDATE code SET attempts = attempts + 1 WHERE consent = ?", (consent,))
        return CodeCheck.WRONG
