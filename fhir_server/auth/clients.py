"""How clients authenticate at the token, introspection and revocation endpoints, as authlib
sees them: client_secret_basic (RFC 6749 §2.3.1) and client_secret_post for confidential apps,
`none` for public ones, private_key_jwt (RFC 7523) as SMART profiles it for backend services
and asymmetric apps; and the request adapter (form and headers) authlib reads.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_plus

from authlib.oauth2 import OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7523.client import ASSERTION_TYPE
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .jws import decode, peek
from .registry import Client, Registry
from .remote_keys import RemoteKeySets
from .secrets_hash import verify_secret

ASSERTION_ALGORITHMS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = 300  # seconds (SMART Backend Services)
PRIVATE_KEY_JWT = "private_key_jwt"
_AUTH_METHODS = {
    "backend": {PRIVATE_KEY_JWT},
    "public": {"none"},
    "confidential": {"client_secret_basic", "client_secret_post"},
    "asymmetric": {PRIVATE_KEY_JWT},
}
# The token endpoint's methods for apps (authorization code and refresh).
APP_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT]


class RegisteredClient(ClientMixin):  # type: ignore[misc]
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


def client_secret_basic(query_client: Callable[[str], RegisteredClient | None],
                        request: OAuth2Request) -> RegisteredClient | None:
    """client_secret_basic as RFC 6749 §2.3.1 has it: id and secret form-urlencoded, then
    Basic, so decoded here exactly once (authlib's own reading percent-decodes without turning
    `+` into a space, and would be a second decoding). Clients that skip the urlencoding (many
    do) send the same bytes when the secret has no reserved character; otherwise the raw form
    is tried too: either way the caller must know the secret."""
    credentials = _basic_credentials(request.headers.get("Authorization", ""))
    if credentials is None:
        return None
    raw_id, raw_secret = credentials
    client = query_client(unquote_plus(raw_id))
    if client is None:
        raise InvalidClientError(status_code=401, description="Unknown client.")
    candidates = dict.fromkeys((unquote_plus(raw_secret), raw_secret))
    return client if any(client.check_client_secret(c) for c in candidates) else None


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """The id and secret of `Authorization: Basic`, as sent (still form-urlencoded)."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    raw_id, colon, raw_secret = decoded.partition(":")
    return (raw_id, raw_secret) if colon and raw_id and raw_secret else None


class ClientAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
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

    def __call__(self, query_client: Callable[[str], RegisteredClient | None],
                 request: OAuth2Request) -> RegisteredClient | None:
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
