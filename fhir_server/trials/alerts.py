"""The trial-matching subscription topic's own test (profiles/topics/
SubscriptionTopic-trial-matching.json), run by the dispatcher as the subscription's owner just
before it sends an event. The events are found by the re-match job (rematch.py), which names
in each the patients of the physician a new or changed trial matches; the event is still news
if one of them is still the physician's (a consent naming them in force) and still agrees to
their record going to trial investigators (a patient without that research consent has opted
out). An event without patients is a ResearchStudy's own write, which the topic's trigger
keeps too: the job, not the write, tells whether it matches anyone, so it is never sent."""

from __future__ import annotations

from ..services import reach
from ..services.context import Context
from ..services.server_writes import as_server

TRIAL_MATCHING = "https://oncotrials.example.org/fhir/SubscriptionTopic/trial-matching"


async def still_news(ctx: Context, patients: tuple[str, ...], practitioner: str) -> bool:
    """Whether one of `patients` (ids) is still a consented patient of `practitioner`
    (`Practitioner/<id>`) sharing their record for research."""
    if not patients:
        return False
    return bool(await reach.sharing_patients(as_server(ctx), patients, practitioner))
