"""Sealed content: JWE (RFC 7516) with ECDH-ES+A256KW key agreement and A256GCM content
encryption (RFC 7518 §4.6 and §5.3), to EC P-256 public keys (docs/sealed-messages.md).

`seal` encrypts once for several recipients (the General JSON Serialization; the Compact one
for a single recipient); `open_sealed` (alias `open`, as the issue names it) decrypts with one
recipient's private key. The server only calls `recipient_kids`: it checks who a sealed payload
is for, and never holds a private key that opens it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

import orjson
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

ALG = "ECDH-ES+A256KW"
ENC = "A256GCM"
CONTENT_TYPES = ("application/jose", "application/jose+json")  # compact, JSON (RFC 7516 §9)
MAX_RECIPIENTS = 200
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_REGISTRY = jwe.JWERegistry(algorithms=[ALG, ENC], verify_all_recipients=False,
                            max_recipients=MAX_RECIPIENTS)


class SealError(ValueError):
    """Not a JWE this platform accepts, or one the key given cannot open (tampered or not
    addressed to it): the message never says which bytes were wrong."""


def key_id(jwk: Mapping[str, Any]) -> str:
    """The id a sealed payload names a public key by: its `kid`, else its RFC 7638 thumbprint."""
    kid = jwk.get("kid")
    return kid if isinstance(kid, str) and kid else ECKey.import_key(dict(jwk)).thumbprint()


def is_sealing_key(jwk: Mapping[str, Any]) -> bool:
    """Whether a public JWK can receive sealed content: an EC P-256 key whose `use` (if any) is
    `enc` and whose `alg` (if any) is ECDH-ES or one of its key-wrapping variants."""
    return (jwk.get("kty") == "EC" and jwk.get("crv") == "P-256"
            and jwk.get("use", "enc") == "enc" and str(jwk.get("alg", "ECDH-ES")).startswith("ECDH-ES"))


def public_key(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """`jwk` as a public EC P-256 sealing key with its `kid` (SealError if it is not one)."""
    if not is_sealing_key(jwk):
        raise SealError("a sealing key is an EC P-256 JWK (use enc, alg ECDH-ES*)")
    try:
        key = ECKey.import_key(dict(jwk))
    except (JoseError, ValueError, TypeError) as error:
        raise SealError("not a valid EC P-256 public key") from error
    public = key.as_dict(private=False)
    public.update(kid=key_id(jwk), use="enc")
    return public


def seal(plaintext: bytes | str, recipient_jwks: Iterable[Mapping[str, Any]] | Mapping[str, Any],
         *, compact: bool = False) -> str:
    """A JWE of `plaintext` that each public key of `recipient_jwks` (a JWK Set or a list of
    JWKs) opens: the General JSON Serialization, or the Compact one when `compact` (one key)."""
    keys = recipient_jwks.get("keys", []) if isinstance(recipient_jwks, Mapping) else recipient_jwks
    publics = [public_key(k) for k in keys]
    if not publics or (compact and len(publics) != 1):
        raise SealError("seal to at least one key (the compact form takes exactly one)")
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    if compact:
        header = {"alg": ALG, "enc": ENC, "kid": publics[0]["kid"]}
        return jwe.encrypt_compact(header, data, ECKey.import_key(publics[0]), registry=_REGISTRY)
    message = jwe.GeneralJSONEncryption({"enc": ENC}, data)
    for public in publics:
        message.add_recipient({"alg": ALG, "kid": public["kid"]}, ECKey.import_key(public))
    return orjson.dumps(jwe.encrypt_json(message, None, registry=_REGISTRY)).decode()


def open_sealed(sealed: str | bytes, private_jwk: Mapping[str, Any]) -> bytes:
    """The plaintext of `sealed` (either serialization), opened with one recipient's private
    key; SealError if that key is not among its recipients or anything was altered."""
    try:
        key = ECKey.import_key(dict(private_jwk))
    except (JoseError, ValueError, TypeError) as error:
        raise SealError("not an EC private key") from error
    kid = key_id(private_jwk)
    text = sealed.decode() if isinstance(sealed, bytes) else sealed
    try:
        if text.lstrip().startswith("{"):
            general = _general(text)
            mine = [r for r in general["recipients"] if _kid(general, r) == kid]
            if not mine:
                raise SealError("this key is not a recipient of the sealed content")
            one = cast(jwe.GeneralJSONSerialization, {**general, "recipients": mine[:1]})
            return jwe.decrypt_json(one, key, registry=_REGISTRY).plaintext or b""
        return jwe.decrypt_compact(text, key, registry=_REGISTRY).plaintext or b""
    except (JoseError, ValueError, TypeError, KeyError) as error:
        if isinstance(error, SealError):
            raise
        raise SealError("the sealed content cannot be opened with this key") from error


open = open_sealed  # noqa: A001  the name the issue gives; open_sealed avoids the builtin


def recipient_kids(sealed: str | bytes) -> list[str]:
    """The key ids a JWE is encrypted to, after checking its form: compact or JSON, every
    recipient ECDH-ES+A256KW with an ephemeral key and a `kid`, content A256GCM, no `zip`,
    at most MAX_RECIPIENTS. SealError names what is wrong (no key is needed)."""
    try:
        text = sealed.decode() if isinstance(sealed, bytes) else sealed
        if text.lstrip().startswith("{"):
            general = _general(text)
            headers = [_headers(general, r) for r in general["recipients"]]
        else:
            headers = [_compact_header(text)]
    except (ValueError, TypeError) as error:  # orjson's and base64's errors, UnicodeDecodeError
        if isinstance(error, SealError):
            raise
        raise SealError("not a JWE in the compact or JSON serialization (RFC 7516 §7)") from error
    for header in headers:
        if header.get("alg") != ALG or header.get("enc") != ENC:
            raise SealError(f"every recipient uses alg {ALG} and enc {ENC}")
        if "zip" in header:
            raise SealError("compressed sealed content (zip) is not accepted")
        if not isinstance(header.get("epk"), dict) or not isinstance(header.get("kid"), str):
            raise SealError("every recipient names its key (kid) and carries its ephemeral key (epk)")
    return [h["kid"] for h in headers]


def _compact_header(text: str) -> dict[str, Any]:
    """The header of a compact JWE: five base64url parts, none empty (RFC 7516 §7.1)."""
    parts = text.split(".")
    if len(parts) != 5 or not all(parts):
        raise SealError("a compact JWE has five non-empty parts (header, encrypted key, IV, "
                        "ciphertext, tag)")
    decoded = [_b64(part) for part in parts]
    header = orjson.loads(decoded[0])
    if not isinstance(header, dict):
        raise SealError("a JWE header is a JSON object")
    return header


def _general(text: str) -> dict[str, Any]:
    """A JSON-serialized JWE in the general form (a flattened one gets one recipient), its
    base64url members checked (RFC 7516 §7.2)."""
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise SealError("a JSON JWE is an object")
    if "recipients" not in value:
        one = {k: value.pop(k) for k in ("header", "encrypted_key") if k in value}
        value["recipients"] = [one]
    recipients = value["recipients"]
    if not isinstance(recipients, list) or not recipients:
        raise SealError("a JSON JWE has at least one recipient")
    if len(recipients) > MAX_RECIPIENTS:
        raise SealError(f"a sealed payload has at most {MAX_RECIPIENTS} recipients")
    if not all(isinstance(r, dict) for r in recipients):
        raise SealError("a JWE recipient is an object")
    for member in ("iv", "ciphertext", "tag"):
        if not isinstance(value.get(member), str) or not _b64(value[member]):
            raise SealError(f"a JSON JWE has a non-empty base64url {member}")
    if not all(isinstance(r.get("encrypted_key"), str) and _b64(r["encrypted_key"]) for r in recipients):
        raise SealError("every recipient has its encrypted key (ECDH-ES+A256KW wraps one)")
    return value


def _headers(general: dict[str, Any], recipient: dict[str, Any]) -> dict[str, Any]:
    """A recipient's JOSE header: the protected, shared and per-recipient members together."""
    protected = orjson.loads(_b64(general["protected"])) if "protected" in general else {}
    shared, own = general.get("unprotected", {}), recipient.get("header", {})
    if not all(isinstance(h, dict) for h in (protected, shared, own)):
        raise SealError("JWE headers are JSON objects")
    return {**protected, **shared, **own}


def _kid(general: dict[str, Any], recipient: dict[str, Any]) -> Any:
    return _headers(general, recipient).get("kid")


def _b64(part: Any) -> bytes:
    """base64url without padding (RFC 7515 §2); SealError when `part` is not."""
    if not isinstance(part, str) or not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise SealError("a JWE part is not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
