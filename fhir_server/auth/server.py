"""The OAuth 2 authorization server (authlib), as SMART Backend Services needs it.

`client_credentials` with `private_key_jwt` client authentication (RFC 7523; SMART requires
RS384 or ES384 signatures, a one-time `jti` and an assertion that lives at most five minutes),
token introspection (RFC 7662) and revocation (RFC 7009) for authenticated clients. authlib is
framework-agnostic: this module adapts its request and response to plain data, and the HTTP
layer (http/auth_routes.py) does the rest.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError, InvalidScopeError, OAuth2Error
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .registry import Client, Registry
from .tokens import TokenService

ASSERTION_ALGORITHMS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = 300  # seconds (SMART Backend Services)
PRIVATE_KEY_JWT = "private_key_jwt"

# Narrows a requested scope string to what a client may have; "" when nothing is left.
ScopePolicy = Callable[[str, str], str]


class _Client(ClientMixin):  # type: ignore[misc]
    """authlib's view of a registered backend client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get_client_id(self) -> str:
        return self.client.id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return False  # backend clients prove themselves with signed assertions only

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return self.client.kind == "backend" and method == PRIVATE_KEY_JWT

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return self.client.kind == "backend" and grant_type == "client_credentials"


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, form: Mapping[str, list[str]]) -> None:
        self._form = form

    @property
    def data(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._form.items() if v}

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return defaultdict(list, self._form)


class FormRequest(OAuth2Request):  # type: ignore[misc]
    """A form POST as authlib sees it (the HTTP layer has read the body already)."""

    def __init__(self, uri: str, headers: Mapping[str, str], form: Mapping[str, list[str]]):
        super().__init__("POST", uri, headers=dict(headers))
        self._form_lists = form
        self.payload = _Payload(form)

    @property
    def form(self) -> dict[str, str]:
        return dict(self.payload.data)

    @property
    def args(self) -> dict[str, str]:
        return {}


class _ClientAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
    """private_key_jwt as SMART Backend Services profiles it."""

    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, registry: Registry, token_url: str) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.registry = registry
        self._audiences = [token_url]

    def get_audiences(self) -> list[str]:
        return self._audiences

    def resolve_client_public_key(self, client: _Client) -> KeySet:
        try:
            return KeySet.import_key_set(self.registry.client_keys(client.client))  # type: ignore[arg-type]
        except (OSError, ValueError, JoseError) as exc:
            raise InvalidClientError(description="The client's keys cannot be read.") from exc

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except JoseError as exc:
            raise InvalidClientError(
                description="The client assertion's signature or algorithm is not accepted "
                            f"(SMART requires {' or '.join(ASSERTION_ALGORITHMS)}).") from exc
        claims = token.claims
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp - time.time() > MAX_ASSERTION_LIFETIME + 30:
            raise InvalidClientError(description="The client assertion must expire within "
                                                 f"{MAX_ASSERTION_LIFETIME} seconds.")
        self.verify_claims(claims)
        return claims

    def validate_jti(self, claims: Mapping[str, Any], jti: str) -> bool:
        return self.registry.use_jti(f"{claims['iss']}:{jti}", float(claims["exp"]) + 60)


class _BackendGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [PRIVATE_KEY_JWT]


class SmartAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """Token, introspection and revocation; responses come back as (status, body, headers)."""

    def __init__(self, registry: Registry, tokens: TokenService, token_url: str,
                 narrow: ScopePolicy) -> None:
        super().__init__()
        self.registry = registry
        self.tokens = tokens
        self.narrow = narrow
        self.register_client_auth_method(PRIVATE_KEY_JWT, _ClientAssertion(registry, token_url))
        self.register_grant(_BackendGrant)
        self.register_token_generator("client_credentials", self._generate)

    def query_client(self, client_id: str) -> _Client | None:
        found = self.registry.client(client_id)
        return _Client(found) if found else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Nothing to keep: tokens are self-contained JWTs, revoked by id."""

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No listeners: the audit trail of token issuance comes with the audit module."""

    def create_oauth2_request(self, request: FormRequest) -> FormRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers

    def _generate(self, grant_type: str, client: _Client, user: Any = None,
                  scope: str | None = None, expires_in: int | None = None,
                  include_refresh_token: bool = False) -> dict[str, Any]:
        granted = self.narrow(client.client.scope, scope or "")
        if not granted:
            raise InvalidScopeError(description="None of the requested scopes may be granted "
                                                "to this client.")
        return self.tokens.issue(subject=client.client.id, client_id=client.client.id,
                                 scope=granted)

    def token(self, request: FormRequest) -> tuple[int, Any, Any]:
        """The token endpoint."""
        return self.create_token_response(request)  # type: ignore[no-any-return]

    def introspect(self, request: FormRequest) -> tuple[int, dict[str, Any]]:
        """RFC 7662, for an authenticated client: `active` and the token's claims."""
        error = self._authenticate(request, "introspection")
        if error is not None:
            return error
        token = request.payload.data.get("token", "")
        try:
            claims = self.tokens.verify(token)
        except Exception:  # noqa: BLE001 - any invalid token is simply inactive
            return 200, {"active": False}
        body: dict[str, Any] = {
            "active": True, "scope": claims.scope, "client_id": claims.client_id,
            "sub": claims.subject, "exp": claims.expires, "iss": self.tokens.issuer,
            "aud": self.tokens.audience, "token_type": "Bearer"}
        if claims.patient:
            body["patient"] = claims.patient
        if claims.fhir_user:
            body["fhirUser"] = claims.fhir_user
        return 200, body

    def revoke(self, request: FormRequest) -> tuple[int, dict[str, Any]]:
        """RFC 7009, for an authenticated client."""
        error = self._authenticate(request, "revocation")
        if error is not None:
            return error
        self.tokens.revoke(request.payload.data.get("token", ""))
        return 200, {}

    def _authenticate(self, request: FormRequest, endpoint: str) -> tuple[int, dict[str, Any]] | None:
        try:
            self.authenticate_client(request, [PRIVATE_KEY_JWT], endpoint=endpoint)
        except OAuth2Error as exc:
            # RFC 7662 section 2.1: a caller that does not authenticate is answered 401.
            status = 401 if isinstance(exc, InvalidClientError) else exc.status_code
            return status, dict(exc.get_body())
        return None
