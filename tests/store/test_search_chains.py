"""Searches across references on the store (FHIR R4 search.html#chaining, #has, #include,
#revinclude): chains over one to three hops, reverse chains nested and combined with chains,
and the resources `_include` / `_revinclude` add, with `:iterate` and `*`.

Chains and `_has` also run through the reference evaluator (`Dataset.search`); included
resources are compared with the references the spec says to follow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhir_server.search import Include
from fhir_server.store.base import SearchPage, Store
from tests.store.search_model import Dataset, query

pytestmark = pytest.mark.anyio

LOINC = "http://loinc.org"


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def obs(rid: str, subject: str, code: str | None = None, **fields: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Observation", "id": rid, "status": "final", "subject": ref(subject)}
    if code:
        resource["code"] = {"coding": [{"system": LOINC, "code": code}]}
    return {**resource, **fields}


RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "g1", "name": "Acme"},
    {"resourceType": "Organization", "id": "g2", "name": "Beta Clinic", "partOf": ref("Organization/g1")},
    {"resourceType": "Practitioner", "id": "d1", "name": [{"family": "House"}]},
    {"resourceType": "Practitioner", "id": "d2", "name": [{"family": "Grey"}]},
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Smith"}], "birthDate": "1960-05-01",
     "generalPractitioner": [ref("Practitioner/d1")], "managingOrganization": ref("Organization/g2")},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Jones"}], "birthDate": "1990",
     "generalPractitioner": [ref("Practitioner/d2")]},
    {"resourceType": "Patient", "id": "p3", "name": [{"family": "Smith"}], "generalPractitioner": [ref("Practitioner/zz")]},
    {"resourceType": "Patient", "id": "p4", "name": [{"family": "Doe"}]},
    {"resourceType": "Location", "id": "l1", "name": "Smithfield"},
    obs("o1", "Patient/p1", "8867-4", performer=[ref("Practitioner/d2")]),
    obs("o2", "Patient/p2", "8480-6", hasMember=[ref("Observation/o1")]),
    obs("o3", "http://other.org/fhir/Patient/p1", "8867-4"),
    obs("o4", "Location/l1"),
    obs("o5", "Patient/p4", "8480-6"),
    {"resourceType": "Provenance", "id": "v1", "recorded": "2020-01-01T00:00:00Z",
     "target": [ref("Observation/o1")], "agent": [{"who": ref("Practitioner/d1")}]},
]


@pytest.fixture
async def data(store: Store) -> AsyncIterator[Dataset]:
    loaded = Dataset(store)
    await loaded.load(*RESOURCES)
    yield loaded


# --- chains (search.html#chaining) -------------------------------------------------------------


async def test_chain_one_hop(data: Dataset) -> None:
    """`subject:Patient.name` follows local references only (not o3's absolute URL);
    without `:Type` every target type having the parameter is searched."""
    assert await data.search("Observation", ("subject:Patient.name", "smith")) == {"o1"}
    assert await data.search("Observation", ("subject.name", "smith")) == {"o1", "o4"}
    assert await data.search("Observation", ("subject:Patient.name:exact", "Smith")) == {"o1"}
    assert await data.search("Observation", ("subject:Patient.name", "jones,doe")) == {"o2", "o5"}
    assert await data.search("Observation", ("patient.birthdate", "lt1970")) == {"o1"}
    assert await data.search("Observation", ("has-member.code", "8867-4")) == {"o2"}


async def test_chain_over_several_hops(data: Dataset) -> None:
    """Two and three hops: Observation -> Patient -> Practitioner / Organization -> Organization."""
    assert await data.search("Observation", ("subject:Patient.general-practitioner.name", "house")) == {"o1"}
    assert await data.search("Observation", ("patient.general-practitioner:Practitioner.name", "grey")) == {"o2"}
    assert await data.search("Observation", ("patient.organization.name", "beta")) == {"o1"}
    assert await data.search("Observation", ("patient.organization.partof.name", "acme")) == {"o1"}
    assert await data.search("Observation", ("patient.general-practitioner:missing", "true")) == {"o5"}


async def test_chain_ignores_deleted_and_dangling_targets(data: Dataset) -> None:
    """A chain reaches current resources only: p3's practitioner never existed, d2 is deleted."""
    assert await data.search("Patient", ("general-practitioner.name", "grey")) == {"p2"}
    await data.delete("Practitioner", "d2")
    assert await data.search("Patient", ("general-practitioner.name", "grey")) == set()
    assert await data.search("Patient", ("general-practitioner:missing", "false")) == {"p1", "p2", "p3"}


async def test_chains_and_together(data: Dataset) -> None:
    """Each chained parameter is its own condition; repeated ones AND (#combining)."""
    assert await data.search("Observation", ("patient.name", "smith"), ("patient.birthdate", "1960")) == {"o1"}
    assert await data.search("Observation", ("patient.name", "smith"), ("patient.birthdate", "1990")) == set()


# --- reverse chains (search.html#has) ----------------------------------------------------------


async def test_has(data: Dataset) -> None:
    """`_has:Observation:patient:code` finds patients some Observation points to."""
    assert await data.search("Patient", ("_has:Observation:patient:code", "8867-4")) == {"p1"}
    assert await data.search("Patient", ("_has:Observation:subject:code", "8480-6,8867-4")) == {"p1", "p2", "p4"}
    assert await data.search("Patient", ("_has:Observation:patient:code", "8867-4"),
                             ("_has:Observation:patient:code", "8480-6")) == set()
    assert await data.search("Patient", ("_has:Observation:subject:_id", "o3")) == set()  # absolute
    assert await data.search("Location", ("_has:Observation:subject:status", "final")) == {"l1"}


async def test_has_nested_and_with_chains(data: Dataset) -> None:
    """`_has` inside `_has`, and a chain at the end of a `_has`."""
    nested = "_has:Observation:patient:_has:Provenance:target:agent"
    assert await data.search("Patient", (nested, "Practitioner/d1")) == {"p1"}
    deep = "_has:Patient:general-practitioner:_has:Observation:patient:code"
    assert await data.search("Practitioner", (deep, "8480-6")) == {"d2"}
    assert await data.search("Patient", ("_has:Observation:patient:performer:Practitioner.name", "grey")) == {"p1"}
    assert await data.search("Organization", ("_has:Organization:partof:_has:Patient:organization:name", "smith")) == {"g1"}


async def test_has_ignores_deleted_sources(data: Dataset) -> None:
    await data.delete("Observation", "o1")
    assert await data.search("Patient", ("_has:Observation:patient:code", "8867-4")) == set()


# --- _include and _revinclude (search.html#include, #revinclude) -----------------------------


def included(page: SearchPage) -> set[str]:
    return {f"{v.resource_type}/{v.id}" for v in page.included}


def matched(page: SearchPage) -> set[str]:
    return {f"{v.resource_type}/{v.id}" for v in page.matches}


async def test_include(data: Dataset) -> None:
    """`_include` adds the targets of the matches' references, once, never a match again."""
    page = await data.page("Observation", ("_id", "o1,o4"), ("_include", "Observation:subject"))
    assert included(page) == {"Patient/p1", "Location/l1"}
    page = await data.page("Observation", ("_id", "o1,o4"), ("_include", "Observation:subject:Patient"))
    assert included(page) == {"Patient/p1"}
    page = await data.page("Observation", ("_id", "o2"), ("_include", "Observation:has-member"))
    assert included(page) == {"Observation/o1"}
    page = await data.page("Observation", ("_id", "o1,o2"), ("_include", "Observation:has-member"))
    assert matched(page) == {"Observation/o1", "Observation/o2"} and included(page) == set()


async def test_include_wildcards(data: Dataset) -> None:
    """`Observation:*` and `*` follow every reference parameter."""
    for spec in ("Observation:*", "*"):
        page = await data.page("Observation", ("_id", "o1"), ("_include", spec))
        assert included(page) == {"Patient/p1", "Practitioner/d2"}, spec


async def test_include_iterate(data: Dataset) -> None:
    """`:iterate` applies to included resources too, round after round."""
    page = await data.page("Observation", ("_id", "o1"), ("_include", "Observation:subject"),
                           ("_include:iterate", "Patient:general-practitioner"))
    assert included(page) == {"Patient/p1", "Practitioner/d1"}
    page = await data.page("Observation", ("_id", "o1"), ("_include", "Observation:patient"),
                           ("_include:iterate", "Patient:organization"), ("_include:iterate", "Organization:partof"))
    assert included(page) == {"Patient/p1", "Organization/g2", "Organization/g1"}
    # Without :iterate an include applies to the matches only. The parser refuses a source
    # type that is not searched, so the AST is built here (as a service could).
    q = query("Observation", ("_id", "o1"), ("_include", "Observation:patient"))
    q = dataclasses.replace(q, include=(*q.include, Include("Patient", "general-practitioner")))
    assert included(await data.store.search(q)) == {"Patient/p1"}


async def test_include_skips_missing_and_deleted_targets(data: Dataset) -> None:
    page = await data.page("Patient", ("_id", "p3"), ("_include", "Patient:general-practitioner"))
    assert included(page) == set()
    await data.delete("Practitioner", "d1")
    page = await data.page("Patient", ("_id", "p1"), ("_include", "Patient:general-practitioner"))
    assert included(page) == set()


async def test_revinclude(data: Dataset) -> None:
    """`_revinclude` adds resources referencing the matches; `:iterate` and `*` as above."""
    page = await data.page("Patient", ("_id", "p1"), ("_revinclude", "Observation:subject"))
    assert included(page) == {"Observation/o1"}
    page = await data.page("Patient", ("_id", "p1"), ("_revinclude", "Observation:subject"),
                           ("_revinclude:iterate", "Provenance:target"))
    assert included(page) == {"Observation/o1", "Provenance/v1"}
    page = await data.page("Practitioner", ("_id", "d1"), ("_revinclude", "*"))
    assert included(page) == {"Patient/p1", "Provenance/v1"}
    page = await data.page("Practitioner", ("_id", "d2"), ("_revinclude", "Observation:*"))
    assert included(page) == {"Observation/o1"}


async def test_includes_follow_the_page(data: Dataset) -> None:
    """Each page carries the includes of its own matches."""
    q = query("Observation", ("_id", "o1,o2"), ("_count", "1"), ("_include", "Observation:subject"))
    first = await data.store.search(q)
    assert matched(first) == {"Observation/o1"} and included(first) == {"Patient/p1"}
    assert first.next_cursor is not None
    second = await data.store.search(q, first.next_cursor)
    assert matched(second) == {"Observation/o2"} and included(second) == {"Patient/p2"}
