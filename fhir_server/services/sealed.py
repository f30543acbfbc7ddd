"""The write check of sealed content (docs/sealed-messages.md): a Communication's payload, or a
Binary or DocumentReference it points to, carried as a JWE (`application/jose` compact,
`application/jose+json` JSON serialization, base64 in `Attachment.data` / `Binary.data`).

The server cannot open it and never tries: it checks the JWE's form, and that its recipients
(the `kid` of each) cover the current sealing key of the sender and of every recipient. A
PractitionerRole, CareTeam, Group or Organization recipient means the site systems acting for
it and its members (one level: a PractitionerRole member means its practitioner). Anything
else is refused (400) before anything is stored, naming the key and the recipient missing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..access import server_principal
from ..crypto import CONTENT_TYPES, SealError, recipient_kids
from ..model.errors import Kind, fail
from . import reach
from .context import Context

DOCUMENT_TYPES = ("Binary", "DocumentReference")
_GROUPS = ("PractitionerRole", "CareTeam", "Group", "Organization")


def _directory(ctx: Context) -> Context:
    """`ctx` reading as the server: group memberships and the documents a message points to
    are looked up whatever the caller reaches. (Not server_writes.as_server: that module
    imports guard, which imports this one through platform_rules.)"""
    return replace(ctx, principal=server_principal("sealed"))


def _invalid(message: str, where: str) -> Exception:
    return fail(Kind.INVALID, "invalid", message, expression=where)


def is_sealed(attachment: Any) -> bool:
    """Whether an Attachment declares sealed content (its form is checked on write)."""
    return isinstance(attachment, dict) and attachment.get("contentType") in CONTENT_TYPES


async def check_write(ctx: Context, resource_type: str, resource: dict[str, Any]) -> None:
    """A client's write: `check_sealed`, and, when the server takes sealed messages only
    (settings.sealed_messages_only), UNPROCESSABLE for a Communication with a plain payload."""
    await check_sealed(ctx, resource_type, resource)
    if ctx.sealed_only and resource_type == "Communication":
        for index, part in enumerate(resource.get("payload", [])):
            if not await _sealed_part(ctx, part):
                refuse_plain(ctx, f"Communication.payload[{index}]")


def refuse_plain(ctx: Context, where: str) -> None:
    """UNPROCESSABLE when the server takes sealed messages only: `where` is not sealed."""
    if ctx.sealed_only:
        raise fail(Kind.UNPROCESSABLE, "business-rule",
                   f"This server takes sealed messages only: {where} is plain. Seal it to the "
                   "keys of the sender and of every recipient (docs/sealed-messages.md).",
                   expression=where)


async def _sealed_part(ctx: Context, part: dict[str, Any]) -> bool:
    """Whether a payload element is sealed: an attachment, or a Binary or DocumentReference
    whose content is all sealed."""
    if "contentAttachment" in part:
        return is_sealed(part["contentAttachment"])
    pointed = await _pointed(ctx, part)
    attachments = [a for _, a in _attachments(*pointed)] if pointed is not None else []
    return bool(attachments) and all(is_sealed(a) for a in attachments)


async def _pointed(ctx: Context, part: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(type, current content) of the Binary or DocumentReference a payload element points to."""
    reference = (part.get("contentReference") or {}).get("reference", "")
    kind = reference.partition("/")[0]
    found = await reach.current(_directory(ctx), reference) if kind in DOCUMENT_TYPES else None
    return (kind, found) if found is not None else None


async def check_sealed(ctx: Context, resource_type: str, resource: dict[str, Any]) -> None:
    """INVALID if `resource` carries sealed content that is malformed or not sealed to every
    party's current key; nothing to check for plaintext."""
    if resource_type == "Communication":
        await _check_message(ctx, resource)
    elif resource_type in DOCUMENT_TYPES:
        sealed = list(_sealed_in(resource_type, resource))
        context = (resource.get("securityContext") or {}).get("reference", "")
        message = await reach.current(_directory(ctx), context) if context.startswith("Communication/") else None
        for where, kids in sealed:
            if message is not None:
                await _check_cover(ctx, message, kids, where)


async def _check_message(ctx: Context, message: dict[str, Any]) -> None:
    sealed = list(_sealed_in("Communication", message))
    for index, part in enumerate(message.get("payload", [])):
        pointed = await _pointed(ctx, part)
        if pointed is not None:
            where = f"Communication.payload[{index}].contentReference ({pointed[0]}/{pointed[1].get('id')})"
            sealed += [(f"{where}: {w}", kids) for w, kids in _sealed_in(*pointed)]
    for where, kids in sealed:
        await _check_cover(ctx, message, kids, where)


def _attachments(resource_type: str, resource: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, attachment) of the content of a Communication, Binary (itself) or
    DocumentReference."""
    if resource_type == "Binary":
        return [("Binary", resource)]
    if resource_type == "DocumentReference":
        return [(f"DocumentReference.content[{i}].attachment", c.get("attachment") or {})
                for i, c in enumerate(resource.get("content", []))]
    return [(f"Communication.payload[{i}].contentAttachment", p["contentAttachment"])
            for i, p in enumerate(resource.get("payload", [])) if "contentAttachment" in p]


def _sealed_in(resource_type: str, resource: dict[str, Any]) -> Iterator[tuple[str, set[str]]]:
    """(where, recipient key ids) of each sealed attachment of `resource`; INVALID if one is
    malformed."""
    for where, attachment in _attachments(resource_type, resource):
        if not is_sealed(attachment):
            continue
        data = attachment.get("data")
        if not isinstance(data, str) or not data:
            raise _invalid(f"Sealed content ({attachment['contentType']}) is carried inline: "
                           f"{where} needs the JWE in data.", where)
        try:
            kids = recipient_kids(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError, SealError) as error:
            reason = error if isinstance(error, SealError) else "data is not base64"
            raise _invalid(f"{where} is not a sealed payload this server accepts: {reason}.",
                           where) from error
        yield where, set(kids)


async def _check_cover(ctx: Context, message: dict[str, Any], kids: set[str], where: str) -> None:
    """INVALID unless `kids` hold the current key(s) of the message's sender and recipients."""
    if ctx.keys is None:
        raise fail(Kind.NOT_SUPPORTED, "not-supported",
                   "This server has no directory of sealing keys: sealed content is not accepted.")
    for role, party in _parties(ctx, message):
        keys = await _keys_of(ctx, party)
        if not keys:
            raise _invalid(f"{where} is sealed, but {role} {party} has no sealing key to open "
                           "it (users enrol one; site systems register one in their JWKS).", where)
        for holder, key in keys:
            if (kid := key["kid"]) not in kids:
                owner = party if holder == party else f"{holder}, member of {party}"
                raise _invalid(f"{where} is not sealed to the current key '{kid}' of {role} "
                               f"{owner}: seal it again to the keys GET /keys/{party} lists.", where)


def _parties(ctx: Context, message: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """("sender" | "recipient", identity) of a message; a sender left out is the caller
    (a site system without a FHIR identity: `Client/<id>`)."""
    sender = (message.get("sender") or {}).get("reference")
    principal = ctx.principal
    if not sender and principal is not None and not principal.server:
        sender = principal.fhir_user or f"Client/{principal.client_id}"
    if sender:
        yield "sender", sender
    for recipient in message.get("recipient", []):
        if recipient.get("reference"):
            yield "recipient", recipient["reference"]


async def _keys_of(ctx: Context, party: str, depth: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """(holder, public JWK) of every current key that must open content addressed to `party`."""
    assert ctx.keys is not None
    kind, _, id = party.partition("/")
    if kind == "Client":
        return [(party, k) for k in ctx.keys.keys_of_client(id)]
    keys = [(party, k) for k in ctx.keys.keys_of(party)]
    if kind in _GROUPS and depth < 2:
        for member in await _members(ctx, party):
            keys += await _keys_of(ctx, member, depth + 1)
    first: dict[str, tuple[str, dict[str, Any]]] = {}
    for holder, key in keys:  # a key reached twice is named by its first holder
        first.setdefault(key["kid"], (holder, key))
    return list(first.values())


async def keys_for(ctx: Context, party: str) -> list[dict[str, Any]]:
    """The current public keys content addressed to `party` must be sealed to (a group's: its
    site systems' and its members'); the caller's own reach is checked by the caller."""
    if ctx.keys is None:
        return []
    return [key for _, key in await _keys_of(ctx, party)]


async def _members(ctx: Context, party: str) -> list[str]:
    """The identities a group-like recipient stands for (inactive members left out)."""
    server = _directory(ctx)
    kind = party.partition("/")[0]
    if kind == "Organization":
        roles = await reach.find(server, "PractitionerRole", [("organization", party), ("active", "true")])
        return [r["practitioner"]["reference"] for r in roles if "reference" in r.get("practitioner", {})]
    found = await reach.current(server, party)
    if found is None:
        return []
    if kind == "PractitionerRole":
        members = [found.get("practitioner") or {}]
    elif kind == "CareTeam":
        members = [p.get("member") or {} for p in found.get("participant", [])]
    else:
        members = [m.get("entity") or {} for m in found.get("member", []) if not m.get("inactive")]
    return [m["reference"] for m in members if isinstance(m.get("reference"), str)]
