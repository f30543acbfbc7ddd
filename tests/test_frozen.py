"""fast_init: frozen slots dataclasses built without object.__setattr__, still frozen."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from fhir_server.frozen import fast_init
from fhir_server.search import Clause, Query, ReferencePredicate
from fhir_server.trials.eligibility_rules import Finding


@fast_init
@dataclass(frozen=True, slots=True)
class _Pair:
    left: str
    right: tuple[str, ...] = ()


def test_values_are_built_as_the_dataclass_builds_them_and_stay_frozen() -> None:
    assert _Pair("a") == _Pair(left="a", right=()) and _Pair("a", ("b",)).right == ("b",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        _Pair("a").left = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        _Pair()  # type: ignore[call-arg]
    assert hash(_Pair("a")) == hash(_Pair("a"))


def test_the_engine_and_query_values_it_builds_stay_frozen() -> None:
    query = Query("Condition", (Clause((ReferencePredicate("patient", "Patient", "p"),)),))
    for value, name in ((Finding(True, ("Condition/c",)), "holds"), (query, "clauses")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, None)
    assert query.count is None and query.admit_included is None


def test_a_class_with_post_init_or_a_default_factory_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            assert self.n >= 0

    @dataclass(frozen=True, slots=True)
    class Listed:
        items: list[int] = dataclasses.field(default_factory=list)

    for cls in (Checked, Listed):
        with pytest.raises(TypeError, match="fast_init would skip"):
            fast_init(cls)
