"""Instance interactions: create, read, vread, update, patch, delete and their conditional forms.

FHIR R4 http.html#create, #read, #vread, #update, #patch, #delete, #cond-update, #cdelete.
Every write is validated, indexed once, and handed to the store as data; the store stamps
version and time inside its unit of work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import Any

import jsonpatch

from ..access.policy import Decision
from ..crypto import UnreadableBody
from ..model import jsonbody
from ..model.errors import FhirError, Issue, Kind, fail
from ..model.ids import new_id
from ..model.numbers import whole_number
from ..model.types import is_resource_type, is_valid_id
from ..search import extract
from ..store.base import (
    ConditionalCreate,
    ConditionalDelete,
    ConditionalUpdate,
    Delete,
    Method,
    Operation,
    Result,
    Version,
    Write,
)
from .conditions import condition
from .context import Context, Payload, after_commit
from .guard import (
    decision,
    deletable,
    hidden,
    note,
    reachable,
    require_replaceable,
    require_write,
)


async def _commit(ctx: Context, operation: Operation) -> Result:
    """Apply one operation in its own unit of work; the audit trail notes what it wrote."""
    [result] = await ctx.store.commit([operation])
    for version in result.versions:
        note(ctx, version)
    await after_commit(ctx, result.versions)
    return result


def check_type(resource_type: str) -> None:
    """Raise NOT_FOUND for a type this server does not know (R4 only)."""
    if not is_resource_type(resource_type):
        raise fail(
            Kind.NOT_FOUND,
            "not-supported",
            f"Unknown resource type '{resource_type}' (this server implements FHIR R4 4.0.1).",
            details_code="MSG_UNKNOWN_TYPE",
        )


def check_id(id: str) -> None:
    """Raise INVALID for a malformed logical id."""
    if not is_valid_id(id):
        raise fail(
            Kind.INVALID,
            "value",
            "Invalid resource id: ids are 1-64 characters of A-Z, a-z, 0-9, '-' and '.', "
            "and not '.' or '..'.",
            details_code="MSG_ID_INVALID",
        )


def check_resource(ctx: Context, resource_type: str, payload: Payload) -> None:
    """Validate a resource sent for `resource_type` (INVALID / UNPROCESSABLE)."""
    found = resource_issues(ctx, resource_type, payload.checked, depth=payload.depth)
    if any(issue.severity in ("error", "fatal") for issue in found):
        raise FhirError(Kind.UNPROCESSABLE, tuple(found))


def resource_issues(
    ctx: Context, resource_type: str, resource: Any, profiles: Sequence[str] = (), depth: int | None = None
) -> list[Issue]:
    """Every issue of a resource sent for `resource_type`, with the profiles it claims,
    `profiles`, and those a client's writes of that type require (`Context.write_profiles`):
    what a write refuses with 422 and `$validate` lists (INVALID when it is no resource of
    that type). `depth`: the resource's levels of objects and arrays, if counted already."""
    if not isinstance(resource, dict):
        raise fail(Kind.INVALID, "structure", "The body must be a JSON object (a FHIR resource).")
    sent_type = resource.get("resourceType")
    if sent_type != resource_type:
        raise fail(
            Kind.INVALID,
            "invalid",
            f"The resourceType is '{sent_type}' but the request is for '{resource_type}'.",
            expression="resourceType",
            details_code="MSG_RESOURCE_TYPE_MISMATCH",
        )
    principal = ctx.principal
    # The server's own writes (its workflows' records) are not a client's: no rule applies.
    required = (() if principal is not None and principal.server else
                ctx.write_profiles.for_write(resource_type, principal.client_id if principal else None))
    return ctx.validator.outcome(resource, (*profiles, *required), depth)


def check_body_id(resource_type: str, id: str, payload: Payload) -> None:
    """INVALID unless the resource sent to update `id` carries that id (http.html#update)."""
    body_id = payload.checked.get("id") if isinstance(payload.checked, dict) else None
    if body_id is None:
        raise fail(
            Kind.INVALID,
            "required",
            "The resource must carry its id to be updated.",
            expression=f"{resource_type}.id",
            details_code="MSG_RESOURCE_ID_MISSING",
        )
    if body_id != id:
        raise fail(
            Kind.INVALID,
            "invalid",
            f"The id in the body ('{body_id}') differs from the id in the URL ('{id}').",
            expression=f"{resource_type}.id",
            details_code="MSG_RESOURCE_ID_MISMATCH",
        )


async def taken_by_workflow(ctx: Context, resource_type: str, payload: Payload) -> Version | None:
    """What a workflow stored in place of a plain create (`Context.creators`: an
    investigator's answer to a referral), or None when none takes the resource."""
    for creator in ctx.creators:
        taken = await creator(ctx, resource_type, payload)
        if taken is not None:
            return taken
    return None


async def resource_write(
    ctx: Context, method: Method, resource_type: str, id: str, payload: Payload, *,
    if_match: int | None = None, create_only: bool = False, replacing: bool = False,
    validated: bool = False,
) -> Write:
    """The store write of a resource sent to create (POST) or update (PUT) `id`: the one
    builder of REST interactions and Bundle entries.

    Validates the resource (unless `validated`: a transaction validates its entries before
    it takes the write lock), extracts its index entries once, and checks that the caller
    may write it; `replacing` (the client chose the id) also that the id is in reach.
    """
    allowed = decision(ctx, "create" if method == "POST" else "update", resource_type)
    if not validated:
        check_resource(ctx, resource_type, payload)
    entries = extract(payload.checked)
    await require_write(ctx, allowed, resource_type, payload.checked, entries)
    if replacing:
        await require_replaceable(ctx, allowed, resource_type, id)
    return Write(resource_type, id, payload.exact, entries, method, if_match=if_match,
                 create_only=create_only)


def _assign_id(payload: Payload, id: str) -> None:
    payload.checked["id"] = id
    payload.exact["id"] = id


async def create(
    ctx: Context, resource_type: str, payload: Payload, *, if_none_exist: str | None = None
) -> Result:
    """Create with a server-assigned id (an id in the body is ignored, as the spec says).

    With `if_none_exist` (a query string), return the one match instead, or fail with
    PRECONDITION_FAILED if several match.
    """
    check_type(resource_type)
    taken = await taken_by_workflow(ctx, resource_type, payload)
    if taken is not None:
        return Result("created", (taken,))
    id = new_id()
    _assign_id(payload, id)
    write = await resource_write(ctx, "POST", resource_type, id, payload, create_only=True)
    if if_none_exist is None:
        return await _commit(ctx, write)
    query = decision(ctx, "create", resource_type).confine(condition(ctx, resource_type, if_none_exist))
    return await _commit(ctx, ConditionalCreate(query, write))


async def read(ctx: Context, resource_type: str, id: str) -> Version:
    """The current version; NOT_FOUND if it never existed (or is out of the caller's reach),
    GONE if deleted."""
    check_type(resource_type)
    check_id(id)
    version = await _current(ctx, decision(ctx, "read", resource_type), resource_type, id)
    note(ctx, version)
    return version


async def _current(ctx: Context, allowed: Decision, resource_type: str, id: str) -> Version:
    """The current version within the caller's reach: NOT_FOUND if none, GONE if deleted (a
    deletion only if what it deleted was within reach: else it would tell what existed)."""
    version = await _unshredded(ctx.store.read(resource_type, id))
    if version is None or not await reachable(ctx, allowed, version):
        raise hidden(resource_type, id)
    if version.deleted:
        raise fail(
            Kind.GONE, "deleted", f"{resource_type}/{id} has been deleted.", details_code="MSG_DELETED"
        )
    return version


async def _unshredded(reading: Awaitable[Version | None]) -> Version | None:
    """What `reading` reads; None for a version an erasure shredded (its data key destroyed):
    it no longer exists, as if the erasure had removed it (store/bodies.py)."""
    try:
        return await reading
    except UnreadableBody as error:
        if error.destroyed:
            return None
        raise


async def vread(ctx: Context, resource_type: str, id: str, version_id: str) -> Version:
    """One version; NOT_FOUND if it does not exist, GONE if that version is a deletion."""
    check_type(resource_type)
    check_id(id)
    number = whole_number(version_id)
    if number is None:
        raise fail(Kind.NOT_FOUND, "not-found", f"Version '{version_id}' does not exist.",
                   details_code="MSG_VERSION_NOT_FOUND")
    allowed = decision(ctx, "vread", resource_type)
    version = await _unshredded(ctx.store.vread(resource_type, id, number))
    if version is not None and not allowed.unrestricted:
        # Within reach as history is: the resource as it is now (or was when deleted), and
        # this version too.
        current = await _unshredded(ctx.store.read(resource_type, id))
        if (current is None or not await reachable(ctx, allowed, current)
                or not await reachable(ctx, allowed, version)):
            version = None
    if version is None:
        raise fail(
            Kind.NOT_FOUND,
            "not-found",
            f"{resource_type}/{id} has no version {version_id}.",
            details_code="MSG_NO_EXIST",
        )
    if version.deleted:
        raise fail(Kind.GONE, "deleted", f"Version {version_id} of {resource_type}/{id} is a deletion.",
                   details_code="MSG_DELETED")
    note(ctx, version)
    return version


async def update(
    ctx: Context, resource_type: str, id: str, payload: Payload, *, if_match: int | None = None
) -> Result:
    """Update, or create with the client's id when it does not exist (update-as-create)."""
    check_type(resource_type)
    check_id(id)
    check_body_id(resource_type, id, payload)
    write = await resource_write(ctx, "PUT", resource_type, id, payload, if_match=if_match,
                                 replacing=True)
    return await _commit(ctx, write)


async def conditional_update(
    ctx: Context, resource_type: str, criteria: str, payload: Payload, *, if_match: int | None = None
) -> Result:
    """PUT /Type?criteria: update the one match, create if none, 412 if several."""
    check_type(resource_type)
    allowed = decision(ctx, "update", resource_type)
    query = allowed.confine(condition(ctx, resource_type, criteria))
    body_id = payload.checked.get("id") if isinstance(payload.checked, dict) else None
    if body_id is not None:
        check_id(str(body_id))
    id = str(body_id) if body_id is not None else new_id()
    _assign_id(payload, id)
    # Without a match the store writes the id the body names: it must be one in reach.
    write = await resource_write(ctx, "PUT", resource_type, id, payload, if_match=if_match,
                                 replacing=body_id is not None)
    op = ConditionalUpdate(query, write, id_given=body_id is not None)
    return await _commit(ctx, op)


def apply_patch(current: Version, operations: Any) -> Payload:
    """The result of a JSON Patch on a stored version (INVALID / UNPROCESSABLE if it fails)."""
    assert current.body is not None
    document = jsonbody.load_decimal(current.body)
    try:
        patch = jsonpatch.JsonPatch(operations)
        patched = patch.apply(document)
    except (jsonpatch.InvalidJsonPatch, TypeError, AttributeError) as exc:
        raise fail(Kind.INVALID, "invalid", f"Invalid JSON Patch document: {exc}.") from None
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed) as exc:
        raise fail(Kind.UNPROCESSABLE, "processing", f"The patch cannot be applied: {exc}.") from None
    except jsonpatch.JsonPointerException as exc:
        raise fail(Kind.UNPROCESSABLE, "processing", f"The patch cannot be applied: {exc}.") from None
    if not isinstance(patched, dict):
        raise fail(Kind.UNPROCESSABLE, "processing", "The patch must leave a resource (a JSON object).")
    if jsonbody.nesting(patched, jsonbody.MAX_DEPTH) > jsonbody.MAX_DEPTH:
        raise fail(Kind.UNPROCESSABLE, "too-costly", "The patched resource would nest objects and "
                   f"arrays more than {jsonbody.MAX_DEPTH} levels deep.")
    exact = jsonbody.from_decimal(patched)
    checked = jsonbody.parse_for_checks(jsonbody.dump(exact))
    return Payload(checked, exact)


async def patch_write(
    ctx: Context, resource_type: str, id: str, operations: Any, *, if_match: int | None = None
) -> Write:
    """The write that applies a JSON Patch (RFC 6902) to the current version, validated.

    PRECONDITION_FAILED first if `if_match` is not the current version.
    """
    check_type(resource_type)
    check_id(id)
    allowed = decision(ctx, "patch", resource_type)
    current = await _current(ctx, allowed, resource_type, id)
    _check_version(resource_type, id, if_match, current.version)
    payload = apply_patch(current, operations)
    if payload.checked.get("id") != id or payload.checked.get("resourceType") != resource_type:
        raise fail(
            Kind.UNPROCESSABLE,
            "invariant",
            "A patch may not change the resource's type or id.",
            expression=f"{resource_type}.id",
        )
    check_resource(ctx, resource_type, payload)
    entries = extract(payload.checked)
    await require_write(ctx, allowed, resource_type, payload.checked, entries)
    # Pin the version we patched, so a concurrent write makes this one fail with 412
    # instead of being lost.
    return Write(resource_type, id, payload.exact, entries, "PATCH", if_match=current.version)


def _check_version(resource_type: str, id: str, expected: int | None, current: int) -> None:
    if expected is not None and expected != current:
        raise fail(
            Kind.PRECONDITION_FAILED,
            "conflict",
            f"Version {expected} of {resource_type}/{id} is not the current version.",
            details_code="MSG_VERSION_AWARE_CONFLICT",
        )


async def patch(
    ctx: Context, resource_type: str, id: str, operations: Any, *, if_match: int | None = None
) -> Result:
    """PATCH with JSON Patch (http.html#patch)."""
    write = await patch_write(ctx, resource_type, id, operations, if_match=if_match)
    return await _commit(ctx, write)


async def conditional_patch(
    ctx: Context, resource_type: str, criteria: str, operations: Any, *, if_match: int | None = None
) -> Result:
    """PATCH /Type?criteria: patch the one match; NOT_FOUND if none, 412 if several."""
    check_type(resource_type)
    query = decision(ctx, "patch", resource_type).confine(condition(ctx, resource_type, criteria))
    page = await ctx.store.search(replace(query, count=2))
    if not page.matches:
        raise fail(Kind.NOT_FOUND, "not-found", f"No {resource_type} matches the criteria.",
                   details_code="MSG_NO_MATCH")
    if len(page.matches) > 1:
        raise fail(Kind.PRECONDITION_FAILED, "multiple-matches",
                   f"The criteria match more than one {resource_type}.")
    return await patch(ctx, resource_type, page.matches[0].id, operations, if_match=if_match)


async def delete(
    ctx: Context, resource_type: str, id: str, *, if_match: int | None = None
) -> Result:
    """Delete; deleting a missing or deleted resource succeeds without a new version."""
    operation = await delete_operation(ctx, resource_type, id, if_match=if_match)
    if operation is None:
        return Result("none")
    return await _commit(ctx, operation)


async def delete_operation(
    ctx: Context, resource_type: str, id: str | None, criteria: str = "", *,
    if_match: int | None = None, multiple: bool = False,
) -> Operation | None:
    """The store operation of a delete: of `id`, or of what `criteria` match when `id` is
    None (one match, or all with `multiple`). None when `id` is missing, deleted or out of
    reach: nothing to delete, and nothing tells those apart. REST and Bundle entries share it."""
    check_type(resource_type)
    allowed = decision(ctx, "delete", resource_type)
    if id is None:
        return ConditionalDelete(allowed.confine(condition(ctx, resource_type, criteria)), multiple)
    check_id(id)
    if not await deletable(ctx, allowed, resource_type, id):
        return None
    return Delete(resource_type, id, if_match)


async def conditional_delete(
    ctx: Context, resource_type: str, criteria: str, *, multiple: bool
) -> Result:
    """DELETE /Type?criteria: one match, or all matches when the client allows `multiple`."""
    operation = await delete_operation(ctx, resource_type, None, criteria, multiple=multiple)
    assert operation is not None  # a conditional delete always has its operation
    return await _commit(ctx, operation)

