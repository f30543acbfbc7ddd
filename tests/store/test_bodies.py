"""store/bodies.py: each write's compartment is worked out once, when its keys are readied,
and the body is sealed under that compartment, never another write's."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from fhir_server.search import default_registry, extract
from fhir_server.store.base import Write
from fhir_server.store.bodies import prepare, sealed


class Recording:
    """A codec that seals nothing and records the compartments it is given."""

    def __init__(self) -> None:
        self.prepared: list[tuple[str, frozenset[str]]] = []
        self.sealed: list[tuple[str, frozenset[str]]] = []

    def prepare(self, resources: Iterable[tuple[str, Collection[str]]]) -> None:
        self.prepared += [(t, frozenset(p)) for t, p in resources]

    def seal(self, resource_type: str, id: str, version: int, body: bytes,
             patients: Collection[str]) -> bytes:
        self.sealed.append((id, frozenset(patients)))
        return body

    def ready(self, stored: Iterable[bytes]) -> None:
        return None

    def open(self, resource_type: str, id: str, version: int, stored: bytes) -> bytes:
        return stored


def _observation(id: str, patient: str) -> Write:
    resource = {"resourceType": "Observation", "id": id, "status": "final",
                "code": {"text": "x"}, "subject": {"reference": f"Patient/{patient}"}}
    return Write("Observation", id, resource, extract(resource))


def test_a_prepared_write_is_sealed_under_the_compartment_prepare_found() -> None:
    codec, registry = Recording(), default_registry()
    writes = [_observation("o1", "p1"), _observation("o2", "p2")]
    prepared = prepare(codec, registry, writes)  # type: ignore[arg-type]
    # A compartment recorded for the write is what seals it: nothing works it out again.
    prepared[id(writes[0])] = (writes[0], {"recorded"})
    sealed(codec, registry, writes[0], 1, b"{}", prepared)  # type: ignore[arg-type]
    sealed(codec, registry, writes[1], 1, b"{}", prepared)  # type: ignore[arg-type]
    assert codec.prepared == [("Observation", frozenset({"p1"})), ("Observation", frozenset({"p2"}))]
    assert codec.sealed == [("o1", frozenset({"recorded"})), ("o2", frozenset({"p2"}))]


def test_a_write_prepare_did_not_see_is_sealed_under_its_own_compartment() -> None:
    """An equal write, or one made from a prepared one (a conditional update's new id), is
    another object: its compartment is its own, even where an id() was reused."""
    codec, registry = Recording(), default_registry()
    first = _observation("o1", "p1")
    prepared = prepare(codec, registry, [first])  # type: ignore[arg-type]
    other = _observation("o1", "p9")
    prepared[id(other)] = (first, {"p1"})  # as if `other` took the id of a freed write
    sealed(codec, registry, other, 1, b"{}", prepared)  # type: ignore[arg-type]
    sealed(codec, registry, other, 2, b"{}")  # type: ignore[arg-type]
    assert codec.sealed == [("o1", frozenset({"p9"})), ("o1", frozenset({"p9"}))]
