"""Trusting an external OpenID Connect provider's access tokens (Pro Santé Connect for health
professionals, a hospital's Keycloak, ...) besides this server's own.

Each trusted issuer is configured with its JWKS URL and the audience its tokens must carry
(this server's FHIR base URL by default). Its keys are fetched and cached as remote_keys.py
says (the provider's Cache-Control, five minutes if silent; fetched again when a token names
a key not in the cache), so that the provider's key rotation needs no restart. Scopes come
from the `scope` claim (a string) or `scp` (a list); `patient` and `fhirUser` claims are used
when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from joserfc import jwt

from .jws import decode
from .remote_keys import RemoteKeySets

# What external providers sign with (RFC 7518); "none" and HMAC are never accepted.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "ES256", "ES384"]


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    issuer: str
    jwks_uri: str
    audience: str
    psc: bool = False  # Pro Santé Connect: the token's professional becomes its fhirUser


class ExternalIssuers:
    """The trusted issuers and their cached key sets."""

    def __init__(self, issuers: list[TrustedIssuer]) -> None:
        self.issuers = {i.issuer: i for i in issuers}
        self.key_sets = RemoteKeySets()

    def trusts(self, issuer: str) -> TrustedIssuer | None:
        return self.issuers.get(issuer)

    def verify(self, issuer: TrustedIssuer, token: str, kid: str | None) -> dict[str, Any]:
        """The claims of a token from `issuer`: signature, issuer, audience, expiry."""
        decoded = decode(token, self.key_sets.key_set(issuer.jwks_uri, kid), ALGORITHMS)
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
