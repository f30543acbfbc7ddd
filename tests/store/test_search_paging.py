"""Sorting and paging of store searches (FHIR R4 search.html#sort, #count, #total, and
http.html#paging: "the server SHOULD return consistent results when paging").

Pages are keyset pages: following `next_cursor` from the first page, or `prev_cursor` back
from the last, returns every match exactly once in `_sort` order (ties and missing values
included), and resources that stay unchanged while others are created, updated or deleted
between two page fetches are neither repeated nor skipped.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.model.errors import FhirError, Kind
from fhir_server.search import Query, Sort
from fhir_server.store.base import Delete, Operation, Store, Version
from tests.store import search_model as m
from tests.store.conftest import STORES
from tests.store.search_model import BOOLEANS, Dataset, Harness, Key, between, choice

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SORTS = ("_id", "_lastUpdated", "birthdate", "family", "gender", "identifier", "general-practitioner",
         "address-city")
FAMILIES = ("Ng", "ng", "Zoë", "Adams", "Émile")


@pytest.fixture(scope="module", params=sorted(STORES))
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    yield from m.harness(request.param, tmp_path_factory.mktemp("paging"))


@st.composite
def patients(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    """A Patient with few distinct sort values (many ties) and often none (missing)."""
    r: dict[str, Any] = {"resourceType": "Patient", "id": rid}
    if draw(between(0, 3)):
        r["name"] = [{"family": draw(choice(FAMILIES))} for _ in range(draw(between(1, 2)))]
    if draw(between(0, 3)):
        r["birthDate"] = draw(choice(("1962", "1962-04", "1962-04-17", "1970-01-01", "2001")))
    if draw(BOOLEANS):
        r["gender"] = draw(choice(("male", "female")))
    if draw(BOOLEANS):
        r["identifier"] = [{"value": v} for v in draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=2))]
    if draw(BOOLEANS):
        r["generalPractitioner"] = [{"reference": f"Practitioner/{draw(choice('xyz'))}"}]
    if draw(BOOLEANS):
        r["address"] = [{"city": draw(choice(("Lyon", "lyon", "Åre")))}]
    return r


@st.composite
def cohorts(draw: st.DrawFn) -> list[dict[str, Any]]:
    ids = draw(st.lists(st.sampled_from([f"p{n:02d}" for n in range(30)]), unique=True, max_size=25))
    return [draw(patients(rid)) for rid in ids]


@st.composite
def sort_orders(draw: st.DrawFn) -> tuple[str, tuple[Sort, ...]]:
    codes = draw(st.lists(st.sampled_from(SORTS), min_size=0, max_size=3, unique=True))
    sorts = tuple(Sort(c, draw(BOOLEANS)) for c in codes)
    return ",".join(("-" if s.descending else "") + s.param for s in sorts), sorts


def sorted_query(text: str, count: int) -> Query:
    params = [("_count", str(count)), ("_total", "accurate")] + ([("_sort", text)] if text else [])
    return m.query("Patient", *params)


def keys(versions: tuple[Version, ...]) -> list[Key]:
    return [(v.resource_type, v.id) for v in versions]


def walk(harness: Harness, q: Query) -> tuple[list[Key], list[Key]]:
    """Every match forwards (next cursors), then backwards from the last page (prev cursors)."""
    forwards: list[Key] = []
    page = harness.run(harness.store.search(q))
    assert page.prev_cursor is None
    pages = [page]
    while True:
        forwards += keys(page.matches)
        assert page.total == len(harness.world.expected(q))
        if page.next_cursor is None:
            break
        assert len(pages) <= 30, "next_cursor does not advance"
        page = harness.run(harness.store.search(q, page.next_cursor))
        pages.append(page)
    backwards = keys(page.matches)
    while page.prev_cursor is not None:
        assert len(backwards) <= len(forwards), "prev_cursor does not move back"
        page = harness.run(harness.store.search(q, page.prev_cursor))
        backwards = keys(page.matches) + backwards
    return forwards, backwards


@SETTINGS
@given(cohort=cohorts(), order=sort_orders(), count=st.integers(1, 6))
def test_pages_return_every_match_once_in_order(
    harness: Harness, cohort: list[dict[str, Any]], order: tuple[str, tuple[Sort, ...]], count: int
) -> None:
    """Forwards and backwards, for the default order and `_sort` keys with ties and gaps."""
    harness.replace_all(cohort)
    text, sorts = order
    expected = m.sorted_keys(harness.world, harness.world.entries, sorts)
    forwards, backwards = walk(harness, sorted_query(text, count))
    assert forwards == expected
    assert backwards == expected


@st.composite
def changes(draw: st.DrawFn, present: list[str]) -> list[tuple[str, str]]:
    """Writes between two page fetches: (action, id), action create, update or delete."""
    fresh = [f"n{n:02d}" for n in range(10)]
    choices = [("create", i) for i in fresh] + [(a, i) for i in present for a in ("update", "delete")]
    return draw(st.lists(st.sampled_from(choices), max_size=4, unique_by=lambda c: c[1]))


@SETTINGS
@given(cohort=cohorts(), order=sort_orders(), count=st.integers(1, 5), data=st.data())
def test_pages_are_stable_while_others_write(
    harness: Harness, cohort: list[dict[str, Any]], order: tuple[str, tuple[Sort, ...]], count: int, data: Any
) -> None:
    """A resource unchanged from the first page to the last is returned exactly once, and
    the unchanged ones in their sort order, whatever is written between the fetches."""
    harness.replace_all(cohort)
    text, sorts = order
    q = dataclasses.replace(sorted_query(text, count), total=None)
    untouched = set(harness.world.entries)
    expected = m.sorted_keys(harness.world, untouched, sorts)
    seen: list[Key] = []
    page = harness.run(harness.store.search(q))
    for _ in range(40):
        seen += keys(page.matches)
        if page.next_cursor is None:
            break
        present = sorted(i for _, i in harness.world.entries)
        writes: list[Operation] = []
        for action, rid in data.draw(changes(present)):
            untouched.discard(("Patient", rid))
            writes.append(Delete("Patient", rid) if action == "delete" else m.write(data.draw(patients(rid))))
        harness.run(m.commit(harness.store, harness.world, writes))
        page = harness.run(harness.store.search(q, page.next_cursor))
    stable = [k for k in seen if k in untouched]
    assert sorted(stable) == sorted(set(stable)), "an unchanged resource came twice"
    assert stable == [k for k in expected if k in untouched]


# --- examples: _sort, _count, _total, cursors ----------------------------------------------------


@pytest.fixture
async def data(store: Store) -> AsyncIterator[Dataset]:
    yield Dataset(store)


async def order(data: Dataset, *params: tuple[str, str]) -> list[str]:
    found = await m.all_keys(data.store, m.query("Patient", *params), count=2)
    return [rid for _, rid in found]


@pytest.mark.anyio
async def test_sort_keys_directions_ties_and_missing(data: Dataset) -> None:
    """`_sort=a,-b`: by a ascending, ties by b descending; missing values sort last (#sort)."""
    await data.load(
        {"resourceType": "Patient", "id": "1", "birthDate": "1970", "name": [{"family": "Bell"}]},
        {"resourceType": "Patient", "id": "2", "birthDate": "1960", "name": [{"family": "Ash"}]},
        {"resourceType": "Patient", "id": "3", "birthDate": "1970", "name": [{"family": "Cole"}]},
        {"resourceType": "Patient", "id": "4", "name": [{"family": "Ash"}]},
        {"resourceType": "Patient", "id": "5", "birthDate": "1960"},
    )
    assert await order(data, ("_sort", "birthdate,-family")) == ["2", "5", "3", "1", "4"]
    assert await order(data, ("_sort", "-birthdate,family")) == ["1", "3", "2", "5", "4"]
    assert await order(data, ("_sort", "family,birthdate")) == ["2", "4", "1", "3", "5"]
    assert await order(data, ("_sort", "-_id")) == ["5", "4", "3", "2", "1"]


@pytest.mark.anyio
async def test_sort_by_repeated_values_and_ranges(data: Dataset) -> None:
    """Several names sort by the lowest ascending and the highest descending; a `<5`
    quantity (no lower bound) comes first ascending, a `>=5` one first descending."""
    await data.load(
        {"resourceType": "Patient", "id": "a", "name": [{"family": "Moss"}, {"family": "Able"}]},
        {"resourceType": "Patient", "id": "b", "name": [{"family": "King"}]},
    )
    assert await order(data, ("_sort", "family")) == ["a", "b"]
    assert await order(data, ("_sort", "-family")) == ["a", "b"]
    await data.load(*(
        {"resourceType": "Observation", "id": rid, "status": "final", "valueQuantity": quantity}
        for rid, quantity in (("lt", {"value": 5, "comparator": "<"}), ("six", {"value": 6}),
                              ("ge", {"value": 5, "comparator": ">="}), ("four", {"value": 4}))
    ))
    for sort, expected in (("value-quantity", ["lt", "four", "ge", "six"]), ("-value-quantity", ["ge", "six", "lt", "four"])):
        found = await m.all_keys(data.store, m.query("Observation", ("_sort", sort)), count=1)
        assert [rid for _, rid in found] == expected


@pytest.mark.anyio
async def test_count_and_total(data: Dataset) -> None:
    """`_count` sizes pages, `_count=0` and `_summary=count` return the total only (#count)."""
    await data.load(*({"resourceType": "Patient", "id": str(n), "gender": "male"} for n in range(5)))
    page = await data.page("Patient", ("gender", "male"), ("_count", "2"), ("_total", "accurate"))
    assert len(page.matches) == 2 and page.total == 5 and page.next_cursor is not None
    page = await data.page("Patient", ("gender", "male"), ("_count", "0"), ("_total", "accurate"))
    assert page.matches == () and page.total == 5
    page = await data.page("Patient", ("gender", "male"), ("_summary", "count"))
    assert page.matches == () and page.total == 5
    page = await data.page("Patient", ("gender", "female"), ("_total", "accurate"))
    assert page.matches == () and page.total == 0 and page.next_cursor is None


def cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode()


@pytest.mark.anyio
@pytest.mark.parametrize("token", [
    "%%%", cursor("x"), cursor([False]), cursor([1, 1]), cursor([False, {"a": 1}]),
    cursor([True, [1]]), cursor([False, 2**63 + 5]), cursor([False, None]),
])
async def test_malformed_cursors_are_invalid(data: Dataset, token: str) -> None:
    """A cursor the store did not issue is a client error, never a crash."""
    await data.load({"resourceType": "Patient", "id": "x"})
    with pytest.raises(FhirError) as error:
        await data.store.search(m.query("Patient"), token)
    assert error.value.kind is Kind.INVALID
