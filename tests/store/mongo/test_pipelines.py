"""MongoDB commands of a search (store/mongo/search.py) and documents (store/mongo/layout.py).

A recording fake collection stands in for `resources`: the tests compare the exact `find`
arguments and aggregation stages built for a page (`_sort` keys, keyset boundaries), for the
inner searches of chains and `_has`, and the `_revinclude` filter. The layout tests pin the
stored shape: entry arrays with short field names, resource and history documents, and the
compartment shard key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from bson import ObjectId

from fhir_server.search import (
    CompositeEntry,
    DateEntry,
    Include,
    IndexEntry,
    NumberEntry,
    PositionEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
    default_registry,
    extract,
)
from fhir_server.store.mongo.filters import FALSE, Filter, shard_filter
from fhir_server.store.mongo.layout import (
    SHARED_SHARD,
    entry_arrays,
    history_document,
    resource_document,
    shard_key,
)
from fhir_server.store.mongo.search import MongoSearch
from tests.store.search_model import query

REGISTRY = default_registry()
PK = ObjectId("65a1b2c3d4e5f60718293a4b")
# The fields a page reads from each document (mongo/search.VERSION_FIELDS), spelled out.
PAGE_FIELDS = {"_id": 0, "type": 1, "id": 1, "version": 1, "lastUpdated": 1, "method": 1,
               "body": 1, "pk": 1}
WHERE: Filter = {"type": "Patient", "deleted": False}


class _Cursor:
    """An async iterable over fixed documents, as pymongo's async cursors are."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        for doc in self.docs:
            yield doc


class FakeCollection:
    """Records `find` and `aggregate` calls as (method, args, kwargs); returns `docs`."""

    def __init__(self, docs: list[dict[str, Any]] | None = None) -> None:
        self.docs = docs or []
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def find(self, *args: Any, **kwargs: Any) -> _Cursor:
        self.calls.append(("find", args, kwargs))
        return _Cursor(self.docs)

    async def aggregate(self, pipeline: list[dict[str, Any]], **kwargs: Any) -> _Cursor:
        self.calls.append(("aggregate", (pipeline,), kwargs))
        return _Cursor(self.docs)


def searcher(collection: FakeCollection) -> MongoSearch:
    return MongoSearch(cast(Any, collection), REGISTRY)


async def page(sort: str | None, boundary: list[Any] | None = None,
               backwards: bool = False) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """The one call `_page` makes for a Patient search sorted by `sort` (21 rows)."""
    collection = FakeCollection()
    search = searcher(collection)
    parsed = query("Patient", *([("_sort", sort)] if sort else []))
    assert await search._page(WHERE, search._keys(parsed), boundary, backwards, 21) == []
    [call] = collection.calls
    return call


def sort_value(array: str, param: str, reducer: str, field: str) -> dict[str, Any]:
    """The `$addFields` expression of a `_sort` key: `reducer` over `param`'s entries."""
    entries = {"$filter": {"input": {"$ifNull": [f"${array}", []]},
                           "cond": {"$eq": ["$$this.p", param]}}}
    return {reducer: {"$map": {"input": entries, "in": f"$$this.{field}"}}}


def missing_flag(n: int) -> dict[str, Any]:
    """1 when sort key `n` has no value (so that it sorts last), else 0."""
    return {"$cond": [{"$eq": [{"$ifNull": [f"$_k{n}", None]}, None]}, 1, 0]}


# --- pages: aggregation for _sort, find without -----------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("sort", "value", "order"), [
    ("birthdate", sort_value("date", "birthdate", "$min", "lo"),
     [("_m0", 1), ("_k0", 1), ("pk", 1)]),
    ("-name", sort_value("str", "name", "$max", "v"),
     [("_m0", 1), ("_k0", -1), ("pk", 1)]),
])
async def test_sorted_page_pipeline(sort: str, value: dict[str, Any],
                                    order: list[tuple[str, int]]) -> None:
    """`_sort` computes the key from the entry array (lowest `lo` ascending, highest `v`
    descending), a missing flag sorting valueless resources last, then sorts and limits."""
    method, args, kwargs = await page(sort)
    assert method == "aggregate"
    assert kwargs == {"session": None}
    [pipeline] = args
    assert pipeline == [
        {"$match": WHERE},
        {"$addFields": {"_k0": value}},
        {"$addFields": {"_m0": missing_flag(0)}},
        {"$sort": dict(order)},
        {"$limit": 21},
        {"$project": {**PAGE_FIELDS, "_m0": 1, "_k0": 1}},
    ]
    assert list(pipeline[3]["$sort"].items()) == order  # key order is the sort order


@pytest.mark.anyio
async def test_sorted_page_after_a_boundary() -> None:
    """With a cursor, the keyset condition is matched after the keys are computed."""
    method, (pipeline,), _ = await page("birthdate", [0, 1000, PK])
    assert method == "aggregate"
    assert [list(stage) for stage in pipeline] == [
        ["$match"], ["$addFields"], ["$addFields"], ["$match"], ["$sort"], ["$limit"],
        ["$project"]]
    assert pipeline[3] == {"$match": {"$or": [
        {"_m0": {"$gt": 0}},
        {"_m0": 0, "_k0": {"$gt": 1000}},
        {"_m0": 0, "_k0": 1000, "pk": {"$gt": PK}},
    ]}}


@pytest.mark.anyio
async def test_sorted_page_backwards_reverses_the_order() -> None:
    """A `prev` page sorts every key the other way (and takes rows before the boundary)."""
    _, (pipeline,), _ = await page("-name", [0, "ng", PK], backwards=True)
    assert list(pipeline[4]["$sort"].items()) == [("_m0", -1), ("_k0", 1), ("pk", -1)]
    assert pipeline[3] == {"$match": {"$or": [
        {"_m0": {"$lt": 0}},
        {"_m0": 0, "_k0": {"$gt": "ng"}},
        {"_m0": 0, "_k0": "ng", "pk": {"$lt": PK}},
    ]}}


@pytest.mark.parametrize(("sort", "values", "backwards", "expected"), [
    pytest.param("birthdate", [1, None, PK], False,
                 {"$or": [{"_m0": {"$gt": 1}}, {"_m0": 1, "_k0": None, "pk": {"$gt": PK}}]},
                 id="missing-value-ascending"),
    pytest.param("-birthdate", [0, 5, PK], False,
                 {"$or": [{"_m0": {"$gt": 0}}, {"_m0": 0, "_k0": {"$lt": 5}},
                          {"_m0": 0, "_k0": 5, "pk": {"$gt": PK}}]},
                 id="descending"),
    pytest.param("-_lastUpdated", [7, PK], True,
                 {"$or": [{"lu": {"$gt": 7}}, {"lu": 7, "pk": {"$lt": PK}}]},
                 id="own-field-backwards"),
    pytest.param(None, [PK], False, {"pk": {"$gt": PK}}, id="pk-only"),
])
def test_after(sort: str | None, values: list[Any], backwards: bool, expected: Filter) -> None:
    """The keyset condition: rows strictly after (before, backwards) the boundary, key by
    key; a missing value has nothing after it among missing values, so it adds no branch."""
    search = searcher(FakeCollection())
    keys = search._keys(query("Patient", *([("_sort", sort)] if sort else [])))
    assert search._after(keys, values, backwards) == expected


@pytest.mark.anyio
@pytest.mark.parametrize(("sort", "boundary", "backwards", "where", "order", "projection"), [
    (None, None, False, WHERE, [("pk", 1)], PAGE_FIELDS),
    (None, [PK], False, {**WHERE, "pk": {"$gt": PK}}, [("pk", 1)], PAGE_FIELDS),
    (None, [PK], True, {**WHERE, "pk": {"$lt": PK}}, [("pk", -1)], PAGE_FIELDS),
    ("-_id", None, False, WHERE, [("id", -1), ("pk", 1)], PAGE_FIELDS),
    ("_lastUpdated", None, False, WHERE, [("lu", 1), ("pk", 1)], {**PAGE_FIELDS, "lu": 1}),
])
async def test_find_page(sort: str | None, boundary: list[Any] | None, backwards: bool,
                         where: Filter, order: list[tuple[str, int]],
                         projection: dict[str, int]) -> None:
    """Without a computed key a page is one `find` in key order, then `pk` order, limited
    to one row more than the page."""
    method, args, kwargs = await page(sort, boundary, backwards)
    assert method == "find"
    assert args == (where, projection)
    assert kwargs == {"sort": order, "limit": 21, "session": None}


@pytest.mark.anyio
@pytest.mark.parametrize("sort", ["birthdate", "-name,_id", "_lastUpdated,name",
                                  "name,-_lastUpdated", "-_lastUpdated"])
async def test_page_keeps_every_sort_key(sort: str) -> None:
    """The next cursor is read from the returned documents (mongo/search._boundary), so the
    projection must keep every sort key field, own fields (`lu`) included."""
    collection = FakeCollection()
    search = searcher(collection)
    keys = search._keys(query("Patient", ("_sort", sort)))
    await search._page(WHERE, keys, None, False, 21)
    [(method, args, _)] = collection.calls
    projection = args[0][-1]["$project"] if method == "aggregate" else args[1]
    assert {k.field for k in keys} <= {f for f, keep in projection.items() if keep == 1}


# --- the Resolver of chains and _has, and the search filter -------------------------------


@pytest.mark.anyio
async def test_ids_searches_current_resources() -> None:
    """A chain's inner search: ids of current resources of the type matching the filter."""
    collection = FakeCollection([{"id": "a"}, {"id": "b"}])
    found = await searcher(collection).ids("Patient", {"str": {"$elemMatch": {"p": "name"}}})
    assert found == ["a", "b"]
    assert collection.calls == [("find", (
        {"type": "Patient", "deleted": False, "str": {"$elemMatch": {"p": "name"}}},
        {"_id": 0, "id": 1}), {"session": None})]


@pytest.mark.anyio
async def test_referenced_groups_reference_targets() -> None:
    """`_has`'s inner search: the distinct ids local references of matching sources give."""
    collection = FakeCollection([{"_id": "p1"}, {"_id": None}, {"_id": "p2"}])
    where = {"tok": {"$elemMatch": {"p": "code", "c": "1234"}}}
    found = await searcher(collection).referenced("Observation", "patient", "Patient", where)
    assert found == ["p1", "p2"]
    reference = {"p": "patient", "u": None, "t": "Patient"}
    assert collection.calls == [("aggregate", ([
        {"$match": {"type": "Observation", "deleted": False, **where,
                    "ref": {"$elemMatch": reference}}},
        {"$unwind": "$ref"},
        {"$match": {"ref.p": "patient", "ref.u": None, "ref.t": "Patient"}},
        {"$group": {"_id": "$ref.i"}},
    ],), {"session": None})]


@pytest.mark.anyio
@pytest.mark.parametrize(("rtype", "params", "expected"), [
    ("Patient", [("gender", "male")],
     {"type": "Patient", "deleted": False, "tok": {"$elemMatch": {"p": "gender", "c": "male"}}}),
    (None, [("_type", "Patient,Practitioner"), ("_id", "1")],
     {"deleted": False, "$or": [{"type": "Patient", "_id": "Patient/1"},
                                {"type": "Practitioner", "_id": "Practitioner/1"}]}),
    ("Patient", [("_id", "http://s|1")], FALSE),
])
async def test_where(rtype: str | None, params: list[tuple[str, str]], expected: Filter) -> None:
    """The search filter: current resources of the type (per type on system search)."""
    assert await searcher(FakeCollection()).where(query(rtype, *params)) == expected


# --- _revinclude ---------------------------------------------------------------------------


def referring(rtype: str, ids: list[str], param: str | None = None) -> Filter:
    reference: Filter = {"u": None, "t": rtype, "i": {"$in": ids}}
    return {"ref": {"$elemMatch": {"p": param, **reference} if param else reference}}


FRONTIER = [("Patient", "b"), ("Practitioner", "d"), ("Patient", "a")]


@pytest.mark.parametrize(("rev", "expected"), [
    ([Include("Observation", "subject")],
     {"$or": [{"type": "Observation", **referring("Patient", ["a", "b"], "subject")},
              {"type": "Observation", **referring("Practitioner", ["d"], "subject")}]}),
    ([Include("Provenance", "target", "Practitioner")],
     {"type": "Provenance", **referring("Practitioner", ["d"], "target")}),
    ([Include(None, None)],
     {"$or": [referring("Patient", ["a", "b"]), referring("Practitioner", ["d"])]}),
    ([Include(None, None, "Patient"), Include("Encounter", "patient", "Patient")],
     {"$or": [referring("Patient", ["a", "b"]),
              {"type": "Encounter", **referring("Patient", ["a", "b"], "patient")}]}),
    ([Include("Provenance", "target", "Device")], FALSE),
    ([], FALSE),
])
def test_revinclude_filter(rev: list[Include], expected: Filter) -> None:
    """Resources referencing the frontier: per referenced type (ids sorted) and per
    `_revinclude` whose target type admits it; `*` drops the type or parameter test."""
    assert searcher(FakeCollection())._revinclude_filter(FRONTIER, rev) == expected


# --- document layout -----------------------------------------------------------------------

LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"
SYSTOLIC = TokenEntry("code", LOINC, "8480-6", "systolic")
MG = QuantityEntry("value-quantity", 5.0, 5.0, 5.0, UCUM, "mg", "milligram")


@pytest.mark.parametrize(("entry", "array", "subdocument"), [
    (StringEntry("name", "adam", "Ådam"), "str", {"p": "name", "v": "adam", "x": "Ådam"}),
    (SYSTOLIC, "tok", {"p": "code", "s": LOINC, "c": "8480-6", "tx": "systolic"}),
    (TokenEntry("gender", None, "male"), "tok", {"p": "gender", "c": "male"}),
    (TokenEntry("identifier", "http://s", "42", None, "http://t", "MR"), "tok",
     {"p": "identifier", "s": "http://s", "c": "42", "ts": "http://t", "tc": "MR"}),
    (ReferenceEntry("subject", "Patient", "1", "2"), "ref",
     {"p": "subject", "t": "Patient", "i": "1", "v": "2"}),
    (ReferenceEntry("subject", "Patient", "1", None, "http://x/Patient/1"), "ref",
     {"p": "subject", "t": "Patient", "i": "1", "u": "http://x/Patient/1"}),
    (ReferenceEntry("subject", None, None, None, None, "http://s", "v"), "ref",
     {"p": "subject", "is": "http://s", "iv": "v"}),
    (DateEntry("birthdate", -5, 9), "date", {"p": "birthdate", "lo": -5, "hi": 9}),
    (NumberEntry("probability", 0.5, 0.5, 0.5), "num",
     {"p": "probability", "v": 0.5, "lo": 0.5, "hi": 0.5}),
    (NumberEntry("probability", None, 0.1, float("inf")), "num",
     {"p": "probability", "lo": 0.1, "hi": float("inf")}),
    (MG, "qty", {"p": "value-quantity", "v": 5.0, "lo": 5.0, "hi": 5.0, "s": UCUM, "c": "mg",
                 "un": "milligram"}),
    (QuantityEntry("value-quantity", None, float("-inf"), 3.0, None, None, "mg"), "qty",
     {"p": "value-quantity", "lo": float("-inf"), "hi": 3.0, "un": "mg"}),
    (UriEntry("url", "http://a/b"), "uri", {"p": "url", "v": "http://a/b"}),
    (PositionEntry("near", 45.5, -5.25), "geo",
     {"p": "near", "pt": {"type": "Point", "coordinates": [-5.25, 45.5]}}),
    (CompositeEntry("code-value-quantity", (SYSTOLIC, MG)), "comp",
     {"p": "code-value-quantity",
      "k0": {"s": LOINC, "c": "8480-6", "tx": "systolic"},
      "k1": {"v": 5.0, "lo": 5.0, "hi": 5.0, "s": UCUM, "c": "mg", "un": "milligram"}}),
])
def test_entry_subdocument(entry: IndexEntry, array: str, subdocument: dict[str, Any]) -> None:
    """Each entry kind goes to its array with short field names and without None fields; a
    position is a GeoJSON Point [longitude, latitude], a composite k0/k1 subdocuments."""
    assert entry_arrays([entry]) == {array: [subdocument]}


def test_entry_arrays_group_and_collapse() -> None:
    """Entries group per array in order; duplicates collapse; `_id` and `_lastUpdated` stay
    out (they are the document's own fields)."""
    entries: list[IndexEntry] = [
        TokenEntry("_id", None, "p1"),
        StringEntry("name", "ng", "Ng"),
        TokenEntry("gender", None, "male"),
        StringEntry("family", "ng", "Ng"),
        StringEntry("name", "ng", "Ng"),
        DateEntry("_lastUpdated", 1, 1),
        CompositeEntry("code-value-quantity", (SYSTOLIC, MG)),
        CompositeEntry("code-value-quantity", (SYSTOLIC, MG)),
        TokenEntry("gender", None, "male"),
    ]
    assert entry_arrays(entries) == {
        "str": [{"p": "name", "v": "ng", "x": "Ng"}, {"p": "family", "v": "ng", "x": "Ng"}],
        "tok": [{"p": "gender", "c": "male"}],
        "comp": [{"p": "code-value-quantity",
                  "k0": {"s": LOINC, "c": "8480-6", "tx": "systolic"},
                  "k1": {"v": 5.0, "lo": 5.0, "hi": 5.0, "s": UCUM, "c": "mg",
                         "un": "milligram"}}],
    }
    assert entry_arrays([]) == {}


@pytest.mark.parametrize(("body", "deleted", "arrays"), [
    (b'{"resourceType":"Patient"}', False,
     {"str": [{"p": "name", "v": "ng", "x": "Ng"}], "tok": [{"p": "gender", "c": "male"}]}),
    (None, True, {}),
])
def test_resource_document(body: bytes | None, deleted: bool, arrays: dict[str, Any]) -> None:
    """The current version's document, keyed `Type/id`; a deletion keeps no entries."""
    entries: list[IndexEntry] = [TokenEntry("_id", None, "p1"), StringEntry("name", "ng", "Ng"),
                                 TokenEntry("gender", None, "male")]
    document = resource_document(
        resource_type="Patient", id="p1", pk=PK, version=3, last_updated="2024-01-02T03:04:05Z",
        lu=1_704_164_645_000_000, method="PUT", body=body, shard="Patient/p1", entries=entries)
    assert document == {
        "_id": "Patient/p1", "type": "Patient", "id": "p1", "pk": PK, "version": 3,
        "lastUpdated": "2024-01-02T03:04:05Z", "lu": 1_704_164_645_000_000,
        "deleted": deleted, "method": "PUT", "body": body, "shard": "Patient/p1", **arrays,
    }


def test_history_document() -> None:
    """One version's document, keyed `Type/id/version`, with no entries."""
    seq = ObjectId("65a1b2c3d4e5f60718293a4c")
    document = history_document(
        resource_type="Observation", id="o1", version=2, last_updated="2024-01-02T03:04:05Z",
        lu=1_704_164_645_000_000, seq=seq, method="DELETE", body=None, shard="Patient/p1")
    assert document == {
        "_id": "Observation/o1/2", "type": "Observation", "id": "o1", "version": 2,
        "lastUpdated": "2024-01-02T03:04:05Z", "lu": 1_704_164_645_000_000, "seq": seq,
        "method": "DELETE", "body": None, "shard": "Patient/p1", "key": None,
    }


@pytest.mark.parametrize(("rtype", "entries", "expected"), [
    pytest.param("Patient", [], "Patient/123", id="patient-own"),
    pytest.param("Patient", [ReferenceEntry("link", "Patient", "9")], "Patient/123",
                 id="patient-linked-stays-own"),
    pytest.param("Observation", [ReferenceEntry("subject", "Patient", "123")], "Patient/123",
                 id="observation-subject"),
    pytest.param("Observation", [ReferenceEntry("subject", "Patient", "123"),
                                 ReferenceEntry("patient", "Patient", "123")], "Patient/123",
                 id="observation-one-patient-twice"),
    pytest.param("Observation", [ReferenceEntry("performer", "Patient", "9"),
                                 ReferenceEntry("subject", "Patient", "123")], SHARED_SHARD,
                 id="observation-several-patients"),
    pytest.param("Observation", [ReferenceEntry("subject", "Group", "g")], "Observation/123",
                 id="observation-group-subject"),
    pytest.param("Observation", [ReferenceEntry("focus", "Patient", "9")], "Patient/9",
                 id="observation-any-reference-parameter"),
    pytest.param("Observation", [ReferenceEntry("subject", None, None, None, None, "s", "v")],
                 "Observation/123", id="observation-identifier-only"),
    pytest.param("Observation",
                 [ReferenceEntry("subject", "Patient", "7", None, "http://other/Patient/7")],
                 "Observation/123", id="observation-absolute-reference"),
    pytest.param("Practitioner", [], "Practitioner/123", id="practitioner-own"),
])
def test_shard_key(rtype: str, entries: list[IndexEntry], expected: str) -> None:
    """A Patient's own key; the one patient a resource references locally; the shared shard
    for several; otherwise the resource's own key."""
    assert shard_key(rtype, "123", entries) == expected


@pytest.mark.parametrize(("rtype", "params", "expected"), [
    pytest.param("Observation", [("subject", "Patient/1")],
                 {"shard": {"$in": ["Patient/1", SHARED_SHARD]}}, id="one-patient"),
    pytest.param("Observation", [("code", "x"), ("subject", "Patient/2,Patient/1")],
                 {"shard": {"$in": ["Patient/1", "Patient/2", SHARED_SHARD]}}, id="either-patient"),
    pytest.param("Observation", [("subject", "Patient/1,Group/g")], {}, id="not-only-patients"),
    pytest.param("Observation", [("subject", "1")], {}, id="untyped-reference"),
    pytest.param("Observation", [("subject", "http://other/fhir/Patient/1")], {}, id="absolute"),
    pytest.param("Patient", [("_id", "1")], {"shard": "Patient/1"}, id="patient-by-id"),
    pytest.param("Patient", [("link", "Patient/1")], {}, id="patient-by-reference"),
])
def test_shard_filter(rtype: str, params: list[tuple[str, str]], expected: dict[str, Any]) -> None:
    """Searches confined to given patients are routed to their shards and the shared one."""
    assert shard_filter(rtype, query(rtype, *params).clauses) == expected


def test_shard_key_of_extracted_entries() -> None:
    """Extracted from a resource: the absolute subject is skipped, the local performer used."""
    observation = {"resourceType": "Observation", "id": "o1", "status": "final",
                   "code": {"text": "bp"},
                   "subject": {"reference": "http://other/fhir/Patient/123"},
                   "performer": [{"reference": "Patient/9"}]}
    assert shard_key("Observation", "o1", extract(observation)) == "Patient/9"
    observation["performer"] = []
    assert shard_key("Observation", "o1", extract(observation)) == "Observation/o1"
