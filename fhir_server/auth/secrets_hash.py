"""Password and client-secret hashes: scrypt (stdlib), salted, compared in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

# RFC 7914 parameters: 16 MiB of memory per hash, about 50 ms here.
_N, _R, _P, _LENGTH = 2**14, 8, 1, 32


def hash_secret(secret: str) -> str:
    """`scrypt$<salt>$<hash>`, both base64."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LENGTH)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether `secret` matches `stored` (a `hash_secret` result)."""
    try:
        scheme, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        computed = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=_N, r=_R, p=_P,
                                  dklen=len(expected))
    except ValueError:
        return False
    return scheme == "scrypt" and hmac.compare_digest(computed, expected)


# A hash of nothing anyone knows: checked against when a user does not exist, so that the
# answer takes as long as for a wrong password.
DECOY = hash_secret(base64.b64encode(os.urandom(24)).decode())
