"""The OAuth 2 authorization server (authlib), as SMART App Launch and Backend Services need it.

- Backend services: `client_credentials` with `private_key_jwt` client authentication (RFC
  7523; SMART requires RS384 or ES384 signatures, a one-time `jti` and an assertion that lives
  at most five minutes).
- Apps: the authorization code grant with PKCE, S256 only and always required (`plain` is
  refused), for public clients (no secret) and confidential ones (client_secret_basic/post,
  or private_key_jwt for apps registered with their keys);
  refresh tokens that rotate at each use and never widen the scope.
- Token introspection (RFC 7662) for bearers of the introspect scope and clients registered
  for it, and for any authenticated client of its own tokens; revocation (RFC 7009) by the
  client a token was issued to.

Client authentication is in clients.py, the grants in grants.py; this module issues the
tokens, introspects and revokes them. authlib is framework-agnostic: requests and responses
are plain data, and the HTTP layer (http/auth_routes.py, http/login_routes.py) does the rest.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)

from .clients import (
    PRIVATE_KEY_JWT,
    ClientAssertion,
    FormRequest,
    RegisteredClient,
    client_secret_basic,
)
from .grants import CODE_LIFETIME, BackendGrant, CodeGrant, Grantee, Pkce, RefreshGrant
from .jws import peek
from .launch import LaunchContext
from .registry import Registry
from .scope_policy import INTROSPECT_SCOPE
from .tokens import InvalidToken, TokenService

REFRESH_LIFETIME = 30 * 24 * 3600
STYLE_DOCUMENT = "smart-style.json"  # under the issuer: SMART's smart_style_url

# Narrows a requested scope string to what a client may have; "" when nothing is left.
ScopePolicy = Callable[[str, str], str]
# The same for an app acting for a user (`Patient/...`, `Practitioner/...`), with the patient
# and the encounter in context, if any.
UserScopePolicy = Callable[[str, str, str, str | None, str | None], str]


class SmartAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """Token, introspection and revocation; responses come back as (status, body, headers)."""

    def __init__(self, registry: Registry, tokens: TokenService, token_url: str,
                 narrow: ScopePolicy, narrow_for_user: UserScopePolicy, *,
                 terms_version: str | None = None) -> None:
        """`terms_version`: the platform's terms in force, which a user's codes and refresh
        tokens need accepted (grants.py)."""
        super().__init__()
        self.registry = registry
        self.terms_version = terms_version
        self.tokens = tokens
        self.narrow = narrow
        self.narrow_for_user = narrow_for_user
        self.register_client_auth_method(PRIVATE_KEY_JWT, ClientAssertion(registry, token_url))
        self.register_client_auth_method("client_secret_basic", client_secret_basic)
        self.register_grant(BackendGrant)
        self.register_grant(CodeGrant, [Pkce(required=True)])
        self.register_grant(RefreshGrant)
        self.register_token_generator("client_credentials", self._generate)
        self.register_token_generator("authorization_code", self._generate_for_app)
        self.register_token_generator("refresh_token", self._generate_for_app)

    def query_client(self, client_id: str) -> RegisteredClient | None:
        found = self.registry.client(client_id)
        return RegisteredClient(found) if found else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Tokens are self-contained JWTs, revoked by id. Those issued from an authorization
        code, at the exchange or by refreshing, are noted with it while a replay of the code
        can be told, to be revoked then (RFC 6749 §4.1.2)."""
        user = request.user
        if isinstance(user, Grantee) and user.origin:
            claims = peek(token["access_token"])[1]
            self.registry.note_issued(user.origin, claims["jti"], claims["exp"],
                                      token.get("refresh_token"), keep=CODE_LIFETIME)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No listeners: the audit trail of token issuance comes with the audit module."""

    def create_oauth2_request(self, request: FormRequest) -> FormRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers

    def _generate(self, grant_type: str, client: RegisteredClient, user: Any = None,
                  scope: str | None = None, expires_in: int | None = None,
                  include_refresh_token: bool = False) -> dict[str, Any]:
        granted = self.narrow(client.client.scope, scope or "")
        if not granted:
            raise InvalidScopeError(description="None of the requested scopes may be granted "
                                                "to this client.")
        return self.tokens.issue(subject=client.client.id, client_id=client.client.id,
                                 scope=granted)

    def _generate_for_app(self, grant_type: str, client: RegisteredClient,
                          user: Grantee | None = None,
                          scope: str | None = None, expires_in: int | None = None,
                          include_refresh_token: bool = True) -> dict[str, Any]:
        """A token for an app acting for `user`: scopes narrowed to the app's registration and
        to the user's kind, the launch context (patient, encounter, fhirContext, banner), the
        style document, an `id_token` for OpenID Connect, a refresh token with offline_access."""
        assert user is not None
        granted = self.narrow_for_user(client.client.scope, scope or "", user.fhir_user,
                                       user.launch_patient,
                                       user.launch.encounter if user.launch else None)
        if not granted:
            raise InvalidScopeError(description="None of the requested scopes may be granted.")
        words = granted.split()
        # SMART: patient scopes are granted only with a patient in context (narrow_for_user
        # ensures one is known), and the response then always names it.
        patient_scopes = any(word.startswith("patient/") for word in words)
        in_context = patient_scopes or "launch/patient" in words or "launch" in words
        patient = user.patient if in_context else None
        # The access token always names the user's resource: the resource server decides what
        # a practitioner reaches from it (access/policy.py).
        response = self.tokens.issue(subject=user.username, client_id=client.get_client_id(),
                                     scope=granted, patient=patient, fhir_user=user.fhir_user)
        if patient is not None:
            response.update((user.launch or LaunchContext(patient)).token_fields(words))
        response["smart_style_url"] = f"{self.tokens.issuer}/{STYLE_DOCUMENT}"
        if "openid" in words:
            response["id_token"] = self.tokens.id_token(
                subject=user.username, client_id=client.get_client_id(), fhir_user=user.fhir_user,
                nonce=user.nonce)
        if include_refresh_token and "offline_access" in words:
            refresh = secrets.token_urlsafe(32)
            self.registry.put("refresh", refresh, {
                "client_id": client.get_client_id(), "scope": granted, **user.record()},
                REFRESH_LIFETIME, client_id=client.get_client_id())
            response["refresh_token"] = refresh
        return response

    def token(self, request: FormRequest) -> tuple[int, Any, Any]:
        """The token endpoint."""
        return self.create_token_response(request)  # type: ignore[no-any-return]

    def get_token_grant(self, request: FormRequest) -> Any:
        try:
            return super().get_token_grant(request)
        except UnsupportedGrantTypeError as exc:
            # authlib leaves the description out; say what this server accepts.
            exc.description = (f"grant_type {exc.grant_type or '(missing)'} is not supported: "
                               "use authorization_code, refresh_token or client_credentials.")
            raise

    def introspect(self, request: FormRequest) -> tuple[Any, ...]:
        """RFC 7662, for the bearer of a token granted the introspection scope, or a client
        that authenticates: `active` and the token's claims. A client not registered for the
        introspection scope sees its own tokens only; another's (its user, its patient) is
        `active` false to it, as §2.2 has it for a token the caller may not introspect."""
        error = self._authorize_introspection(request)
        if error is not None:
            return error
        token = request.payload.data.get("token", "")
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:
            return 200, {"active": False}
        caller: RegisteredClient | None = request.client  # None: a bearer granted the scope
        if (caller is not None and INTROSPECT_SCOPE not in caller.client.scope.split()
                and claims.client_id != caller.get_client_id()):
            return 200, {"active": False}
        body: dict[str, Any] = {
            "active": True, "scope": claims.scope, "client_id": claims.client_id,
            "sub": claims.subject, "exp": claims.expires, "iss": self.tokens.issuer,
            "aud": self.tokens.audience, "token_type": "Bearer"}
        if claims.patient:
            body["patient"] = claims.patient
        if claims.fhir_user:
            body["fhirUser"] = self.tokens.absolute(claims.fhir_user)
        return 200, body

    def _authorize_introspection(self, request: FormRequest) -> tuple[Any, ...] | None:
        """None when the caller may introspect: `Authorization: Bearer` with a token granted
        INTROSPECT_SCOPE (RFC 6750 errors otherwise), else client authentication."""
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return self._authenticate(request, "introspection")
        try:
            if peek(credential.strip())[1].get("iss") != self.tokens.issuer:
                # Only this server grants the introspect scope, never a trusted provider.
                raise InvalidToken("Introspection takes this server's tokens only.")
            claims = self.tokens.verify(credential.strip())
        except InvalidToken as exc:
            return (401, {"error": "invalid_token", "error_description": str(exc)},
                    {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if INTROSPECT_SCOPE not in claims.scope.split():
            why = f"Introspection needs the {INTROSPECT_SCOPE} scope."
            challenge = f'Bearer error="insufficient_scope", scope="{INTROSPECT_SCOPE}"'
            return (403, {"error": "insufficient_scope", "error_description": why},
                    {"WWW-Authenticate": challenge})
        return None

    def revoke(self, request: FormRequest) -> tuple[Any, ...]:
        """RFC 7009, for an authenticated client."""
        error = self._authenticate(request, "revocation")
        if error is not None:
            return error
        token = request.payload.data.get("token", "")
        # A refresh token is spent, else an access token revoked; RFC 7009 §2.1: only by the
        # client it was issued to. An unknown or invalid token is not an error (§2.2).
        record = self.registry.get("refresh", token)
        if record is not None:
            owner = str(record["client_id"])
        else:
            try:
                claims = self.tokens.verify(token)
            except InvalidToken:
                return 200, {}
            if not claims.token_id:  # an external provider's token without an id: not ours
                return 200, {}
            owner = claims.client_id
        if owner != request.client.get_client_id():  # client ids are public: no timing to hide
            error = UnauthorizedClientError(description="The token was not issued to this client.")
            return error.status_code, dict(error.get_body())
        if record is not None:
            self.registry.spend("refresh", token)
        else:
            self.registry.revoke(claims.token_id, claims.expires)
        return 200, {}

    def _authenticate(self, request: FormRequest, endpoint: str) -> tuple[Any, ...] | None:
        """Authenticate the caller: confidential clients for introspection; public apps too
        for revocation (RFC 7009 lets a public client revoke what it was given)."""
        methods = [PRIVATE_KEY_JWT, "client_secret_basic", "client_secret_post"]
        if endpoint == "revocation":
            methods.append("none")
        try:
            request.client = self.authenticate_client(request, methods, endpoint=endpoint)
        except OAuth2Error as exc:
            # RFC 7662 §2.1: a caller that does not authenticate is answered 401, and a 401
            # names the scheme to use (RFC 7235 §3.1): authlib adds it for a 401.
            if isinstance(exc, InvalidClientError):
                exc.status_code = 401
            return exc.status_code, dict(exc.get_body()), exc.get_headers()
        return None
