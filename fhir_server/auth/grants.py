"""The grants of this authorization server (authlib): the authorization code with PKCE (S256,
always required) for apps, the refresh token (rotating at each use, never widening the scope),
client credentials for backend services; and who approved a grant, kept with codes and
refresh tokens (Grantee), with the code it was exchanged for: a replayed code revokes the
tokens issued from it (RFC 6749 §4.1.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2 import OAuth2Request
from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
)
from authlib.oauth2.rfc7636 import CodeChallenge

from .. import clock
from ..access import parse_scopes
from .clients import APP_AUTH_METHODS, PRIVATE_KEY_JWT, RegisteredClient
from .launch import LaunchContext
from .registry import Registry, origin_of
from .users import Users

CODE_LIFETIME = 600  # seconds, RFC 6749 section 4.1.2's recommended maximum


class BackendGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [PRIVATE_KEY_JWT]


@dataclass(frozen=True, slots=True)
class Grantee:
    """Who approved a grant, and the context it was given in (kept with codes and refresh
    tokens)."""

    username: str
    fhir_user: str
    nonce: str | None = None
    launch: LaunchContext | None = None  # an EHR launch's, or the patient picked
    origin: str | None = None  # registry.origin_of() the code the grant was exchanged for

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
        """What a stored code or refresh token keeps of the grantee, and when it is issued."""
        return {"username": self.username, "fhir_user": self.fhir_user, "issued": clock.seconds(),
                "launch": self.launch.as_dict() if self.launch else None, "origin": self.origin}

    @classmethod
    def from_record(cls, data: dict[str, Any], nonce: str | None = None,
                    origin: str | None = None) -> Grantee:
        return cls(data["username"], data["fhir_user"], nonce, LaunchContext.from_record(data),
                   origin or data.get("origin"))


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

    def check_client(self, client: RegisteredClient) -> bool:
        return self.client_id == client.get_client_id()

    def is_expired(self) -> bool:
        return False  # expired records are never returned

    def is_revoked(self) -> bool:
        return False


class Pkce(CodeChallenge):  # type: ignore[misc]
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


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = APP_AUTH_METHODS

    @staticmethod
    def validate_no_multiple_request_parameter(request: OAuth2Request) -> None:
        """RFC 6749 §3.1: no parameter more than once, `aud`, PKCE's and `launch` included
        (authlib checks five of them)."""
        repeated = sorted(k for k, v in request.payload.datalist.items() if len(v) > 1)
        if repeated:
            raise InvalidRequestError(f"Parameters sent more than once: {', '.join(repeated)}.",
                                      state=request.payload.state)

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        grantee: Grantee = request.user
        self.server.registry.put("code", code, {
            "redirect_uri": data.get("redirect_uri") or request.client.get_default_redirect_uri(),
            "scope": request.scope or "", "code_challenge": data["code_challenge"],
            "nonce": data.get("nonce"), "client_id": request.client.get_client_id(),
            **grantee.record()},
            CODE_LIFETIME, client_id=request.client.get_client_id())

    def query_authorization_code(self, code: str, client: RegisteredClient) -> _Record | None:
        # Spent at once, atomically: a second exchange of the same code (a replay, or a race
        # with the legitimate client) finds nothing.
        data = self.server.registry.get("code", code)
        if data is None or not self.server.registry.spend("code", code):
            # RFC 6749 §4.1.2: the code leaked; what was issued from it is revoked.
            self.server.registry.revoke_issued(origin_of(code))
            return None
        # Bound to the client it was issued to: another client presenting it gets nothing.
        record = _Record(code, str(data["client_id"]), data)
        return record if record.check_client(client) else None

    def delete_authorization_code(self, authorization_code: _Record) -> None:
        """Already spent when queried."""

    def authenticate_user(self, authorization_code: _Record) -> Grantee:
        _check_account(self.server.registry, self.server.terms_version, authorization_code.data)
        return Grantee.from_record(authorization_code.data, authorization_code.data.get("nonce"),
                                   origin_of(authorization_code.key))


class RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = APP_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: each refresh token works once

    def _validate_token_scope(self, token: _Record) -> None:
        """RFC 6749 §6, SMART "Refresh access token": a refresh may ask for less than was
        granted, never more; less as the scopes reach (patient/Observation.rs is less than
        patient/*.rs), not as strings."""
        requested = self.request.payload.scope
        if not requested:
            return
        wanted = parse_scopes(requested)
        kept = parse_scopes(token.get_scope()).narrow(wanted)
        unknown = set(wanted.ignored) - set(token.get_scope().split())
        if len(kept.ignored) > len(wanted.ignored) or unknown:
            raise InvalidScopeError(description="A refresh may ask for the scopes granted or "
                                                "fewer, not for more.")

    def authenticate_refresh_token(self, refresh_token: str) -> _Record | None:
        data = self.server.registry.get("refresh", refresh_token)
        return _Record(refresh_token, data["client_id"], data) if data else None

    def authenticate_user(self, refresh_token: _Record) -> Grantee:
        _check_account(self.server.registry, self.server.terms_version, refresh_token.data)
        return Grantee.from_record(refresh_token.data)

    def revoke_old_credential(self, refresh_token: _Record) -> None:
        if not self.server.registry.spend("refresh", refresh_token.key):
            raise InvalidGrantError(description="The refresh token was used already.")


def _check_account(registry: Registry, terms_version: str | None, data: dict[str, Any]) -> None:
    """A code or refresh token gives no token (invalid_grant) when its account is suspended,
    was issued before its last suspension, or its account has not accepted the version of the
    terms in force (`terms_version`): one issued before that version came in force
    sends the app back through sign-in, where the terms are shown."""
    users = Users(registry)
    username = str(data["username"])
    since = users.valid_since(username)
    if since is None:
        raise InvalidGrantError(description="The account is suspended.")
    if float(data.get("issued", 0)) < since:
        raise InvalidGrantError(description="Issued before the account's suspension: sign in again.")
    if terms_version is not None and terms_version not in users.accepted_terms(username):
        raise InvalidGrantError(description="The platform's terms in force are not accepted: "
                                            "sign in again.")
