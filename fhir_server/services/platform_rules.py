"""The platform's rules on what may be written, beyond what the caller reaches
(services/guard.py checks reach): who records a patient's Consents and in what form, when a
practitioner's agreement is only a proposal and who confirms it, and who writes which
messages. Referrals and answers are the server's (trials/)."""

from __future__ import annotations

from typing import Any

from .. import clock
from ..access import consent as consents
from ..access import FAILURE_WINDOW, MAX_FAILURES, PRACTITIONER_ACCOUNTS, CodeCheck, Principal, Role
from ..model import platform_codes as codes
from ..model.errors import Kind, fail
from . import reach, sealed
from .context import Context

# Who receives referrals: writing to them is a referral, made by $refer alone.
INVESTIGATOR_TYPES = (*codes.RECIPIENT_TYPES, "Organization")


async def check_write(ctx: Context, resource_type: str, resource: dict[str, Any]) -> None:
    """FORBIDDEN unless `resource` keeps the platform's rules; INVALID if its sealed content
    is malformed or not sealed to every party, UNPROCESSABLE if it must be sealed and is not
    (sealed.py)."""
    if resource_type == "Consent":  # its subject's form is checked first (guard.require_write)
        await check_recorded_consent(ctx, resource)
    elif resource_type == "Communication":
        await check_message(ctx, resource)
    elif resource_type == "Group":
        await check_review(ctx, resource)
    await sealed.check_write(ctx, resource_type, resource)


def _forbidden(message: str) -> Exception:
    return fail(Kind.FORBIDDEN, "forbidden", message)


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
    day = clock.instant()
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


def _review(group: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [e for e in (group or {}).get("extension", []) if e.get("url") == codes.ELIGIBILITY_REVIEW]


async def check_review(ctx: Context, group: dict[str, Any]) -> None:
    """A drafted eligibility Group's review is the server's ($draft-criteria,
    $approve-criteria): a client keeps it as stored, but for one change: editing an approved
    Group's criteria sets it back to `draft` (its `study` kept, no `by` nor `at`), so that
    no criteria reach matching without a person's approval. UNPROCESSABLE otherwise."""
    principal = ctx.principal
    if principal is None or principal.server:
        return
    stored = await reach.current(ctx, f"Group/{group['id']}") if isinstance(group.get("id"), str) else None
    before, after = _review(stored), _review(group)
    if after == before:
        if before and stored is not None and group.get("characteristic") != stored.get("characteristic") \
                and review_parts(group).get("status") == "approved":
            raise _unprocessable("These criteria were approved: editing them sets the review back to "
                                 "draft (status 'draft', no 'by' nor 'at'), then $approve-criteria.")
        return
    old, new = review_parts(stored or {}), review_parts(group)
    if old.get("status") == "approved" and new == {"status": "draft", "study": old.get("study")}:
        return
    raise _unprocessable("The eligibility-review extension is the server's: drafts are made with "
                         "ResearchStudy/{id}/$draft-criteria and approved with Group/{id}/$approve-criteria.")


def review_parts(group: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Group's (first) review extension (`status`, `study`, `by`, `at`) by
    name; {} if none."""
    for extension in _review(group):
        return {p.get("url"): next((v for k, v in p.items() if k.startswith("value")), None)
                for p in extension.get("extension", [])}
    return {}


def _unprocessable(message: str) -> Exception:
    return fail(Kind.UNPROCESSABLE, "business-rule", message,
                expression=f"Group.extension.where(url='{codes.ELIGIBILITY_REVIEW}')")


def may_attest(principal: Principal) -> bool:
    """Referring physicians record their patients' agreements; administrators and
    investigators reach no patient by consent."""
    return principal.role is Role.PRACTITIONER


async def check_message(ctx: Context, message: dict[str, Any]) -> None:
    """Referrals and answers are the server's to write; nobody else writes a message from or
    to a PractitionerRole, CareTeam, Group or Organization (investigators read the messages
    sent from or to their identities: a patient's data reach them through $refer alone); a
    user sends in their own name; a patient writes to their referring physicians only, and so
    does a relative writing for them, naming themselves as the sender."""
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
    relative = principal.role is Role.RELATIVE and principal.patient is not None
    if relative and sender != principal.fhir_user:
        raise _forbidden("A relative writes in their own name: Communication.sender is their "
                         "RelatedPerson.")
    if for_patient or relative:
        assert principal.patient is not None
        physicians = await reach.physicians_of(ctx, principal.patient)
        if not recipients or any(r not in physicians for r in recipients):
            raise _forbidden("A patient writes only to their referring physicians (the "
                             "practitioners their consent names).")


def unreached_patient(ctx: Context, resource_type: str, resource: Any) -> str | None:
    """The patient id of a practitioner's patient-privacy Consent for a record outside their
    reach, which is only a proposal (trials/proposal.py); None for any other create."""
    principal = ctx.principal
    if (resource_type != "Consent" or not isinstance(resource, dict) or principal is None
            or not may_attest(principal) or not consents.has_scope(resource, consents.PRIVACY)):
        return None
    check_consent_subject(resource)
    patient = resource["patient"]["reference"].removeprefix("Patient/")
    assert principal.consented is not None
    return None if patient in principal.consented else patient


def check_proposal_scope(consent: dict[str, Any]) -> None:
    """A proposal asks for the physician's access and nothing more: the notice says exactly
    that, so a patient confirming it agrees to nothing they were not told."""
    codings = (consent.get("scope") or {}).get("coding", [])
    if [(c.get("system"), c.get("code")) for c in codings] != [(consents.SCOPE_SYSTEM, consents.PRIVACY)]:
        raise fail(Kind.UNPROCESSABLE, "business-rule",
                   "A proposal for a record outside your reach asks for your access only: "
                   f"Consent.scope is the one coding {consents.SCOPE_SYSTEM}#{consents.PRIVACY}. "
                   "Propose other agreements (research) once the patient has confirmed it.",
                   expression="Consent.scope")


def may_confirm(ctx: Context, consent: dict[str, Any]) -> bool:
    """Whether the caller may confirm a proposed Consent with its code: the practitioner it
    names, or the patient (or representative) it is about."""
    principal = ctx.principal
    if principal is None:
        return False
    patient = consents.local((consent.get("patient") or {}).get("reference", ""))
    if (principal.fhir_user is not None and may_attest(principal)
            and principal.fhir_user in consents.actors(consent.get("provision") or {})):
        return True
    return principal.speaks_for_patient and patient == f"Patient/{principal.patient}"


_REFUSED = {
    CodeCheck.WRONG: "The code does not match",
    CodeCheck.EXPIRED: "The code has expired",
    CodeCheck.EXHAUSTED: "Too many wrong codes",
    CodeCheck.NONE: "No code is waiting for this Consent",
}


def check_code(ctx: Context, consent_id: str, code: str) -> None:
    """FORBIDDEN unless `code` is the one-time code the patient received for the proposed
    Consent/`consent_id` (each try counts, against the Consent and the caller; a right one is
    spent)."""
    assert ctx.codes is not None and ctx.principal is not None
    checked = ctx.codes.check(f"Consent/{consent_id}", code, asker(ctx.principal))
    if checked is CodeCheck.THROTTLED:
        hours = round(FAILURE_WINDOW / 3600)
        raise fail(Kind.FORBIDDEN, "throttled", f"Too many wrong codes: you gave "
                   f"{MAX_FAILURES} in the last {hours} hours, for any Consent. Try "
                   "again later, or ask the patient to accept the request in their portal.")
    if checked is not CodeCheck.CONFIRMED:
        again = ("." if checked is CodeCheck.WRONG else ": propose the agreement again for a new "
                 "code, or ask the patient to accept it in their portal.")
        raise _forbidden(_REFUSED[checked] + again)


def asker(principal: Principal) -> str:
    """Whom proposals and wrong codes are counted against: the user, else the token's subject."""
    return principal.fhir_user or f"{principal.client_id}:{principal.subject}"
