"""What a user reaches, looked up in the store for each request so that a withdrawn consent or
an ended membership takes effect at once: the patients a practitioner's consents name, the
patients a representative acts for, an investigator's recipient identities and the frozen
records of their referrals. Lookups run on the store directly: they decide what the caller
may reach, they are not the caller's request. Each reads every matching resource, page by
page, up to MOST: beyond that it fails rather than decide on part of the data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import orjson

from ..access import consent as consents
from ..clock import instant
from ..model.errors import Kind, fail
from ..model.platform_codes import MESSAGE_SYSTEM
from ..model.platform_codes import REFERRAL as REFERRAL_CODE
from ..search import Query, date_range, extract, parse_query, patients_of
from ..store.base import HistoryQuery, Version
from .context import Context

MOST = 10_000  # resources read for one decision, at most (beyond: BUSY, never a guess)
PAGE = 1000
BATCH = 100  # patients per Consent query
PRIVACY = f"{consents.SCOPE_SYSTEM}|{consents.PRIVACY}"
RESEARCH = f"{consents.SCOPE_SYSTEM}|{consents.RESEARCH}"
REFERRAL = f"{MESSAGE_SYSTEM}|{REFERRAL_CODE}"
# RelatedPerson.relationship codes (v3-RoleCode) of a legal representative.
REPRESENTATIVE_CODES = frozenset({"GUARD", "POWATT", "DPOWATT", "HPOWATT", "SPOWATT"})


async def current_versions(ctx: Context, query: Query) -> AsyncIterator[Version]:
    """Every current version matching `query`, page after page (store order)."""
    cursor = None
    while True:
        page = await ctx.store.search(query, cursor)
        for version in page.matches:
            if version.body is not None:
                yield version
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def resources(ctx: Context, query: Query) -> AsyncIterator[dict[str, Any]]:
    """Every current resource matching `query`, page after page (store order)."""
    async for version in current_versions(ctx, query):
        yield orjson.loads(version.body)  # type: ignore[arg-type]  # current_versions yields bodies only


def matching(ctx: Context, resource_type: str,
             params: Sequence[tuple[str, str]]) -> AsyncIterator[dict[str, Any]]:
    """Every current resource the search matches, page after page, with its `meta`."""
    query, _ = parse_query(resource_type, [*params, ("_count", str(PAGE))], ctx.registry)
    return resources(ctx, query)


async def find(ctx: Context, resource_type: str, params: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every current resource matching a search. Past MOST the lookup fails (BUSY) rather
    than decide on part of the data: a deny left unread would be ignored."""
    found: list[dict[str, Any]] = []
    async for resource in matching(ctx, resource_type, params):
        found.append(resource)
        if len(found) > MOST:
            raise fail(Kind.BUSY, "too-costly", f"More than {MOST} {resource_type} resources bear "
                       "on this access decision; the server refuses rather than decide on part "
                       "of them.")
    return found


async def current(ctx: Context, reference: str) -> dict[str, Any] | None:
    """The current content of `Type/id`, None if it does not exist or is deleted."""
    kind, _, id = reference.partition("/")
    found = await ctx.store.read(kind, id)
    return orjson.loads(found.body) if found is not None and found.body is not None else None


async def consent_patients(ctx: Context, version: Version) -> set[str]:
    """The patients a Consent version and the one before it are about (a Consent moved to
    another patient, or deleted, changes what the first patient agreed to)."""
    bodies = [version.body]
    if version.version > 1:
        before = await ctx.store.vread("Consent", version.id, version.version - 1)
        bodies.append(before.body if before is not None else None)
    return {patient for body in bodies if body is not None
            for patient in patients_of(ctx.registry, "Consent", extract(orjson.loads(body)))}


def patients_of_resource(ctx: Context, resource: dict[str, Any]) -> set[str]:
    """Ids of the patients whose compartment holds `resource`."""
    return patients_of(ctx.registry, resource["resourceType"], extract(resource), resource.get("id"))


async def versions(ctx: Context, resource_type: str, id: str) -> list[dict[str, Any]]:
    """The stored versions of a resource, newest first (deletions left out), at most MOST."""
    page = await ctx.store.history(HistoryQuery(resource_type, id, count=MOST))
    return [orjson.loads(v.body) for v in page.versions if v.body is not None]


def _patient_id(consent: dict[str, Any]) -> str | None:
    reference = consents.local((consent.get("patient") or {}).get("reference", ""))
    return reference.removeprefix("Patient/") if reference.startswith("Patient/") else None


async def patient_consents(ctx: Context, patients: Iterable[str], scope: str = PRIVACY) -> dict[str, list[dict[str, Any]]]:
    """The active Consents of `scope` (a token search value: several comma-separated) of each
    of these patients (ids)."""
    ids = list(dict.fromkeys(patients))
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), BATCH):  # one query per batch: SQL has a size limit
        batch = ids[start:start + BATCH]
        found += await find(ctx, "Consent", [("patient", ",".join(f"Patient/{id}" for id in batch)),
                                             ("status", "active"), ("scope", scope)])
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for consent in found:
        id = _patient_id(consent)
        if id is not None:
            grouped[id].append(consent)
    return grouped


async def consenting_patients(ctx: Context, practitioner: str) -> list[str]:
    """Ids of the patients `practitioner` (`Practitioner/<id>`) may reach today."""
    naming = await find(ctx, "Consent", [("actor", practitioner), ("status", "active"),
                                         ("scope", PRIVACY)])
    candidates = [id for c in naming if (id := _patient_id(c)) is not None]
    by_patient = await patient_consents(ctx, candidates)
    now = instant()
    return [id for id in dict.fromkeys(candidates)
            if consents.reaches(by_patient.get(id, []), practitioner, now)]


async def physicians_of(ctx: Context, patient: str) -> set[str]:
    """The practitioners (`Practitioner/<id>`) who may reach `patient` today."""
    by_patient = await patient_consents(ctx, [patient])
    return consents.physicians(by_patient.get(patient, []), instant())


async def sharing_consent(ctx: Context, patient: str) -> dict[str, Any] | None:
    """The Consent in force letting `patient`'s record go to trial investigators, if any."""
    both = await patient_consents(ctx, [patient], f"{RESEARCH},{PRIVACY}")
    return consents.sharing(both.get(patient, []), instant())


async def research_consents(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    """Every active patient-privacy and research Consent, by patient: one pass, for a bulk job
    (a request asks `consenting_patients` and `sharing_consent`, which read the same scopes)."""
    query, _ = parse_query("Consent", [("status", "active"), ("scope", f"{RESEARCH},{PRIVACY}"),
                                       ("_count", str(PAGE))], ctx.registry)
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    async for consent in resources(ctx, query):
        if (id := _patient_id(consent)) is not None:
            by_patient[id].append(consent)
    return by_patient


def research_reach(by_patient: dict[str, list[dict[str, Any]]], now: str) -> dict[str, frozenset[str]]:
    """The patients sharing their record for research at `now` whom some practitioner reaches
    then, each with those practitioners, from `research_consents`."""
    return {id: frozenset(reached) for id, found in by_patient.items()
            if (reached := consents.physicians(found, now)) and consents.sharing(found, now) is not None}


def turns(by_patient: dict[str, list[dict[str, Any]]], after: int) -> int | None:
    """The first bound of a provision's period in these Consents from `after` on
    (microseconds): when one begins or stops holding (`consents.in_period` compares ranges),
    which may change what `research_reach` answers; None if none."""
    bounds = [found[side] for listed in by_patient.values() for consent in listed
              for provision in consents.provisions(consent.get("provision") or {})
              for key, side in (("start", 0), ("end", 1))
              if isinstance(value := (provision.get("period") or {}).get(key), str)
              and (found := date_range(value)) is not None]
    return min((b for b in bounds if b >= after), default=None)


async def sharing_patients(ctx: Context, patients: Iterable[str], practitioner: str | None = None) -> set[str]:
    """Those of `patients` with a Consent in force letting their record go to trial
    investigators (as `sharing_consent`, in bulk); with `practitioner`, only those they reach
    today (as `consenting_patients`, reading these patients' Consents alone)."""
    both = await patient_consents(ctx, patients, f"{RESEARCH},{PRIVACY}")
    now = instant()
    return {id for id, found in both.items() if consents.sharing(found, now) is not None
            and (practitioner is None or consents.reaches(found, practitioner, now))}


async def refused_recipients(ctx: Context, patient: str, recipients: Iterable[str]) -> list[str]:
    """Those of `recipients` a research Consent of `patient` in force refuses their record to."""
    found = await patient_consents(ctx, [patient], RESEARCH)
    return consents.refused_recipients(found.get(patient, []), recipients, instant())


async def represented(ctx: Context, related_person: str) -> list[str]:
    """Ids of the patients `related_person` (`RelatedPerson/<id>`) legally represents today."""
    person = await current(ctx, related_person)
    if person is None:
        return []
    codes = {c.get("code") for r in person.get("relationship", []) for c in r.get("coding", [])}
    patient = (person.get("patient") or {}).get("reference", "")
    if (person.get("active") is False or not codes & REPRESENTATIVE_CODES
            or not consents.in_period(person, instant()) or not patient.startswith("Patient/")):
        return []
    return [patient.removeprefix("Patient/")]


async def recipient_identities(ctx: Context, practitioner: str) -> tuple[str, ...]:
    """The references `practitioner` receives referrals as: their active PractitionerRoles,
    and the active CareTeams and Groups of practitioners naming no patient that they (or one
    of those roles) belong to."""
    roles = [f"PractitionerRole/{r['id']}" for r in await find(
        ctx, "PractitionerRole", [("practitioner", practitioner), ("active", "true")])]
    members = ",".join([practitioner, *roles])
    # A team naming a patient is in that patient's compartment, so the patient or their
    # physician could write it: only teams naming no patient (made by system clients) count.
    teams = [f"CareTeam/{t['id']}" for t in await find(
        ctx, "CareTeam", [("participant", members), ("status", "active")])
             if not _names_patient(ctx, t)]
    groups = [f"Group/{g['id']}" for g in await find(ctx, "Group", [("member", members)])
              if g.get("active", True) and g.get("type") == "practitioner" and not _names_patient(ctx, g)]
    return (*roles, *teams, *groups)


def _names_patient(ctx: Context, resource: dict[str, Any]) -> bool:
    """Whether a team lies in some patient's compartment."""
    return bool(patients_of(ctx.registry, resource["resourceType"], extract(resource)))


def snapshot_ids(referrals: Iterable[dict[str, Any]]) -> list[str]:
    """The frozen-record Bundle ids the payloads of these referrals point to."""
    return [ref.removeprefix("Bundle/") for r in referrals for p in r.get("payload", [])
            if (ref := (p.get("contentReference") or {}).get("reference", "")).startswith("Bundle/")]


async def snapshots_for(ctx: Context, *, recipients: Sequence[str] = (), sender: str | None = None,
                        patients: Sequence[str] = ()) -> tuple[str, ...]:
    """The frozen records a user may read: those of referrals addressed to one of
    `recipients`, and those `sender` sent about patients they still reach."""
    referrals: list[dict[str, Any]] = []
    if recipients:
        referrals += await find(ctx, "Communication", [("recipient", ",".join(recipients)),
                                                       ("category", REFERRAL)])
    if sender is not None and patients:
        reached = {f"Patient/{id}" for id in patients}
        referrals += [r for r in await find(ctx, "Communication", [("sender", sender),
                                                                   ("category", REFERRAL)])
                      if (r.get("subject") or {}).get("reference") in reached]
    return tuple(dict.fromkeys(snapshot_ids(referrals)))
