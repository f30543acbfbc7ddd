"""Validation finds what it found when these results were pinned (tests/model/profile_results.py):
the same issues, in the same order, for every variant of a varied set of catalogue resources.
A change that only makes validation cheaper (model/snapshot.py) must keep them all."""

from __future__ import annotations

import gzip
from functools import cache
from typing import Any

import orjson
import pytest

from tests.model.profile_results import PINNED, found, variants


@cache
def _pinned() -> dict[str, Any]:
    return orjson.loads(gzip.decompress(PINNED.read_bytes()))  # type: ignore[no-any-return]


def _resources() -> list[dict[str, Any]]:
    return _pinned()["resources"]  # type: ignore[no-any-return]


def test_the_set_is_varied() -> None:
    """Each kind of finding the profiles report is among the pinned results."""
    results = [issues for each in _pinned()["found"] for issues in each.values()]
    codes = {(severity, code) for issues in results for severity, code, _, _ in issues}
    assert {("error", "required"), ("error", "structure"), ("error", "value"), ("error", "invariant"),
            ("error", "code-invalid"), ("warning", "code-invalid"), ("warning", "invariant")} <= codes
    diagnostics = " ".join(d for issues in results for *_, d in issues)
    for said in ("A reference to 'Patient' is not allowed here", "The profile wants at least",
                 "The profile allows at most", "Type Boolean is not allowed here"):
        assert said in diagnostics


@pytest.mark.parametrize("n", range(len(_resources())), ids=lambda n: _resources()[n]["resourceType"])
def test_every_variant_is_found_as_pinned(n: int) -> None:
    resource = _resources()[n]
    pinned = _pinned()["found"][n]
    made = list(variants(resource))
    assert [label for label, _ in made] == list(pinned)
    differing = [label for label, variant in made if found(variant) != pinned[label]]
    assert differing == []
