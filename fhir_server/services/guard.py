"""The access checks every service applies, from the caller's principal (access/policy.py),
and the platform's rules on what may be written.

Out of reach reads answer 404, as if the resource did not exist, so a caller cannot learn
what it may not see; writes of content out of reach answer 403.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson

from ..access import Interaction
from ..access import consent as consents
from ..access.policy import Decision, decide
from ..access.principal import PRACTITIONER_ACCOUNTS, Principal, Role
from ..model import platform_codes as codes
from ..model.errors import Kind, fail
from ..search import Chain, Has, IndexEntry, Not, Query, ReferenceEntry
from ..store.base import Version
from . import reach
from .context import Context

# Who receives referrals: writing to them is a referral, made by $refer alone.
INVESTIGATOR_TYPES = (*codes.RECIPIENT_TYPES, "Organization")


def decision(ctx: Context, interaction: Interaction, resource_type: str | None, *,
             instance: bool = False) -> Decision:
    """How the caller may do `interaction` on `resource_type`; FORBIDDEN if not at all."""
    return decide(ctx.principal, ctx.registry, interaction, resource_type, instance=instance)


def check_links(ctx: Context, query: Query) -> None:
    """FORBIDDEN when a chained parameter or `_has` would look into a type the caller reaches
    only in part: its matches would tell what the caller may not see."""
    for clause in query.clauses:
        for predicate in clause.any_of:
            for linked in _linked_types(predicate):
                if decision(ctx, "search", linked).clauses:
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
    """Whether a stored version lies within reach (a deletion only to unrestricted callers)."""
    if not d.clauses:
        return True
    if version.body is None:
        return False
    return d.admits(version.resource_type, orjson.loads(version.body))


async def reachable(ctx: Context, d: Decision, current: Version) -> bool:
    """Whether a resource is within reach: its current version, or (deleted) its last content."""
    if not d.clauses:
        return True
    if not current.deleted:
        return visible(d, current)
    previous = await ctx.store.vread(current.resource_type, current.id, current.version - 1)
    return previous is not None and visible(d, previous)


async def require_replaceable(ctx: Context, d: Decision, resource_type: str, id: str) -> None:
    """A PUT's target. A caller confined to some patients replaces only a resource within
    reach: they do not create with an id of their choosing, which would tell a taken id
    (out of reach) from a free one (NOT_FOUND for both)."""
    if not d.clauses:
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
    if not d.clauses:
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


def note(ctx: Context, version: Version | None, resource: dict[str, Any] | None = None) -> None:
    """Tell the request's audit trail a resource was read, returned or written."""
    if ctx.trail is not None:
        ctx.trail.touched(ctx.registry, version, resource)


def hidden(resource_type: str, id: str) -> Exception:
    return fail(Kind.NOT_FOUND, "not-found", f"{resource_type}/{id} is not known.",
                details_code="MSG_NO_EXIST")


def _forbidden(message: str) -> Exception:
    return fail(Kind.FORBIDDEN, "forbidden", message)


async def require_write(ctx: Context, d: Decision, resource_type: str, resource: dict[str, Any],
                        entries: Sequence[IndexEntry]) -> None:
    """FORBIDDEN unless the content written (with its index `entries`) stays within reach (a
    patient's compartment, and no reference into another patient's) and keeps the platform's
    rules on consents, messages and frozen records."""
    if resource_type == "Consent":
        check_consent_subject(resource)
    if not d.admits(resource_type, resource, entries):
        if resource_type == "Patient" and ctx.principal and ctx.principal.role is Role.PRACTITIONER:
            raise _forbidden("A practitioner creates a patient record together with the "
                             "patient's agreement: a transaction Bundle holding the Patient and "
                             "the Consent naming them (see docs/referrals.md).")
        raise _forbidden(f"This {resource_type} would lie outside what the access token reaches.")
    _check_patients(ctx, resource_type, entries)
    if resource_type == "Consent":
        await check_recorded_consent(ctx, resource)
    if resource_type == "Communication":
        await _check_message(ctx, resource)


def check_consent_subject(consent: dict[str, Any]) -> None:
    """A Consent names its patient as `Patient/<id>` on this server: a form the access rules
    could not match would let an objection or a withdrawal go unheeded."""
    reference = (consent.get("patient") or {}).get("reference", "")
    kind, _, id = reference.partition("/")
    if kind != "Patient" or not id or "/" in id:
        raise fail(Kind.UNPROCESSABLE, "business-rule",
                   "Consent.patient must reference the patient as Patient/<id> (no version, no "
                   "absolute URL), so that the server can apply the consent.",
                   expression="Consent.patient")


async def check_recorded_consent(ctx: Context, consent: dict[str, Any]) -> None:
    """A practitioner records a patient's agreement, with its evidence (source[x]): to the
    platform holding the record with them as the one actor (patient-privacy), or to sharing
    with investigators (research). For a record they do not reach yet, the agreement is only
    proposed (trials/proposal.py) until the patient confirms it. Refusals, withdrawals and renewals are the patient's (or
    their representative's): a practitioner records neither a deny nor an agreement that
    lapsed (for privacy: one naming them)."""
    principal = ctx.principal
    if principal is None or principal.role not in PRACTITIONER_ACCOUNTS:
        return
    privacy = consents.has_scope(consent, consents.PRIVACY)
    if not privacy and not consents.has_scope(consent, consents.RESEARCH):
        raise _forbidden("A practitioner records patient-privacy and research Consents only.")
    if "sourceAttachment" not in consent and "sourceReference" not in consent:
        raise _forbidden("A practitioner records a patient's agreement with its evidence "
                         "(Consent.sourceAttachment or sourceReference).")
    every = list(consents.provisions(consent.get("provision") or {}))
    if (consent.get("status") not in ("active", "proposed") or every[0].get("type") != "permit"
            or any(p.get("type") == "deny" for p in every)):
        raise _forbidden("A practitioner records an agreement (status active or proposed, a "
                         "permit without deny); refusals and withdrawals are the patient's to "
                         "record.")
    if privacy and {a for p in every for a in consents.actors(p)} != {principal.fhir_user}:
        raise _forbidden("A practitioner records the patient's agreement to their own access "
                         "only: the Consent names them as its one actor.")
    scope = consents.PRIVACY if privacy else consents.RESEARCH
    actor = principal.fhir_user if privacy else None
    day = reach.today()
    earlier = await reach.find(ctx, "Consent", [("patient", consent["patient"]["reference"])])
    # A privacy deny naming the practitioner needs no check here (it wins at every request),
    # and reading it would tell a practitioner out of reach that the patient exists.
    lapsed = not privacy and consents.refused(earlier, scope, None, day)
    for one in earlier:
        if lapsed:
            break
        lapsed = consents.lapsed(await reach.versions(ctx, "Consent", one["id"]), scope, actor, day)
    if lapsed:
        raise _forbidden("This agreement was withdrawn, refused or has ended: only the patient "
                         "(or their representative) can give it again.")


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
    codes_ = ctx.registry.patient_compartment(resource_type)
    for entry in entries:
        if (type(entry) is ReferenceEntry and entry.param in codes_ and entry.type == "Patient"
                and entry.url is None and entry.id not in reached):
            raise _forbidden(f"This {resource_type} refers to a patient outside what the access "
                             "token reaches.")


def with_new_records(ctx: Context, entries: list[tuple[str, dict[str, Any]]],
                     created: set[str]) -> Context:
    """The Context of a practitioner's transaction that creates patient records together
    with the Consents recording each patient's agreement naming them (`entries`: each
    Consent with the `Patient/<id>` it names, `created`: the patients the transaction
    creates): the practitioner reaches those records for the transaction."""
    principal = ctx.principal
    if principal is None or principal.fhir_user is None or not may_attest(principal):
        return ctx
    assert principal.consented is not None
    day = reach.today()
    new = [patient.removeprefix("Patient/") for patient, consent in entries
           if patient in created and consents.attests_access(consent, principal.fhir_user, day)]
    if not new:
        return ctx
    return dataclasses.replace(ctx, principal=dataclasses.replace(
        principal, consented=(*principal.consented, *new)))


def may_attest(principal: Principal) -> bool:
    """Referring physicians record their patients' agreements; administrators and
    investigators reach no patient by consent."""
    return principal.role is Role.PRACTITIONER


async def _check_message(ctx: Context, message: dict[str, Any]) -> None:
    """Referrals and answers are the server's to write; nobody else writes a message from or
    to a PractitionerRole, CareTeam, Group or Organization (investigators read the messages
    sent from or to their identities: a patient's data reach them through $refer alone); a
    user sends in their own name; a patient writes to their referring physicians only."""
    principal = ctx.principal
    if principal is None or principal.server:
        return
    kinds = set(codes.codes_of(message.get("category", []), codes.MESSAGE_SYSTEM))
    if kinds & codes.SERVER_MADE:
        raise _forbidden("Referrals are sent with ResearchStudy/{id}/$refer and answered with "
                         "POST Communication by their recipients; they are not written directly.")
    recipients = [consents.local(r.get("reference", "")) for r in message.get("recipient", [])]
    sender = consents.local((message.get("sender") or {}).get("reference", ""))
    if principal.confined and any(r.split("/", 1)[0] in INVESTIGATOR_TYPES for r in (*recipients, sender)):
        raise _forbidden("A patient's data reach trial investigators only through a referral "
                         "(ResearchStudy/{id}/$refer).")
    for_patient = principal.speaks_for_patient and principal.patient is not None
    own = ({principal.fhir_user} if principal.fhir_user else set()) | (
        {f"Patient/{principal.patient}"} if for_patient else set())
    if own and sender:
        if sender not in own:
            raise _forbidden("A message is sent in the caller's own name (Communication.sender).")
    if for_patient:
        assert principal.patient is not None
        physicians = await reach.physicians_of(ctx, principal.patient)
        if not recipients or any(r not in physicians for r in recipients):
            raise _forbidden("A patient writes only to their referring physicians (the "
                             "practitioners their consent names).")
