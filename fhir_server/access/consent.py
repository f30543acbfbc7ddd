"""What a patient's Consents allow, evaluated on the Consent resources themselves (FHIR R4
consent.html): pure functions, so every rule can be tested on plain data.

Two kinds of agreement matter here (Consent.scope, consentscope CodeSystem):
- `patient-privacy`: the platform may hold the record, and the practitioners named as
  provision actors may read and write it (the referring physicians);
- `research`: the record may be shared with trial investigators (a referral).

A Consent counts when its status is `active` and its provision's period holds now (compared
as instants: in_period). A `deny` wins over any `permit`: a nested deny provision, or another
active Consent whose top-level provision is deny, with the actor named or with no actor at
all (then it applies to everyone: objection, restriction of processing). Withdrawal is status `inactive` (or `rejected`), or an
ended period.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..search import date_range
from ..search.references import type_and_id

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
PRIVACY = "patient-privacy"
RESEARCH = "research"


def has_scope(consent: dict[str, Any], scope: str) -> bool:
    """Whether the Consent's scope is `scope` of the consentscope CodeSystem."""
    return any(c.get("system") == SCOPE_SYSTEM and c.get("code") == scope
               for c in (consent.get("scope") or {}).get("coding", []))


def in_period(element: dict[str, Any], now: str) -> bool:
    """Whether `element.period` (absent: always) holds at `now` (a FHIR instant; a date asks
    about any time of that day). Bounds are compared as instants in their own time zone
    (none given: UTC); a partial date starts at its first instant and ends at its last
    (datatypes.html#Period). A bound that is no date holds at no time."""
    period = element.get("period") or {}
    at = date_range(now)
    if at is None:
        return False
    start, end = period.get("start"), period.get("end")
    begins = date_range(start) if isinstance(start, str) else None
    ends = date_range(end) if isinstance(end, str) else None
    if (start is not None and begins is None) or (end is not None and ends is None):
        return False
    return (begins is None or begins[0] <= at[1]) and (ends is None or at[0] <= ends[1])


def local(reference: str) -> str:
    """`Type/id` of a reference, whatever its form (relative, absolute, version-specific), so
    that a deny naming an actor in any form is heeded; as given when it names no resource."""
    return type_and_id(reference) or reference


def actors(provision: dict[str, Any]) -> set[str]:
    """The references a provision names as actors (as `Type/id`)."""
    return {local(a.get("reference", {}).get("reference", "")) for a in provision.get("actor", [])}


def _applies(provision: dict[str, Any], actor: str | None, today: str) -> bool:
    """Whether a provision holds today for `actor` (a provision naming nobody holds for all;
    `actor` None asks about everyone, so only such provisions apply)."""
    named = actors(provision)
    return in_period(provision, today) and (not named or (actor is not None and actor in named))


def provisions(provision: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A provision and all those nested in it."""
    yield provision
    for nested in provision.get("provision", []):
        yield from provisions(nested)


def _in_force(consents: Iterable[dict[str, Any]], scope: str) -> list[dict[str, Any]]:
    return [c for c in consents if c.get("status") == "active" and has_scope(c, scope)]


def denied(consents: Iterable[dict[str, Any]], scope: str, actor: str | None, today: str) -> bool:
    """Whether a deny provision in force, of an active Consent of `scope`, applies to `actor`:
    a top-level deny or a nested one."""
    return any(p.get("type") == "deny" and _applies(p, actor, today)
               for c in _in_force(consents, scope) for p in provisions(c.get("provision") or {}))


# What narrows a permit to part of the record (some types, actions, data, labels, purposes).
_NARROWING = ("class", "action", "code", "data", "dataPeriod", "securityLabel", "purpose")


def permit(consents: Iterable[dict[str, Any]], scope: str, actor: str | None,
           today: str, *, whole: bool = False) -> dict[str, Any] | None:
    """The active Consent of `scope` whose top-level permit names `actor` (None: any actor)
    today, unless a deny in force applies; None when nothing permits. `whole`: only a permit
    of the whole record counts, not one narrowed to part of it (a relative's delegation)."""
    consents = list(consents)
    if denied(consents, scope, actor, today):
        return None
    for consent in _in_force(consents, scope):
        provision = consent.get("provision") or {}
        if provision.get("type") != "permit" or not in_period(provision, today):
            continue
        if whole and any(provision.get(narrowing) for narrowing in _NARROWING):
            continue
        if actor is None or actor in actors(provision):
            return consent
    return None


def reaches(consents: Iterable[dict[str, Any]], practitioner: str, today: str) -> bool:
    """Whether a patient's Consents let `practitioner` reach their record today: a permit of
    the whole record naming them. One narrowed to some types or actions (a relative's
    delegation naming a practitioner too) opens nothing to a practitioner: access rules give
    practitioners whole compartments only."""
    consents = list(consents)
    return (permit(consents, PRIVACY, practitioner, today, whole=True) is not None
            and not denied(consents, PRIVACY, None, today))


def sharing(consents: Iterable[dict[str, Any]], today: str) -> dict[str, Any] | None:
    """The Consent in force letting a patient's record be shared with trial investigators,
    None if there is none, or if an objection or a restriction of processing applies."""
    consents = list(consents)
    if denied(consents, PRIVACY, None, today):
        return None
    return permit(consents, RESEARCH, None, today)


def refused_recipients(consents: Iterable[dict[str, Any]], recipients: Iterable[str], today: str) -> list[str]:
    """Those of `recipients` a research deny in force applies to: the patient refuses their
    record to them (a deny naming nobody, refusing everyone, is `sharing`'s concern)."""
    consents = list(consents)
    return [r for r in recipients if refused(consents, RESEARCH, r, today)]


def physicians(consents: Iterable[dict[str, Any]], today: str) -> set[str]:
    """The practitioners a patient's Consents let reach their record today (their referring
    physicians: the only ones a patient may write to)."""
    consents = list(consents)
    named = {a for c in _in_force(consents, PRIVACY) for a in actors(c.get("provision") or {})}
    return {a for a in named if a.startswith("Practitioner/") and reaches(consents, a, today)}


def attests_access(consent: dict[str, Any], practitioner: str, today: str) -> bool:
    """Whether a Consent records a patient's agreement to `practitioner` reaching their
    record: active, patient-privacy, a permit in force naming them, and its evidence
    (source[x]: the signed form or a reference to it). It opens the record only when the
    practitioner creates the record with it; for an existing record it is a proposal the
    patient confirms (trials/proposal.py)."""
    return (permit([consent], PRIVACY, practitioner, today, whole=True) is not None
            and ("sourceAttachment" in consent or "sourceReference" in consent))


def lapsed(versions: list[dict[str, Any]], scope: str, actor: str | None, today: str) -> bool:
    """Whether the versions of one Consent (newest first) record an agreement of `scope` (for
    `actor` when given: one naming them) that is no longer given: some version granted it,
    and the current one is not a permit in force for it — made inactive, rejected or entered in
    error, ended, denying, rescoped, its actor removed, however it was changed."""
    def grants(version: dict[str, Any]) -> bool:
        provision = version.get("provision") or {}
        return (version.get("status") == "active" and has_scope(version, scope)
                and provision.get("type") == "permit" and (actor is None or actor in actors(provision)))

    if not versions or not any(grants(v) for v in versions):
        return False
    return permit(versions[:1], scope, actor, today) is None


def refused(consents: Iterable[dict[str, Any]], scope: str, actor: str | None, today: str) -> bool:
    """Whether an active Consent of `scope` refuses it: a deny in force naming `actor`, or,
    with no actor, a deny naming nobody (an objection)."""
    return any(p.get("type") == "deny" and in_period(p, today)
               and (actors(p) == set() if actor is None else actor in actors(p))
               for c in _in_force(consents, scope) for p in provisions(c.get("provision") or {}))


# A permit of a research Consent allows pre-screening for the studies its `data` references
# when its `purpose` holds this code (terminology/CodeSystem-consent-purpose.json).
PURPOSE_SYSTEM = "https://oncotrials.example.org/fhir/CodeSystem/consent-purpose"
PRESCREENING = "trial-pre-screening"


def _allows_prescreening(provision: dict[str, Any], study: str) -> bool:
    return (any(p.get("system") == PURPOSE_SYSTEM and p.get("code") == PRESCREENING
                for p in provision.get("purpose", []))
            and any(local((d.get("reference") or {}).get("reference", "")) == study
                    for d in provision.get("data", [])))


def prescreening(consents: Iterable[dict[str, Any]], study: str, today: str) -> dict[str, Any] | None:
    """The active research Consent whose permit in force explicitly allows pre-screening for
    `study` (`ResearchStudy/<id>`: a permit provision with purpose PRESCREENING and `data`
    referencing the study); None without one, or when an objection, a restriction of
    processing or a deny naming nobody applies."""
    consents = list(consents)
    if denied(consents, PRIVACY, None, today) or denied(consents, RESEARCH, None, today):
        return None
    for consent in _in_force(consents, RESEARCH):
        top = consent.get("provision") or {}
        if top.get("type") != "permit" or not in_period(top, today):
            continue
        if any(p.get("type") == "permit" and in_period(p, today) and _allows_prescreening(p, study)
               for p in provisions(top)):
            return consent
    return None


def counted(consents: Iterable[dict[str, Any]], today: str) -> bool:
    """Whether a patient may be counted in a study's aggregate pre-screening figures: the
    platform holds their record with their agreement (a patient-privacy permit in force), they
    agreed to research use of it (a research permit in force) and have not objected (no deny
    naming nobody, in either scope)."""
    consents = list(consents)
    return (not denied(consents, PRIVACY, None, today)
            and permit(consents, RESEARCH, None, today) is not None
            and any((c.get("provision") or {}).get("type") == "permit"
                    and in_period(c.get("provision") or {}, today)
                    for c in _in_force(consents, PRIVACY)))
