"""Whom a relative acts for, looked up in the store for each request so that a patient's
revocation takes effect at once: the RelatedPerson of the relative (active, in its period, of
that patient) and the patient's Consents delegating to it (access/delegation.py decides what
they grant; docs/privacy.md, "Relatives")."""

from __future__ import annotations

from ..access import Delegation, delegation
from ..access import consent as consents
from ..clock import instant
from . import reach
from .context import Context


async def _patient_of(ctx: Context, related_person: str) -> str | None:
    """The id of the patient `related_person` is related to, while the RelatedPerson is in
    force (active and in its period); None otherwise."""
    person = await reach.current(ctx, related_person)
    if person is None or person.get("active") is False or not consents.in_period(person, instant()):
        return None
    patient = consents.local((person.get("patient") or {}).get("reference", ""))
    kind, _, id = patient.partition("/")
    return id if kind == "Patient" and id else None


async def delegation_of(ctx: Context, related_person: str, patient: str) -> Delegation | None:
    """What Patient/`patient` delegates today to `related_person` (`RelatedPerson/<id>`), who
    must be related to that very patient; None when nothing."""
    if await _patient_of(ctx, related_person) != patient:
        return None
    found = await reach.find(ctx, "Consent", [("patient", f"Patient/{patient}"),
                                              ("scope", reach.PRIVACY)])
    return delegation(found, related_person, instant())


async def delegating(ctx: Context, related_person: str) -> list[str]:
    """Ids of the patients who delegate something to `related_person` today (zero or one: a
    RelatedPerson is related to one patient)."""
    patient = await _patient_of(ctx, related_person)
    if patient is None or await delegation_of(ctx, related_person, patient) is None:
        return []
    return [patient]
