"""A varied set of catalogue resources and what validation finds in each, pinned
(tests/model/test_profile_results.py): the ECLAIRE example study and the IG's fake study, an
import's trial as bench/match_server.py builds it (a study with recruiting sites, its ECLAIRE
Group, its sponsor, our eligibility Group, a hospital), and mutated copies of each, every
mutation made at every place it can be made.

Regenerate the pinned results (only when a change of what validation finds is meant):
`.venv/bin/python -m tests.model.profile_results`.
"""

from __future__ import annotations

import copy
import gzip
import random
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from fhir_server.model.validation import Validator

PINNED = Path(__file__).parent / "data" / "profile-results.json.gz"
Path_ = tuple[str | int, ...]


def _places(value: Any, at: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every value inside `value`, with its path (objects' keys, lists' indexes)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*at, key), child
        yield from _places(child, (*at, key))


def _changed(resource: dict[str, Any], at: Path_, change: Any) -> dict[str, Any]:
    """A copy of `resource` with `change(parent, key)` applied where `at` leads."""
    copied = copy.deepcopy(resource)
    parent = copied
    for step in at[:-1]:
        parent = parent[step]
    change(parent, at[-1])
    return copied


def _drop(parent: Any, key: Any) -> None:
    del parent[key]


def _twice(parent: Any, key: Any) -> None:
    parent[key] = [*parent[key], copy.deepcopy(parent[key][0])]


def _unknown(parent: Any, key: Any) -> None:
    parent[key] = "zz-unknown" if not parent[key].count("/") else "Patient/zz-unknown"


def _retyped(parent: dict[str, Any], key: str) -> None:
    # A choice value under another type: `valueString` given as `valueBoolean`.
    parent["valueBoolean" if key != "valueBoolean" else "valueInteger"] = parent.pop(key) and True


def variants(resource: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """`resource`, then each copy with one mutation: a member or item dropped, a list's
    first item given twice, a string replaced by an unknown one (a reference by one to a
    Patient), a choice value retyped."""
    yield "as is", resource
    for at, value in _places(resource):
        shown = ".".join(map(str, at))
        if at != ("resourceType",):
            yield f"drop {shown}", _changed(resource, at, _drop)
        if isinstance(value, list) and value:
            yield f"twice {shown}", _changed(resource, at, _twice)
        if isinstance(value, str) and at[-1] != "resourceType":
            yield f"unknown {shown}", _changed(resource, at, _unknown)
        if isinstance(at[-1], str) and at[-1].startswith("value") and at[-1][5:6].isupper():
            yield f"retyped {shown}", _changed(resource, at, _retyped)


def found(resource: dict[str, Any]) -> list[list[Any]]:
    """What a catalogue write's validation finds (R4 schema, then the profiles claimed)."""
    return [[i.severity, i.code, list(i.expression), i.diagnostics]
            for i in Validator(use_models=False).outcome(resource)]


def _base() -> list[dict[str, Any]]:
    from bench.match_server import hospitals, trial_unit
    from tests.trials.eclaire import example_unit, fake_study_example

    unit = trial_unit(random.Random(17), 3, 5, date(2026, 12, 7))
    return [*example_unit(sites=1), fake_study_example(), *unit, hospitals()[0]]


def main() -> None:
    resources = _base()
    pinned = {"resources": resources,
              "found": [{label: found(v) for label, v in variants(r)} for r in resources]}
    PINNED.write_bytes(gzip.compress(orjson.dumps(pinned, option=orjson.OPT_INDENT_2), mtime=0))
    print(f"{sum(map(len, pinned['found']))} variants of {len(resources)} resources -> {PINNED}")


if __name__ == "__main__":
    main()
