"""Access tokens: short-lived JWTs this server signs (RFC 9068 profile) and checks.

A token names its issuer, its audience (the FHIR base URL: a token for another server is
refused here), its subject and client, the granted scopes, an id (`jti`, for revocation) and,
in a patient-facing launch, the patient in context.

A verified token of this server is remembered until it expires (token_cache.py): its
signature and claims are checked once, its revocation and its user's suspension on every use.
"""

from __future__ import annotations

import secrets
from .. import clock
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .external import ExternalIssuers, TrustedIssuer, scope_of
from .jws import peek
from .psc import Professional, UnknownProfessional, professional_of
from .keys import ALGORITHM, SigningKeys
from .registry import Client, Registry
from .token_cache import TokenCache
from .users import Users

LEEWAY = 30  # seconds of clock skew allowed on `exp`


class InvalidToken(Exception):
    """The bearer token cannot be accepted; the message says why (safe to show)."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified access token says."""

    subject: str
    client_id: str
    scope: str
    token_id: str
    expires: int
    patient: str | None = None
    fhir_user: str | None = None
    professional: Professional | None = None  # a Pro Santé Connect token's
    issued: float = 0  # iat (this server's tokens)


class TokenService:
    """Issues and verifies this server's access tokens."""

    def __init__(self, keys: SigningKeys, registry: Registry, *, issuer: str, audience: str,
                 lifetime: int, external: ExternalIssuers | None = None) -> None:
        self.keys = keys
        self.registry = registry
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self.external = external or ExternalIssuers([])
        self._verified: TokenCache[TokenClaims] = TokenCache()
        self.users = Users(registry)

    def issue(self, *, subject: str, client_id: str, scope: str, patient: str | None = None,
              fhir_user: str | None = None) -> dict[str, Any]:
        """A token response body (RFC 6749 §5.1; SMART: numeric `expires_in`, `scope`)."""
        now = int(clock.seconds())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": subject, "client_id": client_id,
            "scope": scope, "iat": now, "exp": now + self.lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        if patient:
            claims["patient"] = patient
        if fhir_user:
            claims["fhirUser"] = fhir_user
        key = self.keys.signing_key()
        token = jwt.encode({"alg": ALGORITHM, "typ": "at+jwt", "kid": key.kid}, claims, key)
        response: dict[str, Any] = {"access_token": token, "token_type": "Bearer",
                                    "expires_in": self.lifetime, "scope": scope}
        if patient:
            response["patient"] = patient
        return response

    def id_token(self, *, subject: str, client_id: str, fhir_user: str,
                 nonce: str | None) -> str:
        """An OpenID Connect id_token for the app (`aud` its client id) naming the user's FHIR
        resource in `fhirUser` (SMART App Launch: scopes for requesting identity data)."""
        now = int(clock.seconds())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": subject, "aud": client_id,
                                  "iat": now, "exp": now + self.lifetime,
                                  "fhirUser": self.absolute(fhir_user)}
        if nonce:
            claims["nonce"] = nonce
        key = self.keys.signing_key()
        return jwt.encode({"alg": ALGORITHM, "kid": key.kid}, claims, key)

    def absolute(self, fhir_user: str) -> str:
        """`fhirUser` as SMART wants it in id_tokens and introspection: an absolute URL."""
        return fhir_user if "://" in fhir_user else f"{self.audience}/{fhir_user}"

    def may_fetch(self, token: str) -> bool:
        """Whether `verify` may fetch a key set over the network (up to remote_keys.py's
        FETCH_TIMEOUT): for a trusted external issuer's token, whose keys are fetched on first
        use, when stale and on an unknown kid. This server's own tokens never fetch."""
        if not self.external.issuers:
            return False
        return self.external.trusts(str(peek(token)[1].get("iss", ""))) is not None

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token: signature, issuer, audience, expiry, not revoked.

        Tokens of a trusted external OpenID provider are checked against its keys instead.
        """
        return self.verified(token)[0]

    def verified(self, token: str) -> tuple[TokenClaims, Client | None]:
        """`verify`'s claims, and the registered client they name (None if none is), looked
        up with the token's revocation: a request needs both."""
        keys = self.keys.verification_keys()
        claims = self._verified.get(token, keys)
        if claims is None:
            header, unverified = peek(token)
            trusted = self.external.trusts(str(unverified.get("iss", "")))
            if trusted is not None:
                claims = self._verify_external(trusted, token, header.get("kid"))
                return claims, self.registry.client(claims.client_id)
            claims = self._verify_own(token, keys)
            self._verified.put(token, keys, claims, claims.expires + LEEWAY)
        revoked, client = self.registry.standing(claims.token_id, claims.client_id)
        if revoked:
            raise InvalidToken("The token has been revoked.")
        # A user's token (it names its fhirUser) stops with the account's suspension, and
        # stays stopped after reinstatement: asked at every use, as revocation is, never cached.
        if claims.fhir_user is not None:
            since = self.users.valid_since(claims.subject)
            if since is None:
                raise InvalidToken("The account is suspended.")
            if claims.issued < since:
                raise InvalidToken("The token was issued before the account's suspension.")
        return claims, client

    def _verify_own(self, token: str, keys: KeySet) -> TokenClaims:
        """The claims of a token this server signed (signature, issuer, audience, expiry)."""
        try:
            decoded = jwt.decode(token, keys, algorithms=[ALGORITHM])
            jwt.JWTClaimsRegistry(
                leeway=LEEWAY,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
                jti={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise InvalidToken(_reason(exc)) from None
        claims = decoded.claims
        return TokenClaims(
            subject=str(claims["sub"]), client_id=str(claims.get("client_id", "")),
            scope=str(claims.get("scope", "")), token_id=str(claims["jti"]),
            expires=int(claims["exp"]), patient=claims.get("patient"),
            fhir_user=claims.get("fhirUser"), issued=float(claims.get("iat", 0)))

    def _verify_external(self, trusted: TrustedIssuer, token: str,
                         kid: str | None) -> TokenClaims:
        """The claims of a trusted external issuer's token, checked against its keys."""
        try:
            claims = self.external.verify(trusted, token, kid)
        except (JoseError, ValueError, OSError) as exc:
            raise InvalidToken(_reason(exc)) from None
        try:
            professional = professional_of(claims) if trusted.psc else None
        except UnknownProfessional as exc:
            raise InvalidToken(str(exc)) from None
        return TokenClaims(
            subject=str(claims["sub"]), client_id=str(claims.get("azp", claims.get("client_id", ""))),
            scope=scope_of(claims), token_id=str(claims.get("jti", "")),
            expires=int(claims["exp"]), patient=claims.get("patient"),
            # A PSC token's fhirUser is the stored Practitioner of its RPPS (http/auth.py).
            fhir_user=None if professional else claims.get("fhirUser"), professional=professional)


def _reason(exc: Exception) -> str:
    """A short, safe description: never the token or key material."""
    name = getattr(exc, "error", None) or type(exc).__name__
    if name == "expired_token":
        return "The token has expired."
    if name in ("invalid_claim", "missing_claim"):
        return f"The token is not for this server ({getattr(exc, 'claim', 'claims')})."
    return "The token is not valid (signature or format)."
