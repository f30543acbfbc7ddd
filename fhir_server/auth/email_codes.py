"""One-time sign-in codes sent by e-mail: a second factor besides TOTP (issue 20, the
platform's terms; docs/auth.md, docs/notifications.md).

After the password, a person may ask for a 6-digit code by e-mail instead of their
authenticator app's. The code is kept only as a salted HMAC-SHA-256 digest, in the login in
progress (auth.db, `pending`); it expires after CODE_MINUTES, is spent by its first right
use, and dies after MAX_ATTEMPTS wrong ones; comparisons are constant-time. Sends are
rate-limited per login (one per RESEND_SECONDS, MAX_SENDS in all), and a login only reaches
this step with the right password, so nobody can flood a mailbox without it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from .. import clock

CODE_MINUTES = 10
MAX_ATTEMPTS = 5
MAX_SENDS = 3
RESEND_SECONDS = 60

# Sends `code` to the e-mail address of the person (`fhirUser`), valid `minutes`, in the
# page's language; False if it could not be sent (no address, the relay refused or is down).
SendCode = Callable[[str, str, int, str], Awaitable[bool]]


def _digest(salt: str, code: str) -> str:
    return hmac.new(bytes.fromhex(salt), code.encode(), hashlib.sha256).hexdigest()


def may_send(record: dict[str, Any] | None) -> bool:
    """Whether a login that holds `record` (its current code, or None) may be sent another."""
    if record is None:
        return True
    return bool(record["sends"] < MAX_SENDS
                and clock.seconds() - record["sent"] >= RESEND_SECONDS)


def issue(previous: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """A new code and the record kept of it (replacing `previous`, whose sends it counts)."""
    code = f"{secrets.randbelow(10**6):06d}"
    salt = secrets.token_hex(16)
    now = clock.seconds()
    return code, {"salt": salt, "digest": _digest(salt, code), "expires": now + CODE_MINUTES * 60,
                  "attempts": 0, "sent": now, "sends": (previous or {}).get("sends", 0) + 1}


def check(record: dict[str, Any], code: str) -> bool:
    """Whether `code` is the live code of `record`; a wrong one counts as an attempt (the
    caller saves the record either way, and forgets it after a right one)."""
    if record["attempts"] >= MAX_ATTEMPTS or clock.seconds() > record["expires"]:
        return False
    if hmac.compare_digest(_digest(record["salt"], code.strip()), record["digest"]):
        return True
    record["attempts"] += 1
    return False
