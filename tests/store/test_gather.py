"""`Store.gather` on every store: what many queries match, in one read, is exactly what a
search of each (every page) finds, each resource once; and the erasure's sweep, which finds
a compartment the same way, erases exactly that."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from fhir_server.crypto import patient_scope
from fhir_server.search import Query, default_registry, extract, parse_query
from fhir_server.services.erase import compartment
from fhir_server.store.base import Delete, Store, Version, Write
from tests.builders import condition, observation, organization, patient

pytestmark = pytest.mark.anyio


def _write(resource_type: str, id: str, resource: dict[str, Any]) -> Write:
    resource = {**resource, "resourceType": resource_type, "id": id}
    return Write(resource_type, id, resource, extract(resource))


async def _seed(store: Store) -> None:
    await store.commit([
        _write("Patient", "a", patient()), _write("Patient", "b", patient(family="Martin")),
        _write("Organization", "org", organization()),
        *(_write("Observation", f"a{n}", observation("Patient/a")) for n in range(30)),
        _write("Observation", "b0", observation("Patient/b")),
        # a through two parameters of its compartment: once
        _write("Observation", "both", observation("Patient/a", performer=[{"reference": "Patient/a"}])),
        # b's, performed by a: in both compartments
        _write("Observation", "by-a", observation("Patient/b", performer=[{"reference": "Patient/a"}])),
        _write("Observation", "versioned", observation("Patient/a/_history/1")),
        # an absolute reference to another server's Patient/a: neither search nor gather
        _write("Observation", "elsewhere", observation("https://elsewhere.example/fhir/Patient/a")),
        _write("Condition", "c", condition("Patient/a")),
        _write("Observation", "gone", observation("Patient/a")),
    ])
    await store.commit([Delete("Observation", "gone")])


async def _searched(store: Store, queries: list[Query]) -> dict[tuple[str, str], Version]:
    found: dict[tuple[str, str], Version] = {}
    for query in queries:
        cursor = None
        while True:
            page = await store.search(replace(query, count=7), cursor)
            found.update({(v.resource_type, v.id): v for v in page.matches})
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    return found


async def test_a_compartment_gathered_is_its_searches(store: Store) -> None:
    await _seed(store)
    queries = compartment(default_registry(), "a")
    gathered = await store.gather(queries)
    keys = [(v.resource_type, v.id) for v in gathered]
    assert len(keys) == len(set(keys))  # each once
    searched = await _searched(store, queries)
    assert {k: (v.version, v.body) for k, v in searched.items()} == {
        (v.resource_type, v.id): (v.version, v.body) for v in gathered}
    assert {"both", "by-a", "versioned", "a29"} <= {id for _, id in keys}
    assert not {"b0", "elsewhere", "gone", "b", "org"} & {id for _, id in keys}
    assert ("Condition", "c") in keys and ("Patient", "a") in keys


async def test_queries_of_other_shapes_are_gathered_as_searched(store: Store) -> None:
    await _seed(store)
    registry = default_registry()
    queries = [parse_query("Observation", [("subject", "Patient/b")], registry)[0],
               parse_query("Patient", [("family", "Martin")], registry)[0],
               parse_query("Organization", [("_id", "org,nobody")], registry)[0],
               *compartment(registry, "nobody")]
    gathered = await store.gather(queries)
    assert sorted((v.resource_type, v.id) for v in gathered) == sorted(await _searched(store, queries))
    assert sorted((v.resource_type, v.id) for v in gathered) == [
        ("Observation", "b0"), ("Observation", "by-a"), ("Organization", "org"), ("Patient", "b")]
    assert await store.gather([]) == []


async def test_the_erasure_sweeps_what_gather_finds(store: Store) -> None:
    await _seed(store)
    queries = compartment(default_registry(), "a")
    gathered = {(v.resource_type, v.id) for v in await store.gather(queries)}
    erased = await store.erase(queries, ("Patient", "a"))
    assert erased.resources == {"Patient": 1, "Observation": 34, "Condition": 1}
    assert sum(erased.resources.values()) == len(gathered) + 1  # and the deleted `gone`
    assert await store.gather(queries) == []
    assert await store.read("Observation", "b0") is not None
    assert await store.read("Observation", "elsewhere") is not None


async def test_a_resource_shredded_by_an_erasure_is_left_out_as_the_search_leaves_it(store: Store) -> None:
    """b's Observation performed by a is sealed under a's key (crypto key_scope): once that
    key is destroyed (a's erasure, then a backup put back), nobody reads it, and b's record
    is read without it rather than failing."""
    await _seed(store)
    store.codec.keys.destroy(patient_scope("a"))  # type: ignore[attr-defined]
    queries = compartment(default_registry(), "b")
    gathered = sorted((v.resource_type, v.id) for v in await store.gather(queries))
    assert gathered == sorted(await _searched(store, queries)) == [
        ("Observation", "b0"), ("Patient", "b")]
