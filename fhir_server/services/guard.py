"""The access checks every service applies, from the caller's principal (access/policy.py):
what the caller reaches, for reads and writes alike. The platform's own rules on what may be
written (consents, messages) are in platform_rules.py, which `require_write` applies too.

Out of reach reads answer 404, as if the resource did not exist, so a caller cannot learn
what it may not see; writes of content out of reach answer 403.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson

from .. import clock
from ..access import Decision, Interaction, Role, check_public_query, decide
from ..access import consent as consents
from ..model.errors import Kind, fail
from ..search import Chain, Has, IndexEntry, Not, Query, extract, patients_of
from ..store.base import Version
from . import platform_rules
from .context import Context


def decision(ctx: Context, interaction: Interaction, resource_type: str | None, *,
             instance: bool = False, included: bool = False) -> Decision:
    """How the caller may do `interaction` on `resource_type`; FORBIDDEN if not at all.
    `included`: for a search's `_include`/`_revinclude` results."""
    return decide(ctx.principal, ctx.registry, interaction, resource_type, instance=instance,
                  included=included)


def check_links(ctx: Context, query: Query) -> None:
    """FORBIDDEN when a chained parameter or `_has` would look into a type the caller reaches
    only in part: its matches would tell what the caller may not see."""
    if ctx.principal is not None and ctx.principal.role is Role.PUBLIC:
        check_public_query(query)
    for clause in query.clauses:
        for predicate in clause.any_of:
            for linked in _linked_types(predicate):
                if not decision(ctx, "search", linked).unrestricted:
                    raise _forbidden(f"Chained search and _has through {linked} are not "
                                     "available to this access token.")


def _linked_types(predicate: Any) -> list[str]:
    if isinstance(predicate, Chain):
        return [*predicate.target_types, *_linked_types(predicate.inner)]
    if isinstance(predicate, Has):
        return [predicate.target_type, *_linked_types(predicate.inner)]
    if isinstance(predicate, Not):
        return [t for p in predicate.any_of for t in _linked_types(p)]
    return []


def visible(d: Decision, version: Version) -> bool:
    """Whether a stored version lies within reach (a deletion only to callers not confined to
    part of its type: it names no more than its id)."""
    if d.unrestricted:
        return True
    if version.body is None:
        return not d.clauses
    return d.admits(version.resource_type, orjson.loads(version.body))


async def reachable(ctx: Context, d: Decision, current: Version) -> bool:
    """Whether a resource is within reach: its current version, or (deleted) its last content."""
    if d.unrestricted:
        return True
    if not current.deleted:
        return visible(d, current)
    previous = await ctx.store.vread(current.resource_type, current.id, current.version - 1)
    return previous is not None and visible(d, previous)


async def require_replaceable(ctx: Context, d: Decision, resource_type: str, id: str) -> None:
    """A PUT's target. A caller confined to some patients replaces only a resource within
    reach: they do not create with an id of their choosing, which would tell a taken id
    (out of reach) from a free one (NOT_FOUND for both)."""
    if d.unrestricted:
        return
    existing = await ctx.store.read(resource_type, id)
    if existing is None or existing.deleted:
        if ctx.principal is not None and ctx.principal.confined:
            raise hidden(resource_type, id)
    elif not visible(d, existing):
        raise hidden(resource_type, id)


async def deletable(ctx: Context, d: Decision, resource_type: str, id: str) -> bool:
    """Whether a DELETE goes ahead. For a confined caller, a resource out of reach is treated
    as one that does not exist: nothing is deleted and the answer is the same."""
    if d.unrestricted:
        return True
    existing = await ctx.store.read(resource_type, id)
    if existing is None or existing.deleted:
        return False
    if visible(d, existing):
        return True
    if ctx.principal is not None and ctx.principal.confined:
        return False
    raise _forbidden(f"This {resource_type} is not the access token's to delete (records the "
                     "server keeps, or outside a granular scope).")


def note(ctx: Context, version: Version | None, resource: dict[str, Any] | None = None,
         entries: Sequence[IndexEntry] | None = None) -> None:
    """Tell the request's audit trail a resource was read, returned or written (`entries`:
    its index entries, if extracted already)."""
    if ctx.trail is not None:
        ctx.trail.touched(ctx.registry, version, resource, entries)


def note_asked(ctx: Context, version: Version, resource: dict[str, Any]) -> None:
    """Note a resource a request asked for from a patient outside the caller's reach (a
    proposed Consent): that patient's audit trail records the request."""
    note(ctx, version, resource)
    if ctx.trail is not None:
        ctx.trail.asked |= patients_of(ctx.registry, version.resource_type, extract(resource))


def hidden(resource_type: str, id: str) -> Exception:
    return fail(Kind.NOT_FOUND, "not-found", f"{resource_type}/{id} is not known.",
                details_code="MSG_NO_EXIST")


def _forbidden(message: str) -> Exception:
    return fail(Kind.FORBIDDEN, "forbidden", message)


async def require_write(ctx: Context, d: Decision, resource_type: str, resource: dict[str, Any],
                        entries: Sequence[IndexEntry]) -> None:
    """FORBIDDEN unless the content written (with its index `entries`) stays within reach (a
    patient's compartment, and no reference into another patient's) and keeps the platform's
    rules (platform_rules.py)."""
    if resource_type == "Consent":
        # Before reach: a Consent naming its patient in a form the rules cannot read is
        # refused as such, not as out of reach.
        platform_rules.check_consent_subject(resource)
    if not d.admits(resource_type, resource, entries):
        if resource_type == "Patient" and ctx.principal and ctx.principal.role is Role.PRACTITIONER:
            raise _forbidden("A practitioner creates a patient record together with the "
                             "patient's agreement: a transaction Bundle holding the Patient and "
                             "the Consent naming them (see docs/referrals.md).")
        raise _forbidden(f"This {resource_type} would lie outside what the access token reaches.")
    _check_patients(ctx, resource_type, entries)
    await platform_rules.check_write(ctx, resource_type, resource)


def _check_patients(ctx: Context, resource_type: str, entries: Sequence[IndexEntry]) -> None:
    """For callers confined to some patients, every patient the resource links it to (its
    compartment references) must be one of them: lying in one reached compartment is not
    enough to write into another."""
    principal = ctx.principal
    if principal is None or principal.server:
        return
    if principal.patient is not None:
        reached: set[str] = {principal.patient}
    elif principal.consented is not None:
        reached = set(principal.consented)
    else:
        return
    if patients_of(ctx.registry, resource_type, entries) - reached:
        raise _forbidden(f"This {resource_type} refers to a patient outside what the access "
                         "token reaches.")


def with_new_records(ctx: Context, entries: list[tuple[str, dict[str, Any]]],
                     created: set[str]) -> Context:
    """The Context of a practitioner's transaction that creates patient records together
    with the Consents recording each patient's agreement naming them (`entries`: each
    Consent with the `Patient/<id>` it names, `created`: the patients the transaction
    creates): the practitioner reaches those records for the transaction."""
    principal = ctx.principal
    if principal is None or principal.fhir_user is None or not platform_rules.may_attest(principal):
        return ctx
    assert principal.consented is not None
    day = clock.instant()
    new = [patient.removeprefix("Patient/") for patient, consent in entries
           if patient in created and consents.attests_access(consent, principal.fhir_user, day)]
    if not new:
        return ctx
    return dataclasses.replace(ctx, principal=dataclasses.replace(
        principal, consented=(*principal.consented, *new)))


