"""The public sealing-key registry (docs/sealed-messages.md): a user enrols the EC P-256 key
of their app; anyone signed in fetches the keys content for an identity must be sealed to.

A key set says who has an account (a patient who enrolled a key has one), so the keys of a
Patient or RelatedPerson are given only to callers who may read that resource.
"""

from __future__ import annotations

import logging
from typing import Any

from ..crypto import USER_TYPES, SealError
from ..model.errors import FhirError, Kind, fail
from . import crud, sealed
from .context import Context

log = logging.getLogger("fhir_server.sealing")
IDENTITY_TYPES = (*USER_TYPES, "PractitionerRole", "CareTeam", "Group", "Organization", "Client")
_PRIVATE_HOLDERS = ("Patient", "RelatedPerson")
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def enrol(ctx: Context, jwk: Any) -> dict[str, Any]:
    """Make `jwk` the caller's current sealing key (a user only); the key stored. INVALID for
    anything but a public EC P-256 encryption key."""
    principal = ctx.principal
    user = principal.fhir_user if principal is not None else None
    if user is None or user.partition("/")[0] not in USER_TYPES or ctx.keys is None:
        raise fail(Kind.FORBIDDEN, "forbidden", "A signed-in user (Patient, Practitioner or "
                   "RelatedPerson) enrols their own key; site systems register theirs in their "
                   "JWKS (fhir-server client add-backend --jwks).")
    if not isinstance(jwk, dict):
        raise fail(Kind.INVALID, "invalid", "The body is one JWK (RFC 7517), a JSON object.")
    if any(member in jwk for member in _PRIVATE_MEMBERS):
        raise fail(Kind.INVALID, "invalid", "Send the public key only: the private key never "
                   "leaves your app, and this one was not stored.")
    try:
        stored = ctx.keys.enrolled.enrol(user, jwk)
    except SealError as error:
        raise fail(Kind.INVALID, "invalid", f"Not a sealing key: {error}.") from error
    log.info("sealing key enrolled", extra={"fhir_user": user, "kid": stored["kid"]})
    return stored


async def own(ctx: Context) -> dict[str, Any]:
    """The caller's own current key set; FORBIDDEN for a caller who is no signed-in user."""
    identity = ctx.principal.fhir_user if ctx.principal is not None else None
    if identity is None:
        raise fail(Kind.FORBIDDEN, "forbidden", "Only a signed-in user has an enrolled key.")
    return await published(ctx, identity)


async def published(ctx: Context, identity: str) -> dict[str, Any]:
    """The JWK Set content for `identity` (Type/id) must be sealed to: a user's enrolled key,
    a site system's encryption keys, a group's members' keys."""
    kind, _, id = identity.partition("/")
    if kind not in IDENTITY_TYPES:
        raise fail(Kind.INVALID, "invalid", f"Keys are published for {', '.join(IDENTITY_TYPES)}.")
    crud.check_id(id)
    principal = ctx.principal
    if principal is None:
        raise fail(Kind.FORBIDDEN, "forbidden", "Sign in to fetch sealing keys.")
    if kind in _PRIVATE_HOLDERS and principal.fhir_user != identity:
        await crud.read(ctx, kind, id)  # NOT_FOUND unless the caller may read them
    keys = []
    for holder, key in await sealed.keys_for(ctx, identity):
        if holder == identity or await _may_read(ctx, holder):
            keys.append(key)
    return {"keys": keys}


async def _may_read(ctx: Context, holder: str) -> bool:
    """Whether a group's member's keys go to the caller: a Patient's or RelatedPerson's only
    if the caller may read them (else the group would leak who has an account)."""
    kind, _, id = holder.partition("/")
    if kind not in _PRIVATE_HOLDERS or ctx.principal is None or ctx.principal.fhir_user == holder:
        return True
    try:
        await crud.read(ctx, kind, id)
    except FhirError as error:
        if error.kind in (Kind.NOT_FOUND, Kind.FORBIDDEN, Kind.GONE):
            return False
        raise
    return True
