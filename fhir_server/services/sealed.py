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
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

import orjson

from ..access import server_principal
from ..crypto import CONTENT_TYPES, SealError, recipient_kids
from ..model.errors import Kind, fail
from ..search import parse_query
from . import reach
from .context import Context

DOCUMENT_TYPES = ("Binary", "DocumentReference")
# What an update must keep as stored not to be checked again: the sealed content and the
# parties it is checked against.
KEPT = {"Communication": ("payload", "sender", "recipient"),
        "Binary": ("contentType", "data", "securityContext"),
        "DocumentReference": ("content", "securityContext")}
_GROUPS = ("PractitionerRole", "CareTeam", "Group", "Organization")
_UNNAMED = ("Patient", "RelatedPerson")  # members an error names only to themselves
_LOCAL = re.compile(r"(Binary|DocumentReference)/([A-Za-z0-9.-]{1,64})(?:/_history/([0-9]{1,18}))?")
# The Binary and DocumentReference resources of the transaction being written, by `Type/id`:
# a message of the same Bundle points to them before they are stored.
_IN_BUNDLE: ContextVar[Mapping[str, dict[str, Any]]] = ContextVar("sealed_in_bundle", default={})


@contextmanager
def alongside(documents: Mapping[str, dict[str, Any]]) -> Iterator[None]:
    """Let the checks see `documents` (`Type/id` -> content) written in the same transaction."""
    token = _IN_BUNDLE.set(documents)
    try:
        yield
    finally:
        _IN_BUNDLE.reset(token)


def _directory(ctx: Context) -> Context:
    """`ctx` reading as the server: group memberships and the documents a message points to
    are looked up whatever the caller reaches. (Not server_writes.as_server: that module
    imports guard, which imports this one through platform_rules.)"""
    return replace(ctx, principal=server_principal("sealed"))


def _invalid(message: str, where: str) -> Exception:
    return fail(Kind.INVALID, "invalid", message, expression=where)


def is_sealed(attachment: Any) -> bool:
    """Whether an Attachment declares sealed content (its form is checked on write)."""
    if not isinstance(attachment, dict) or not isinstance(attachment.get("contentType"), str):
        return False
    # media types compare without case and parameters (RFC 9110 §8.3.1)
    return attachment["contentType"].partition(";")[0].strip().lower() in CONTENT_TYPES


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


def _local(ctx: Context, reference: Any) -> tuple[str, str, int | None] | None:
    """(type, id, version or None) of a reference to a Binary or DocumentReference of this
    server: relative, or absolute to its base, versioned or not."""
    if not isinstance(reference, str):
        return None
    if reference.startswith(ctx.base_url + "/"):
        reference = reference[len(ctx.base_url) + 1:]
    found = _LOCAL.fullmatch(reference)
    if found is None:
        return None
    kind, id, version = found.groups()
    return kind, id, int(version) if version else None


async def _pointed(ctx: Context, part: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(type, content) of the Binary or DocumentReference a payload element points to: the
    version it names, else the one of the same transaction, else the current one."""
    local = _local(ctx, (part.get("contentReference") or {}).get("reference"))
    if local is None:
        return None
    kind, id, version = local
    if version is not None:
        stored = await ctx.store.vread(kind, id, version)
        found = orjson.loads(stored.body) if stored is not None and stored.body is not None else None
    else:
        found = _IN_BUNDLE.get().get(f"{kind}/{id}") or await reach.current(_directory(ctx), f"{kind}/{id}")
    return (kind, found) if found is not None else None


async def _messages_to(ctx: Context, resource_type: str, id: str) -> list[dict[str, Any]]:
    """The current Communications whose payload points to the current `resource_type/id`
    (a versioned reference keeps pointing to its version). No search parameter indexes
    `payload.contentReference`: every Communication is read, page by page."""
    query, _ = parse_query("Communication", [("_count", str(reach.PAGE))], ctx.registry)
    found: list[dict[str, Any]] = []
    async for message in reach.resources(_directory(ctx), query):
        for part in message.get("payload", []):
            local = _local(ctx, (part.get("contentReference") or {}).get("reference"))
            if local == (resource_type, id, None):
                found.append(message)
                break
    return found


async def check_sealed(ctx: Context, resource_type: str, resource: dict[str, Any]) -> None:
    """INVALID if `resource` carries sealed content that is malformed or not sealed to every
    party's current key; nothing to check for plaintext."""
    if resource_type == "Communication":
        await _check_message(ctx, resource)
    elif resource_type in DOCUMENT_TYPES:
        sealed = list(_sealed_in(resource_type, resource))
        if not sealed and not ctx.sealed_only:
            return
        if sealed and await _as_stored(ctx, resource_type, resource):
            return
        id = resource.get("id")  # none yet: a new resource no message points to
        messages = await _messages_to(ctx, resource_type, id) if isinstance(id, str) else []
        context = (resource.get("securityContext") or {}).get("reference", "")
        if context.startswith("Communication/") and (named := await reach.current(_directory(ctx), context)):
            messages.append(named)
        for message in messages:
            if not sealed:  # the message would carry plain content
                refuse_plain(ctx, resource_type)
            for where, kids in sealed:
                await _check_cover(ctx, message, kids, where)


async def _check_message(ctx: Context, message: dict[str, Any]) -> None:
    if await _as_stored(ctx, "Communication", message):
        return
    sealed = list(_sealed_in("Communication", message))
    for index, part in enumerate(message.get("payload", [])):
        pointed = await _pointed(ctx, part)
        if pointed is not None:
            where = f"Communication.payload[{index}].contentReference ({pointed[0]}/{pointed[1].get('id')})"
            sealed += [(f"{where}: {w}", kids) for w, kids in _sealed_in(*pointed)]
    for where, kids in sealed:
        await _check_cover(ctx, message, kids, where)


async def _as_stored(ctx: Context, resource_type: str, resource: dict[str, Any]) -> bool:
    """Whether `resource` updates a stored one keeping what its seals were checked against
    (KEPT): they were checked when written, and a key a recipient enrolled since must not
    stop its status from changing (only a recipient could seal it again)."""
    id = resource.get("id")
    stored = await reach.current(_directory(ctx), f"{resource_type}/{id}") if isinstance(id, str) else None
    return stored is not None and all(stored.get(k) == resource.get(k) for k in KEPT[resource_type])


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
            if key["kid"] not in kids:
                raise _invalid(f"{where} is not sealed to {_missing(ctx, role, party, holder, key)}: "
                               f"seal it again to the keys GET /keys/{party} lists.", where)


def _missing(ctx: Context, role: str, party: str, holder: str, key: dict[str, Any]) -> str:
    """The key an error names as missing. A patient or related person reached as a member of
    a group is named to themselves only: the caller may not be one who reads them."""
    caller = ctx.principal.fhir_user if ctx.principal is not None else None
    if holder == party:
        return f"the current key '{key['kid']}' of {role} {party}"
    if holder.partition("/")[0] in _UNNAMED and holder != caller:
        return f"the current key of a member of {role} {party}"
    return f"the current key '{key['kid']}' of {role} {holder}, member of {party}"


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


async def keys_for(ctx: Context, party: str) -> list[tuple[str, dict[str, Any]]]:
    """(holder, public key) of the current keys content addressed to `party` must be sealed
    to (a group's: its site systems' and its members'); the caller's reach of each holder is
    checked by the caller."""
    if ctx.keys is None:
        return []
    return await _keys_of(ctx, party)


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
