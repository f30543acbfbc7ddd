"""How well the drafter (drafting.py) reads criteria: precision and recall per criterion type
against curated eligibility Groups (the evaluation harness's trials, `fhir-server eval`'s
`trials/*.json`). Each curated characteristic's wording (`code.text`, under an exclusion
heading when it excludes) is drafted; a drafted criterion is correct when a curated one of
the same sentence has its type, `exclude` and value (codes, quantities with comparator,
ranges, stage and comparator; a free-text criterion by its type alone)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .drafting import Drafted, characteristic, draft
from .eligibility_codes import COMPARATOR_URL, CRITERION_SYSTEM


@dataclass
class Scores:
    drafted: Counter[str] = field(default_factory=Counter)
    curated: Counter[str] = field(default_factory=Counter)
    correct: Counter[str] = field(default_factory=Counter)

    def rows(self) -> list[tuple[str, int, int, int, float, float]]:
        """(type, curated, drafted, correct, precision, recall), by type."""
        kinds = sorted(set(self.drafted) | set(self.curated))
        return [(k, self.curated[k], self.drafted[k], self.correct[k],
                 self.correct[k] / self.drafted[k] if self.drafted[k] else 0.0,
                 self.correct[k] / self.curated[k] if self.curated[k] else 0.0) for k in kinds]


def _kind(characteristic: dict[str, Any]) -> str | None:
    return next((c.get("code") for c in (characteristic.get("code") or {}).get("coding", [])
                 if c.get("system") == CRITERION_SYSTEM), None)


def _key(characteristic: dict[str, Any]) -> tuple[Any, ...]:
    """What must agree: type, exclude, value (units' systems aside), comparator."""
    value = next(((k, v) for k, v in characteristic.items() if k.startswith("value")), ("", None))
    comparator = next((e.get("valueCode") for e in characteristic.get("extension", [])
                       if e.get("url") == COMPARATOR_URL), "eq")
    kind = _kind(characteristic)
    if kind == "free-text":
        return kind, bool(characteristic.get("exclude"))
    return kind, bool(characteristic.get("exclude")), _plain(value[1]), value[0], comparator


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _plain(v)) for k, v in value.items() if k not in ("system", "unit")))
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def characteristics(groups: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The curated characteristics with a wording, contained Groups' members included."""
    for group in groups:
        for found in group.get("characteristic", []):
            if (found.get("code") or {}).get("text") and _kind(found) not in (None, "at-least"):
                yield found
        yield from characteristics(c for c in group.get("contained", []) if c.get("resourceType") == "Group")


def score(groups: Iterable[dict[str, Any]]) -> Scores:
    """The drafter against every curated characteristic of `groups`."""
    scores = Scores()
    for curated in characteristics(groups):
        kind = _kind(curated)
        assert kind is not None
        scores.curated[kind] += 1
        heading = "Exclusion criteria:\n" if curated.get("exclude") else ""
        drafted: list[Drafted] = draft(heading + curated["code"]["text"])
        for item in drafted:
            scores.drafted[item.kind] += 1
            if _key(characteristic(item)) == _key(curated):
                scores.correct[item.kind] += 1
    return scores
