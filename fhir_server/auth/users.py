"""People who log in: a username, a scrypt password hash, a TOTP second factor, and the FHIR
resource they are (`Patient/...`, `Practitioner/...` identified by RPPS, `RelatedPerson/...`);
whether the account is suspended, and the versions of the platform's terms it accepted, when.

Repeated failures lock an account with a growing back-off (30 s after five failures,
doubling with each further one, at most an hour), whatever the password tried next.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, replace

import pyotp

from .. import clock
from . import secrets_hash
from .registry import Registry, add_column

# When the account was last signed in to (created, before its first sign-in), closed, and
# asked to be deleted: FHIR instants (auth/accounts.py, the retention's accounts rule).
LIFECYCLE_COLUMNS = ("last_seen TEXT", "closed TEXT", "deletion_asked TEXT")
_FREE_FAILURES = 5
_FIRST_LOCK = 30.0
_LONGEST_LOCK = 3600.0
ISSUER_NAME = "fhir-server"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS user (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    fhir_user     TEXT NOT NULL,        -- Patient/..., Practitioner/..., RelatedPerson/...
    totp_secret   TEXT,                 -- set at enrolment
    totp_enrolled INTEGER NOT NULL DEFAULT 0,
    totp_last     INTEGER NOT NULL DEFAULT 0,   -- last accepted time step (no replay)
    failures      INTEGER NOT NULL DEFAULT 0,
    locked_until  REAL NOT NULL DEFAULT 0,
    admin         INTEGER NOT NULL DEFAULT 0   -- platform administrator (break-glass only)
);
CREATE TABLE IF NOT EXISTS terms_accepted (
    username TEXT NOT NULL,
    version  TEXT NOT NULL,
    accepted REAL NOT NULL,                -- when (epoch seconds)
    PRIMARY KEY (username, version)
);
"""


@dataclass(frozen=True, slots=True)
class User:
    username: str
    fhir_user: str
    totp_enrolled: bool
    admin: bool = False
    suspended: bool = False
    email_factor: bool = False  # has signed in with an e-mailed code (auth/email_codes.py)

    @property
    def patient(self) -> str | None:
        """The Patient id, for a user who is that patient."""
        kind, _, id = self.fhir_user.partition("/")
        return id if kind == "Patient" else None


class Locked(Exception):
    """Too many failures: the account may be tried again in `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"locked for {seconds:.0f} s")
        self.seconds = seconds


class Users:
    """User accounts, in the authorization server's registry file."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._ready = False

    def _conn(self) -> sqlite3.Connection:
        conn = self.registry.connection()
        if not self._ready:
            conn.executescript(_SCHEMA)
            add_column(conn, "user", "admin INTEGER NOT NULL DEFAULT 0")
            add_column(conn, "user", "suspended INTEGER NOT NULL DEFAULT 0")
            for column in LIFECYCLE_COLUMNS:  # the retention's (accounts.py)
                add_column(conn, "user", column)
            add_column(conn, "user", "email_factor INTEGER NOT NULL DEFAULT 0")
            # When it was last suspended (epoch seconds; 0: never): what was issued before
            # stays refused after reinstatement.
            add_column(conn, "user", "suspended_at REAL NOT NULL DEFAULT 0")
            self._ready = True
        return conn

    def add(self, username: str, password: str, fhir_user: str, *, admin: bool = False) -> User:
        """Create or replace a user (its second factor is enrolled at first login); an
        administrator (a Practitioner) reaches health data only by breaking the glass."""
        kind, _, id = fhir_user.partition("/")
        if kind not in ("Patient", "Practitioner", "RelatedPerson") or not id:
            raise ValueError("fhir_user is Patient/<id>, Practitioner/<id> or RelatedPerson/<id>")
        if len(password) < 12:
            raise ValueError("passwords have at least 12 characters")
        if admin and kind != "Practitioner":
            raise ValueError("an administrator is a Practitioner/<id>")
        # Replacing an account keeps its suspension, and the time of the last one: only
        # `reinstate` lifts it, and nothing issued before it comes back.
        suspended, suspended_at = self._conn().execute(
            "SELECT suspended, suspended_at FROM user WHERE username = ?",
            (username,)).fetchone() or (False, 0.0)
        self._conn().execute(
            "INSERT OR REPLACE INTO user (username, password_hash, fhir_user, admin, suspended, "
            "suspended_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (username, secrets_hash.hash_secret(password), fhir_user, admin, suspended,
             suspended_at, clock.instant()))
        return User(username, fhir_user, False, admin, bool(suspended))

    def get(self, username: str) -> User | None:
        row = self._conn().execute(
            "SELECT username, fhir_user, totp_enrolled, admin, suspended, email_factor FROM user "
            "WHERE username = ?", (username,)).fetchone()
        return User(row[0], row[1], *map(bool, row[2:])) if row else None

    def passed_emailed_code(self, username: str) -> None:
        """A login proved the e-mailed code: the account's second factor from now on (the
        TOTP secret is no longer shown to a login past its password only), and the failures
        are forgiven as after a right TOTP code."""
        self._conn().execute("UPDATE user SET email_factor = 1, failures = 0 WHERE username = ?",
                             (username,))

    def set_suspended(self, username: str, suspended: bool) -> User:
        """Suspend or reinstate an account; ValueError if there is none, or it is already so.
        A suspended account signs in no more, and its tokens stop working at their next
        use (tokens.py asks at every use); reinstated, it signs in again, but the tokens,
        codes and refresh tokens issued before the suspension stay refused (`valid_since`):
        a suspension for a stolen session ends that session."""
        user = self.get(username)
        if user is None:
            raise ValueError(f"no user {username!r}")
        if user.suspended == suspended:
            raise ValueError(f"{username} is {'already' if suspended else 'not'} suspended")
        if suspended:
            self._conn().execute("UPDATE user SET suspended = 1, suspended_at = ? "
                                 "WHERE username = ?", (clock.seconds(), username))
        else:
            self._conn().execute("UPDATE user SET suspended = 0 WHERE username = ?", (username,))
        return replace(user, suspended=suspended)

    def is_suspended(self, username: str) -> bool:
        row = self._conn().execute("SELECT suspended FROM user WHERE username = ?",
                                   (username,)).fetchone()
        return bool(row and row[0])

    def stopped(self, username: str) -> str | None:
        """'closed' or 'suspended' for such an account; None for one in use, or for none (a
        user of a trusted provider has no account here)."""
        row = self._conn().execute("SELECT suspended, closed FROM user WHERE username = ?",
                                   (username,)).fetchone()
        if row is None:
            return None
        return "closed" if row[1] is not None else "suspended" if row[0] else None

    def valid_since(self, username: str) -> float | None:
        """The time (epoch seconds) before which nothing issued to `username` is valid: its
        last suspension, 0 if never suspended (or no such account); None while suspended."""
        row = self._conn().execute("SELECT suspended, suspended_at FROM user WHERE username = ?",
                                   (username,)).fetchone()
        if row is None:
            return 0.0
        return None if row[0] else float(row[1])

    def accept_terms(self, username: str, version: str, when: float) -> None:
        """Record that `username` accepted version `version` of the terms at `when` (the
        first acceptance of a version is the one kept)."""
        self._conn().execute("INSERT OR IGNORE INTO terms_accepted (username, version, accepted) "
                             "VALUES (?, ?, ?)", (username, version, when))

    def accepted_terms(self, username: str) -> dict[str, float]:
        """The versions of the terms `username` accepted, and when (epoch seconds)."""
        return dict(self._conn().execute(
            "SELECT version, accepted FROM terms_accepted WHERE username = ? ORDER BY accepted",
            (username,)).fetchall())

    def check_password(self, username: str, password: str) -> User | None:
        """The user if the password is right; None if not; Locked while locked out."""
        row = self._conn().execute(
            "SELECT password_hash, locked_until FROM user WHERE username = ? AND closed IS NULL",
            (username,)).fetchone()
        if row is None:  # unknown, or closed by the retention: the same answer
            secrets_hash.verify_secret(password, secrets_hash.DECOY)
            return None
        if row[1] > time.time():
            raise Locked(row[1] - time.time())
        if secrets_hash.verify_secret(password, row[0]):
            # Failures are forgiven after the second factor only (check_code): otherwise the
            # one who knows the password could guess codes in rounds without a growing lock.
            return self.get(username)
        self.record_failure(username)
        return None

    def record_failure(self, username: str) -> None:
        """One more failed attempt (password or code); lock with back-off past the free ones."""
        conn = self._conn()
        conn.execute("UPDATE user SET failures = failures + 1 WHERE username = ?", (username,))
        row = conn.execute("SELECT failures FROM user WHERE username = ?", (username,)).fetchone()
        if row and row[0] >= _FREE_FAILURES:
            lock = min(_LONGEST_LOCK, _FIRST_LOCK * 2 ** (row[0] - _FREE_FAILURES))
            conn.execute("UPDATE user SET locked_until = ? WHERE username = ?",
                         (time.time() + lock, username))

    def totp_secret(self, username: str) -> str:
        """The user's TOTP secret, made at first need (enrolment shows it once)."""
        conn = self._conn()
        row = conn.execute("SELECT totp_secret FROM user WHERE username = ?", (username,)).fetchone()
        if row and row[0]:
            return str(row[0])
        secret = pyotp.random_base32()
        conn.execute("UPDATE user SET totp_secret = ? WHERE username = ?", (secret, username))
        return secret

    def provisioning_uri(self, username: str) -> str:
        """The otpauth:// URI authenticator apps read (as a QR code or typed in)."""
        return pyotp.TOTP(self.totp_secret(username)).provisioning_uri(
            name=username, issuer_name=ISSUER_NAME)

    def check_unlocked(self, username: str) -> None:
        """Raise Locked while the account is locked out (before any second factor is tried)."""
        row = self._conn().execute("SELECT locked_until FROM user WHERE username = ?",
                                   (username,)).fetchone()
        if row and row[0] > time.time():
            raise Locked(row[0] - time.time())

    def check_code(self, username: str, code: str) -> bool:
        """A valid, not yet used TOTP code (one step of clock drift allowed); confirms the
        enrolment on first success. A wrong code counts as a failure."""
        conn = self._conn()
        row = conn.execute("SELECT totp_secret, totp_last, locked_until FROM user WHERE username = ?",
                           (username,)).fetchone()
        if row is None:
            return False
        if row[2] > time.time():
            raise Locked(row[2] - time.time())
        if not row[0]:  # no secret yet: no code can be right
            self.record_failure(username)
            return False
        totp = pyotp.TOTP(row[0])
        now = int(time.time())
        for drift in (0, -1, 1):
            step = totp.timecode(now) + drift
            if step > row[1] and totp.verify(code.strip(), for_time=now + drift * totp.interval,
                                              valid_window=0):
                conn.execute("UPDATE user SET totp_last = ?, totp_enrolled = 1, failures = 0, "
                             "last_seen = ? WHERE username = ?", (step, clock.instant(), username))
                return True
        self.record_failure(username)
        return False
