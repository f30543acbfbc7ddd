"""The trial-matching subscription topic's own test (profiles/topics/
SubscriptionTopic-trial-matching.json): a ResearchStudy written is news for a physician when
it is among the trials `$match` (match.py, the forward matcher) lists for one of the patients
whose consent names the physician and who agreed to their record going to trial investigators
(a patient without that research consent in force has opted out: never matched). The match
runs with the subscription owner's rights, so it reads only what they reach."""

from __future__ import annotations

from ..services import reach
from ..services.context import Context
from ..services.server_writes import as_server
from .match import match

MOST = 1000  # trials listed per patient when looking for the one written
TRIAL_MATCHING = "https://oncotrials.example.org/fhir/SubscriptionTopic/trial-matching"


async def matches_a_patient(ctx: Context, study: str, practitioner: str) -> bool:
    """Whether ResearchStudy/`study` is listed by `$match` for one of `practitioner`'s
    consented patients (`Practitioner/<id>`), as the caller of `ctx`."""
    server = as_server(ctx)
    for patient in await reach.consenting_patients(server, practitioner):
        if await reach.sharing_consent(server, patient) is None:
            continue  # opted out of trial matching
        found = await match(ctx, {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
            {"name": "count", "valueInteger": MOST}]})
        if any(e.get("resource", {}).get("id") == study and e.get("search", {}).get("mode") == "match"
               for e in found.get("entry", [])):
            return True
    return False
