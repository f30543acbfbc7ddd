"""The SubscriptionTopics this server offers (profiles/topics/, R5 SubscriptionTopic JSON as the
Subscriptions R5 Backport IG 1.1.0 lets an R4 server publish them): what triggers each, on
which interactions and FHIRPath criteria, and which filters a Subscription may use."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fhirpathpy import compile as compile_fhirpath  # type: ignore[import-untyped]

TOPICS_DIR = Path(__file__).resolve().parents[1] / "profiles" / "topics"
Interaction = str  # create | update | delete


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic: `resource_type` written by one of `interactions` whose current content
    satisfies `criteria` (a FHIRPath on %current; None: any), filterable by `filters`."""

    url: str
    resource_type: str
    interactions: frozenset[Interaction]
    criteria: str | None
    filters: frozenset[str]
    definition: dict[str, Any]

    def triggered(self, interaction: Interaction, current: dict[str, Any] | None) -> bool:
        """Whether a write of `interaction` leaving `current` (None: a deletion) fires it."""
        if interaction not in self.interactions:
            return False
        if self.criteria is None:
            return True
        if current is None:
            return False
        # FHIRPath answers a collection: the criteria hold when it is exactly {true}.
        return _compiled(self.criteria)(current, {"current": current}) == [True]


@cache
def _compiled(criteria: str) -> Any:
    return compile_fhirpath(criteria)


def _topic(definition: dict[str, Any]) -> Topic:
    [trigger] = definition["resourceTrigger"]
    resource_type = trigger["resource"].rsplit("/", 1)[-1]
    return Topic(url=definition["url"], resource_type=resource_type,
                 interactions=frozenset(trigger["supportedInteraction"]),
                 criteria=trigger.get("fhirPathCriteria"),
                 filters=frozenset(f["filterParameter"] for f in definition.get("canFilterBy", [])),
                 definition=definition)


@cache
def topics() -> dict[str, Topic]:
    """The shipped topics by canonical URL."""
    found = (_topic(json.loads(path.read_text())) for path in sorted(TOPICS_DIR.glob("*.json")))
    return {topic.url: topic for topic in found}
