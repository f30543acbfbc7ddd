"""Signed JWTs from others (client assertions, trusted providers' tokens) read as RFC 7515 §4
asks: header parameters that are not understood are ignored (some clients add `kty` or
`x5t`), unless listed in `crit`. No extension is understood here, so any `crit` is refused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import UnsupportedHeaderError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry


def decode(token: str, keys: KeySet, algorithms: Collection[str]) -> jwt.Token:
    """The verified token; JoseError when the signature, algorithm or `crit` is refused."""
    if "crit" in peek(token)[0]:
        raise UnsupportedHeaderError("critical header parameters are not understood here")
    registry = JWSRegistry(algorithms=list(algorithms), strict_check_header=False)
    return jwt.decode(token, keys, algorithms=list(algorithms), registry=registry)


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a JWT before any check: only to pick who must verify it."""
    try:
        header, payload = token.split(".")[:2]
        return _b64json(header), _b64json(payload)
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return {}, {}


def _b64json(part: str) -> dict[str, Any]:
    value = orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value
