"""Trusting an external OpenID Connect provider's access tokens (Pro Santé Connect for health
professionals, a hospital's Keycloak, ...) besides this server's own.

Each trusted issuer is configured with its JWKS URL and the audience its tokens must carry
(this server's FHIR base URL by default). Its keys are fetched when first needed, cached five
minutes, and fetched again (at most every 30 s) when a token names a key not in the cache, so
that the provider's key rotation needs no restart. Scopes come from the `scope` claim (a
string) or `scp` (a list); `patient` and `fhirUser` claims are used when present.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jwt
from joserfc.jwk import KeySet

_CACHE_SECONDS = 300
_REFETCH_SECONDS = 30
_FETCH_TIMEOUT = 5
# What external providers sign with (RFC 7518); "none" and HMAC are never accepted.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "ES256", "ES384"]


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    issuer: str
    jwks_uri: str
    audience: str


class ExternalIssuers:
    """The trusted issuers and their cached key sets."""

    def __init__(self, issuers: list[TrustedIssuer]) -> None:
        self.issuers = {i.issuer: i for i in issuers}
        self._keys: dict[str, tuple[float, KeySet]] = {}
        self._lock = threading.Lock()

    def trusts(self, issuer: str) -> TrustedIssuer | None:
        return self.issuers.get(issuer)

    def _key_set(self, issuer: TrustedIssuer, kid: str | None) -> KeySet:
        now = time.monotonic()
        cached = self._keys.get(issuer.issuer)
        known = cached is not None and (kid is None or any(k.kid == kid for k in cached[1].keys))
        fresh = cached is not None and now - cached[0] < _CACHE_SECONDS
        if cached is not None and (fresh and known or now - cached[0] < _REFETCH_SECONDS):
            return cached[1]
        with self._lock:
            with urllib.request.urlopen(issuer.jwks_uri, timeout=_FETCH_TIMEOUT) as response:  # noqa: S310 - configured by the operator
                keys = KeySet.import_key_set(orjson.loads(response.read()))
            self._keys[issuer.issuer] = (now, keys)
        return keys

    def verify(self, issuer: TrustedIssuer, token: str, kid: str | None) -> dict[str, Any]:
        """The claims of a token from `issuer`: signature, issuer, audience, expiry."""
        decoded = jwt.decode(token, self._key_set(issuer, kid), algorithms=ALGORITHMS)
        jwt.JWTClaimsRegistry(
            leeway=30,
            iss={"essential": True, "value": issuer.issuer},
            aud={"essential": True, "value": issuer.audience},
            exp={"essential": True},
            sub={"essential": True},
        ).validate(decoded.claims)
        return dict(decoded.claims)


def scope_of(claims: dict[str, Any]) -> str:
    """The granted scopes, as providers spell them (`scope` string or `scp` list)."""
    if isinstance(claims.get("scope"), str):
        return str(claims["scope"])
    scp = claims.get("scp")
    return " ".join(str(s) for s in scp) if isinstance(scp, list) else ""


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

