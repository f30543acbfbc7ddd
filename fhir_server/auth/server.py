"""The OAuth 2 authorization server (authlib), as SMART App Launch and Backend Services need it.

- Backend services: `client_credentials` with `private_key_jwt` client authentication (RFC
  7523; SMART requires RS384 or ES384 signatures, a one-time `jti` and an assertion that lives
  at most five minutes).
- Apps: the authorization code grant with PKCE, S256 only and always required (`plain` is
  refused), for public clients (no secret) and confidential ones (client_secret_basic/post);
  refresh tokens that rotate at each use and never widen the scope.
- Token introspection (RFC 7662) and revocation (RFC 7009) for authenticated clients.

authlib is framework-agnostic: this module adapts its request and response to plain data, and
the HTTP layer (http/auth_routes.py, http/login_routes.py) does the rest.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc6749.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
)
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7523.client import ASSERTION_TYPE
from authlib.oauth2.rfc7636 import CodeChallenge
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .jws import decode, peek
from .launch import LaunchContext
from .registry import Client, Registry
from .remote_keys import RemoteKeySets
from .scope_policy import INTROSPECT_SCOPE
from .secrets_hash import verify_secret
from .tokens import InvalidToken, TokenService

ASSERTION_ALGORITHMS = ["RS384", "ES384"]
CODE_LIFETIME = 600  # seconds, RFC 6749 section 4.1.2's recommended maximum
REFRESH_LIFETIME = 30 * 24 * 3600
MAX_ASSERTION_LIFETIME = 300  # seconds (SMART Backend Services)
PRIVATE_KEY_JWT = "private_key_jwt"
STYLE_DOCUMENT = "smart-style.json"  # under the issuer: SMART's smart_style_url
_AUTH_METHODS = {
    "backend": {PRIVATE_KEY_JWT},
    "public": {"none"},
    "confidential": {"client_secret_basic", "client_secret_post"},
    "asymmetric": {PRIVATE_KEY_JWT},
}
# The token endpoint's methods for apps (authorization code and refresh).
_APP_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT]

# Narrows a requested scope string to what a client may have; "" when nothing is left.
ScopePolicy = Callable[[str, str], str]
# The same for an app acting for a user (`Patient/...`, `Practitioner/...`), with the patient
# and the encounter in context, if any.
UserScopePolicy = Callable[[str, str, str, str | None, str | None], str]


class _Client(ClientMixin):  # type: ignore[misc]
    """authlib's view of a registered client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get_client_id(self) -> str:
        return self.client.id

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def get_default_redirect_uri(self) -> str | None:
        uris = self.client.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.client.redirect_uris  # exact match, no patterns

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.client.secret_hash
        return stored is not None and verify_secret(client_secret, stored)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in _AUTH_METHODS[self.client.kind]

    def check_response_type(self, response_type: str) -> bool:
        return self.client.kind != "backend" and response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if self.client.kind == "backend":
            return grant_type == "client_credentials"
        return grant_type in ("authorization_code", "refresh_token")


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, form: Mapping[str, list[str]]) -> None:
        self._form = form

    @property
    def data(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._form.items() if v}

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return defaultdict(list, self._form)


class _Headers(dict[str, str]):
    """Request headers with case-insensitive names (RFC 9110 §5.1): the HTTP layer hands them
    lower-cased, authlib asks for `Authorization`."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((name.lower(), value) for name, value in headers.items())

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


class FormRequest(OAuth2Request):  # type: ignore[misc]
    """A request as authlib sees it: a form POST, or (`method` GET) an authorization request's
    query parameters. The HTTP layer has read them already."""

    def __init__(self, uri: str, headers: Mapping[str, str], form: Mapping[str, list[str]],
                 method: str = "POST") -> None:
        super().__init__(method, uri, headers=_Headers(headers))
        self.payload = _Payload(form)

    @property
    def form(self) -> dict[str, str]:
        return dict(self.payload.data) if self.method == "POST" else {}

    @property
    def args(self) -> dict[str, str]:
        return dict(self.payload.data) if self.method == "GET" else {}


def _client_secret_basic(query_client: Callable[[str], _Client | None],
                         request: OAuth2Request) -> _Client | None:
    """client_secret_basic as RFC 6749 §2.3.1 has it: id and secret form-urlencoded, then
    Basic. Clients that skip the urlencoding (many do) send the same bytes when the secret has
    no reserved character; otherwise the raw form is tried too: either way the caller must
    know the secret."""
    raw_id, raw_secret = extract_basic_authorization(request.headers)
    if not raw_id or not raw_secret:
        return None
    client = query_client(unquote_plus(raw_id))
    if client is None:
        raise InvalidClientError(status_code=401, description="Unknown client.")
    candidates = dict.fromkeys((unquote_plus(raw_secret), raw_secret))
    return client if any(client.check_client_secret(c) for c in candidates) else None


class _ClientAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
    """private_key_jwt as SMART profiles it (Backend Services, and confidential asymmetric
    apps): RS384 or ES384, a one-time `jti`, at most five minutes of life, the client's keys
    inline or from its registered JWKS URL (a `jku` naming any other URL is refused), header
    parameters not understood ignored unless critical (jws.py)."""

    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, registry: Registry, token_url: str) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.registry = registry
        self.key_sets = RemoteKeySets()
        self._audiences = [token_url]

    def get_audiences(self) -> list[str]:
        return self._audiences

    def __call__(self, query_client: Callable[[str], _Client | None],
                 request: OAuth2Request) -> _Client | None:
        form = request.form
        assertion = form.get("client_assertion")
        if form.get("client_assertion_type") != ASSERTION_TYPE or not assertion:
            return None
        header, claims = peek(assertion)
        subject = claims.get("sub")
        if not isinstance(subject, str):
            raise InvalidClientError(description="The client assertion names no client (sub).")
        client = query_client(subject)
        if client is None:
            raise InvalidClientError(description="The client does not exist on this server.")
        keys = self._keys(client.client, header)
        request.client = client
        self.process_assertion_claims(assertion, keys)
        return self.authenticate_client(client)  # type: ignore[no-any-return]

    def _keys(self, client: Client, header: Mapping[str, Any]) -> KeySet:
        """The client's public keys, as registered; the assertion's `jku`, if any, must be
        the registered JWKS URL (SMART Backend Services)."""
        jku = header.get("jku")
        if jku is not None and jku != client.jwks_uri:
            raise InvalidClientError(description="The assertion's jku is not the JWKS URL "
                                                 "registered for this client.")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        try:
            if client.jwks is not None:
                return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
            if client.jwks_uri is None:
                raise InvalidClientError(description="This client has no registered keys.")
            return self.key_sets.key_set(client.jwks_uri, kid)
        except (OSError, ValueError, JoseError) as exc:
            raise InvalidClientError(description="The client's keys cannot be read.") from exc

    def process_assertion_claims(self, assertion: str, keys: KeySet) -> Any:
        try:
            token = decode(assertion, keys, ASSERTION_ALGORITHMS)
        except JoseError as exc:
            raise InvalidClientError(
                description="The client assertion's signature, algorithm or critical headers "
                            f"are not accepted (SMART requires {' or '.join(ASSERTION_ALGORITHMS)}).") from exc
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


@dataclass(frozen=True, slots=True)
class Grantee:
    """Who approved a grant, and the context it was given in (kept with codes and refresh
    tokens)."""

    username: str
    fhir_user: str
    nonce: str | None = None
    launch: LaunchContext | None = None  # an EHR launch's, or the patient picked

    @property
    def launch_patient(self) -> str | None:
        return self.launch.patient if self.launch else None

    @property
    def patient(self) -> str | None:
        """The patient in context: the one the launch names, else the user if a patient."""
        if self.launch:
            return self.launch.patient
        kind, _, id = self.fhir_user.partition("/")
        return id if kind == "Patient" else None

    def record(self) -> dict[str, Any]:
        """What a stored code or refresh token keeps of the grantee."""
        return {"username": self.username, "fhir_user": self.fhir_user,
                "launch": self.launch.as_dict() if self.launch else None}

    @classmethod
    def from_record(cls, data: dict[str, Any], nonce: str | None = None) -> Grantee:
        return cls(data["username"], data["fhir_user"], nonce, LaunchContext.from_record(data))


class _Record:
    """A stored code or refresh token, as authlib's grants query it."""

    def __init__(self, key: str, client_id: str, data: dict[str, Any]) -> None:
        self.key = key
        self.client_id = client_id
        self.data = data

    def get_redirect_uri(self) -> str:
        return str(self.data["redirect_uri"])

    def get_scope(self) -> str:
        return str(self.data["scope"])

    def check_client(self, client: _Client) -> bool:
        return self.client_id == client.get_client_id()

    def is_expired(self) -> bool:
        return False  # expired records are never returned

    def is_revoked(self) -> bool:
        return False


class _Pkce(CodeChallenge):  # type: ignore[misc]
    """PKCE as SMART requires it: a S256 challenge on every authorization request."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge (S256).")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: _Record) -> str:
        return str(authorization_code.data["code_challenge"])

    def get_authorization_code_challenge_method(self, authorization_code: _Record) -> str:
        return "S256"


class _CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _APP_AUTH_METHODS

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        grantee: Grantee = request.user
        self.server.registry.put("code", code, {
            "redirect_uri": data.get("redirect_uri") or request.client.get_default_redirect_uri(),
            "scope": request.scope or "", "code_challenge": data["code_challenge"],
            "nonce": data.get("nonce"), "client_id": request.client.get_client_id(),
            **grantee.record()},
            CODE_LIFETIME, client_id=request.client.get_client_id())

    def query_authorization_code(self, code: str, client: _Client) -> _Record | None:
        # Spent at once, atomically: a second exchange of the same code (a replay, or a race
        # with the legitimate client) finds nothing.
        data = self.server.registry.get("code", code)
        if data is None or not self.server.registry.spend("code", code):
            return None
        # Bound to the client it was issued to: another client presenting it gets nothing.
        record = _Record(code, str(data["client_id"]), data)
        return record if record.check_client(client) else None

    def delete_authorization_code(self, authorization_code: _Record) -> None:
        """Already spent when queried."""

    def authenticate_user(self, authorization_code: _Record) -> Grantee:
        return Grantee.from_record(authorization_code.data, authorization_code.data.get("nonce"))


class _RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _APP_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: each refresh token works once

    def authenticate_refresh_token(self, refresh_token: str) -> _Record | None:
        data = self.server.registry.get("refresh", refresh_token)
        return _Record(refresh_token, data["client_id"], data) if data else None

    def authenticate_user(self, refresh_token: _Record) -> Grantee:
        return Grantee.from_record(refresh_token.data)

    def revoke_old_credential(self, refresh_token: _Record) -> None:
        if not self.server.registry.spend("refresh", refresh_token.key):
            raise InvalidGrantError(description="The refresh token was used already.")


class SmartAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """Token, introspection and revocation; responses come back as (status, body, headers)."""

    def __init__(self, registry: Registry, tokens: TokenService, token_url: str,
                 narrow: ScopePolicy, narrow_for_user: UserScopePolicy) -> None:
        super().__init__()
        self.registry = registry
        self.tokens = tokens
        self.narrow = narrow
        self.narrow_for_user = narrow_for_user
        self.register_client_auth_method(PRIVATE_KEY_JWT, _ClientAssertion(registry, token_url))
        self.register_client_auth_method("client_secret_basic", _client_secret_basic)
        self.register_grant(_BackendGrant)
        self.register_grant(_CodeGrant, [_Pkce(required=True)])
        self.register_grant(_RefreshGrant)
        self.register_token_generator("client_credentials", self._generate)
        self.register_token_generator("authorization_code", self._generate_for_app)
        self.register_token_generator("refresh_token", self._generate_for_app)

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

    def _generate_for_app(self, grant_type: str, client: _Client, user: Grantee | None = None,
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
        """RFC 7662, for an authenticated client or the bearer of a token granted the
        introspection scope: `active` and the token's claims."""
        error = self._authorize_introspection(request)
        if error is not None:
            return error
        token = request.payload.data.get("token", "")
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:
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
            claims = self.tokens.verify(credential.strip())
        except InvalidToken as exc:
            return (401, {"error": "invalid_token", "error_description": str(exc)},
                    {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if INTROSPECT_SCOPE not in claims.scope.split():
            return (403, {"error": "insufficient_scope",
                          "error_description": f"Introspection needs the {INTROSPECT_SCOPE} scope."},
                    {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{INTROSPECT_SCOPE}"'})
        return None

    def revoke(self, request: FormRequest) -> tuple[int, dict[str, Any]]:
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
        if not secrets.compare_digest(owner, request.client.get_client_id()):
            error = UnauthorizedClientError(description="The token was not issued to this client.")
            return error.status_code, dict(error.get_body())
        if record is not None:
            self.registry.spend("refresh", token)
        else:
            self.registry.revoke(claims.token_id, claims.expires)
        return 200, {}

    def _authenticate(self, request: FormRequest, endpoint: str) -> tuple[int, dict[str, Any]] | None:
        """Authenticate the caller: confidential clients for introspection; public apps too
        for revocation (RFC 7009 lets a public client revoke what it was given)."""
        methods = [PRIVATE_KEY_JWT, "client_secret_basic", "client_secret_post"]
        if endpoint == "revocation":
            methods.append("none")
        try:
            request.client = self.authenticate_client(request, methods, endpoint=endpoint)
        except OAuth2Error as exc:
            # RFC 7662 section 2.1: a caller that does not authenticate is answered 401.
            status = 401 if isinstance(exc, InvalidClientError) else exc.status_code
            return status, dict(exc.get_body())
        return None
