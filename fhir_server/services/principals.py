"""The one place that decides who the caller is: a Principal with its role, built once per
request from the token's claims and what the store says the user reaches today (reach.py),
so that a withdrawn consent or an ended membership or representation takes effect at once
(docs/referrals.md, "Actors and what they reach")."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..access import Claims, Principal, Role, parse_scopes
from ..model.errors import FhirError, Kind, fail
from ..model.french_ids import RPPS_SYSTEM
from ..search import parse_query
from . import reach, relatives, server_writes
from .context import Context

MAX_REASON = 500  # characters of a break-glass reason


async def principal_of(ctx: Context, claims: Claims) -> Principal:
    """The Principal of verified `claims`; FORBIDDEN or INVALID for a break-glass reason
    given by someone other than an administrator, or of the wrong length."""
    kind, _, id = (claims.fhir_user or "").partition("/")
    if claims.unreadable_user:  # a user nobody can tell, never a backend client
        principal = _principal(claims, Role.UNKNOWN)
    elif kind == "Practitioner":
        principal = await _practitioner(ctx, claims)
    elif kind == "RelatedPerson":
        principal = await _related_person(ctx, claims)
    elif kind == "Patient":
        if claims.patient is not None and claims.patient != id:
            # A patient user speaks for themselves only: others are represented through a
            # RelatedPerson (above), checked against the store.
            raise fail(Kind.FORBIDDEN, "forbidden", "The token's patient in context is not its "
                       "user (fhirUser): a patient reaches their own record only.")
        principal = _principal(claims, Role.PATIENT, patient=claims.patient)
    elif kind:
        principal = _principal(claims, Role.UNKNOWN)
    elif claims.acts_for:
        principal = _principal(claims, Role.INVESTIGATOR, recipients=claims.acts_for,
                               snapshots=await reach.snapshots_for(ctx, recipients=claims.acts_for))
    elif claims.patient is not None and not parse_scopes(claims.scope).has_level("system"):
        # A patient-facing app without a user identity acts for the patient in context.
        principal = _principal(claims, Role.PATIENT, patient=claims.patient)
    else:
        principal = _principal(claims, Role.SYSTEM, patient=claims.patient)
    _check_break_glass(principal)
    return principal


async def system_principal(ctx: Context, subject: str, client_id: str, scope: str) -> Principal:
    """The Principal of a backend system known by other means than a token (an HL7 v2
    sender over MLLP, interop/hl7v2): what `scope`'s system/ scopes grant, nothing more."""
    return await principal_of(ctx, Claims(subject=subject, client_id=client_id, scope=scope))


async def practitioners_with_rpps(ctx: Context, rpps: str) -> list[str]:
    """Ids of the stored Practitioners with this RPPS number (two at most: one is the answer,
    two say the number is ambiguous)."""
    query, _ = parse_query("Practitioner", [("identifier", f"{RPPS_SYSTEM}|{rpps}")], ctx.registry)
    return [v.id for v in (await ctx.store.search(dataclasses.replace(query, count=2))).matches]


async def practitioner_with_rpps(ctx: Context, rpps: str, create: dict[str, Any] | None) -> str:
    """`Practitioner/<id>` of the one stored Practitioner with this RPPS number, created from
    `create` (a Practitioner without id, as the server, audited) when there is none;
    UNAUTHORIZED when there is none and `create` is None, or several."""
    matches = await practitioners_with_rpps(ctx, rpps)
    if len(matches) == 1:
        return f"Practitioner/{matches[0]}"
    if matches or create is None:  # several: which one signs in is not ours to guess
        raise fail(Kind.UNAUTHORIZED, "security", "Unknown professional.")
    # An id of the number: two first sign-ins at once create one Practitioner, the other
    # finds it taken (CONFLICT) and signs in as it.
    resource = {**create, "id": f"rpps-{rpps}"}
    try:
        await server_writes.commit(ctx, [server_writes.ServerWrite(resource)])
    except FhirError as exc:
        if exc.kind is not Kind.CONFLICT:
            raise
    return f"Practitioner/{resource['id']}"


async def _practitioner(ctx: Context, claims: Claims) -> Principal:
    """A practitioner account: an administrator, an investigator (who holds recipient
    identities), or a referring physician. Administrators and investigators never reach a
    live record, even one whose patient names them in a consent."""
    fhir_user = claims.fhir_user or ""
    if claims.admin:  # never an investigator: they would reach referrals unaudited
        return _principal(claims, Role.ADMINISTRATOR, consented=())
    recipients = await reach.recipient_identities(ctx, fhir_user)
    if recipients:
        return _principal(claims, Role.INVESTIGATOR, consented=(), recipients=recipients,
                          snapshots=await reach.snapshots_for(ctx, recipients=recipients))
    consented = tuple(await reach.consenting_patients(ctx, fhir_user))
    # The launch patient counts only while their consent names the practitioner.
    patient = claims.patient if claims.patient in consented else None
    return _principal(claims, Role.PRACTITIONER, patient=patient, consented=consented,
                      snapshots=await reach.snapshots_for(ctx, sender=fhir_user, patients=consented))


async def _related_person(ctx: Context, claims: Claims) -> Principal:
    """A legal representative of the patient in context; else a relative that patient
    delegated some access to (services/relatives.py); else, no longer either, one reaching
    nothing."""
    fhir_user = claims.fhir_user or ""
    if claims.patient is not None and claims.patient in await reach.represented(ctx, fhir_user):
        return _principal(claims, Role.REPRESENTATIVE, patient=claims.patient)
    granted = (await relatives.delegation_of(ctx, fhir_user, claims.patient)
               if claims.patient is not None else None)
    if granted is not None:
        return dataclasses.replace(_principal(claims, Role.RELATIVE, patient=claims.patient),
                                   delegation=granted)
    return _principal(claims, Role.REPRESENTATIVE)


def _principal(claims: Claims, role: Role, *, patient: str | None = None,
               consented: tuple[str, ...] | None = None, recipients: tuple[str, ...] | None = None,
               snapshots: tuple[str, ...] = ()) -> Principal:
    return Principal(role, subject=claims.subject, client_id=claims.client_id,
                     grant=parse_scopes(claims.scope), patient=patient, fhir_user=claims.fhir_user,
                     token_id=claims.token_id, consented=consented, recipients=recipients,
                     snapshots=snapshots,
                     break_glass=claims.break_glass.strip() if claims.break_glass is not None else None)


def _check_break_glass(principal: Principal) -> None:
    """Only an administrator breaks the glass, and says why in 1 to MAX_REASON characters."""
    if principal.break_glass is None:
        return
    if not principal.admin:
        raise fail(Kind.FORBIDDEN, "forbidden", "Only a platform administrator may break the glass.")
    if not principal.break_glass or len(principal.break_glass) > MAX_REASON:
        raise fail(Kind.INVALID, "required",
                   f"Breaking the glass needs a reason of 1 to {MAX_REASON} characters.")
