"""One-time codes by which a patient confirms a practitioner's proposed Consent
(docs/referrals.md, "Opening a patient record").

Kept in their own SQLite file of the data directory (`consent-codes.db`, shared by the
workers of one host), never in the FHIR store: a code's hash readable through the API could be
reversed by trying every code. (The message giving the code to the patient is in the store,
readable by the patient and by system clients, who could record the Consent themselves.) A code is stored as a salted SHA-256 hash only, compared in
constant time, lives LIFETIME seconds and allows MAX_ATTEMPTS tries; a right code is spent.
A code belongs to the proposal of one asker (the practitioner) for one patient: their next
proposal for that patient supersedes it (`pending`, `spend`). An asker has MAX_FAILURES wrong
codes per FAILURE_WINDOW, across all their codes, so that proposing again and again buys no
more guesses.
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
from ..private_files import make_private

DIGITS = 8
LIFETIME = 72 * 3600.0  # seconds: time for the patient to read it and hand it over
MAX_ATTEMPTS = 5  # with 8 digits, a guess succeeds with odds of 5 in 100 million
MAX_FAILURES = 10  # wrong codes per asker per FAILURE_WINDOW, whatever the Consent
FAILURE_WINDOW = 24 * 3600.0  # seconds

_SCHEMA = """
CREATE TABLE IF NOT EXISTS code (
    consent  TEXT PRIMARY KEY,  -- Consent/<id> the code confirms
    salt     BLOB NOT NULL,
    hash     BLOB NOT NULL,     -- SHA-256 of salt + code
    expires  REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS failure (
    asker TEXT NOT NULL,  -- who gave a wrong code
    at    REAL NOT NULL   -- when (epoch seconds)
);
CREATE INDEX IF NOT EXISTS failure_asker ON failure (asker, at);
"""
# Columns of `code` added after its first release: who asked, for which patient.
_ADDED = {"asker": "TEXT", "patient": "TEXT"}


class CodeCheck(Enum):
    """What a code given for a Consent proved."""

    CONFIRMED = "confirmed"
    WRONG = "wrong"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"  # too many wrong attempts
    THROTTLED = "throttled"  # the caller gave too many wrong codes lately, for any Consent
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
        make_private(self.path)
        with closing(sqlite3.connect(self.path, isolation_level=None, timeout=30)) as conn:
            conn.executescript(_SCHEMA)
            present = {row[1] for row in conn.execute("PRAGMA table_info(code)")}
            for column, kind in _ADDED.items():
                if column not in present:
                    conn.execute(f"ALTER TABLE code ADD COLUMN {column} {kind}")
            yield conn

    def issue(self, consent: str, asker: str, patient: str) -> tuple[str, float]:
        """A new code for `consent` (`Consent/<id>`, proposed by `asker` for `patient`),
        replacing any earlier one, and when it expires (epoch seconds). The code itself is
        returned once, for the message to the patient: here only its hash is kept."""
        code = str(secrets.randbelow(10**DIGITS)).zfill(DIGITS)
        salt = os.urandom(16)
        now = clock.now().timestamp()
        expires = now + LIFETIME
        with self._connect() as conn:
            conn.execute("DELETE FROM code WHERE expires < ?", (now - LIFETIME,))
            conn.execute("DELETE FROM failure WHERE at < ?", (now - FAILURE_WINDOW,))
            conn.execute("INSERT OR REPLACE INTO code (consent, salt, hash, expires, asker, "
                         "patient) VALUES (?, ?, ?, ?, ?, ?)",
                         (consent, salt, _digest(salt, code), expires, asker, patient))
        return code, expires

    def pending(self, asker: str, patient: str) -> list[str]:
        """The Consents whose codes still wait, proposed by `asker` for `patient`."""
        with self._connect() as conn:
            rows = conn.execute("SELECT consent FROM code WHERE asker = ? AND patient = ? "
                                "ORDER BY consent", (asker, patient)).fetchall()
        return [row[0] for row in rows]

    def spend(self, consents: list[str]) -> None:
        """Spend the codes of `consents`: they confirm nothing any more."""
        with self._connect() as conn:
            conn.executemany("DELETE FROM code WHERE consent = ?", [(c,) for c in consents])

    def check(self, consent: str, code: str, asker: str) -> CodeCheck:
        """Try `code` for `consent`, given by `asker`: each try counts, a right one is
        spent, a wrong one counts against the asker too."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # one try at a time: the attempt count cannot be raced
            try:
                return self._try(conn, consent, code, asker)
            finally:
                conn.execute("COMMIT")

    @staticmethod
    def _try(conn: sqlite3.Connection, consent: str, code: str, asker: str) -> CodeCheck:
        now = clock.now().timestamp()
        [failures] = conn.execute("SELECT count(*) FROM failure WHERE asker = ? AND at >= ?",
                                  (asker, now - FAILURE_WINDOW)).fetchone()
        if failures >= MAX_FAILURES:
            return CodeCheck.THROTTLED
        row = conn.execute("SELECT salt, hash, expires, attempts FROM code WHERE consent = ?",
                           (consent,)).fetchone()
        if row is None:
            return CodeCheck.NONE
        salt, expected, expires, attempts = row
        if expires < now:
            return CodeCheck.EXPIRED
        if attempts >= MAX_ATTEMPTS:
            return CodeCheck.EXHAUSTED
        if hmac.compare_digest(_digest(salt, code), expected):
            conn.execute("DELETE FROM code WHERE consent = ?", (consent,))
            return CodeCheck.CONFIRMED
        conn.execute("UPDATE code SET attempts = attempts + 1 WHERE consent = ?", (consent,))
        conn.execute("INSERT INTO failure (asker, at) VALUES (?, ?)", (asker, now))
        return CodeCheck.WRONG
