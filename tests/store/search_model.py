"""Shared helpers of the store search tests: a model of what is stored, the reference
evaluator over it (search/match.py with a Resolver), and a store driven to the last page.

`World` holds the current resources as the store returned them (meta stamped), extracts their
entries, and answers a Query with `matches()` exactly as FHIR R4 search.html reads; the tests
hold `SqliteStore.search` to the same answer. `Harness` runs a store outside pytest's event
loop, for hypothesis tests (one store reused by every example).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
from hypothesis import strategies as st

from fhir_server.search import (
    DateEntry,
    IndexEntry,
    NumberEntry,
    QuantityEntry,
    Query,
    ReferenceEntry,
    Sort,
    StringEntry,
    TokenEntry,
    UriEntry,
    default_registry,
    extract,
    matches,
    parse_query,
)
from fhir_server.store.base import Delete, Operation, SearchPage, Store, Version, Write
from tests.store.conftest import DOUBLE, DOUBLE_LACKS, STORES, dispose

T = TypeVar("T")
Key = tuple[str, str]  # (resource type, id)

# Fixed "now" of `ap` date windows (2023-11-14T22:13:20Z), so queries parse identically.
NOW = 1_700_000_000_000_000
PAGE = 7  # small pages: every multi-page search also exercises the keyset cursor


def query(rtype: str | None, *params: tuple[str, str]) -> Query:
    """`params` parsed by the real parser; any issue fails the test (the input is valid)."""
    parsed, issues = parse_query(rtype, list(params), default_registry(), now=NOW)
    assert issues == [], [i.diagnostics for i in issues]
    return parsed


def write(resource: dict[str, Any]) -> Write:
    """A Write of `resource` (which carries its type and id) with its index entries."""
    return Write(resource["resourceType"], resource["id"], resource, extract(resource))


def entries_of(version: Version) -> list[IndexEntry]:
    """The entries of a stored version, read back from its body (meta.lastUpdated included)."""
    assert version.body is not None
    return extract(orjson.loads(version.body))


class World:
    """The current resources of a store and the reference answer to any Query over them."""

    def __init__(self) -> None:
        self.entries: dict[Key, list[IndexEntry]] = {}
        self.bodies: dict[Key, dict[str, Any]] = {}
        self.order: dict[Key, int] = {}  # creation order (the store's pk order)

    def record(self, version: Version) -> None:
        key = (version.resource_type, version.id)
        if version.deleted:
            self.entries.pop(key, None)
            self.bodies.pop(key, None)
            return
        assert version.body is not None
        self.order.setdefault(key, len(self.order))
        self.bodies[key] = orjson.loads(version.body)
        self.entries[key] = extract(self.bodies[key])

    # -- the Resolver protocol of search/match.py ----------------------------------------

    def entries_for(self, resource_type: str, resource_id: str) -> Sequence[IndexEntry] | None:
        return self.entries.get((resource_type, resource_id))

    def referencing(
        self, source_type: str, param: str, target_type: str, target_id: str
    ) -> Iterable[Sequence[IndexEntry]]:
        """Resources of `source_type` with a local reference `param` to the target."""
        for (rtype, _), entries in self.entries.items():
            if rtype == source_type and any(
                type(e) is ReferenceEntry and e.param == param and e.url is None
                and e.type == target_type and e.id == target_id
                for e in entries
            ):
                yield entries

    def expected(self, q: Query) -> set[Key]:
        """The keys `matches()` accepts: the reference answer."""
        types = {q.resource_type} if q.resource_type else set(q.types) or None
        resolver = _Resolver(self)
        return {
            key for key, entries in self.entries.items()
            if (types is None or key[0] in types)
            and matches(q, entries, resolver, resource_type=key[0])
        }


class _Resolver:
    """Adapts World to search.Resolver (whose lookup method is called `entries`)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def entries(self, resource_type: str, resource_id: str) -> Sequence[IndexEntry] | None:
        return self.world.entries_for(resource_type, resource_id)

    def referencing(
        self, source_type: str, param: str, target_type: str, target_id: str
    ) -> Iterable[Sequence[IndexEntry]]:
        return self.world.referencing(source_type, param, target_type, target_id)


async def load(store: Store, world: World, resources: Iterable[dict[str, Any]]) -> None:
    """Write `resources` in one unit of work and record what the store stamped."""
    results = await store.commit([write(r) for r in resources])
    for result in results:
        assert result.version is not None
        world.record(result.version)


async def commit(store: Store, world: World, operations: Sequence[Operation]) -> None:
    """Apply `operations` in one unit of work and record every version written."""
    for result in await store.commit(operations):
        for version in result.versions:
            world.record(version)


async def replace_all(store: Store, world: World, resources: Sequence[dict[str, Any]]) -> None:
    """Make `resources` the only current ones: delete the others, write these (one unit)."""
    latest = {(r["resourceType"], r["id"]): r for r in resources}  # the last one of a key wins
    gone = [Delete(t, i) for t, i in world.entries if (t, i) not in latest]
    results = await store.commit([*gone, *(write(r) for r in latest.values())])
    for result in results:
        for version in result.versions:
            world.record(version)


async def pages(store: Store, q: Query, count: int = PAGE) -> list[SearchPage]:
    """Every page of `q` (forwards, `count` per page), failing on a cursor loop."""
    q = dataclasses.replace(q, count=count)
    found = [await store.search(q)]
    while found[-1].next_cursor is not None:
        assert len(found) < 1000, "the next cursor does not advance"
        found.append(await store.search(q, found[-1].next_cursor))
    return found


async def all_keys(store: Store, q: Query, count: int = PAGE) -> list[Key]:
    """Every match of `q` in store order, each page fetched through the cursor."""
    return [(v.resource_type, v.id) for page in await pages(store, q, count) for v in page.matches]


async def ids(store: Store, q: Query) -> list[str]:
    """The ids of every match, in store order."""
    return [key[1] for key in await all_keys(store, q)]


class Dataset:
    """A store with its World, for example-based tests: every search is checked against the
    reference evaluator before the test compares it with the spec's expectation."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.world = World()

    async def load(self, *resources: dict[str, Any]) -> None:
        await load(self.store, self.world, resources)

    async def delete(self, rtype: str, rid: str) -> None:
        [result] = await self.store.commit([Delete(rtype, rid)])
        for version in result.versions:
            self.world.record(version)

    async def search(self, rtype: str | None, *params: tuple[str, str]) -> set[str]:
        """Ids of every match (all pages); fails if the store and match.py disagree."""
        q = query(rtype, *params)
        found = await all_keys(self.store, q)
        assert len(found) == len(set(found)), f"duplicates: {found}"
        assert set(found) == self.world.expected(q), f"store {sorted(found)} != match.py {sorted(self.world.expected(q))}"
        return {rid for _, rid in found}

    async def page(self, rtype: str | None, *params: tuple[str, str]) -> SearchPage:
        """The first page of a search (for `_include`, `_revinclude`, `_total`)."""
        return await self.store.search(query(rtype, *params))


class Harness:
    """A store driven from synchronous code (hypothesis tests), on its own loop."""

    def __init__(self, store: Store, lacks: tuple[type, ...] = ()) -> None:
        self.runner = asyncio.Runner()
        self.store = store
        self.lacks = lacks  # predicate types this store (a double) cannot evaluate
        self.world = World()
        self.run(self.store.open())

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(work)

    def replace_all(self, resources: Sequence[dict[str, Any]]) -> None:
        self.run(replace_all(self.store, self.world, resources))

    def keys(self, q: Query, count: int = PAGE) -> list[Key]:
        return self.run(all_keys(self.store, q, count))

    def close(self) -> None:
        self.run(dispose(self.store))
        self.runner.close()


def harness(kind: str, folder: Path) -> Iterator[Harness]:
    """Fixture body: one Harness on a store of `kind` (conftest.STORES) for a module's tests."""
    opened = Harness(STORES[kind](folder), DOUBLE_LACKS if kind == DOUBLE else ())
    try:
        yield opened
    finally:
        opened.close()


# --- generated resources --------------------------------------------------------------------
# Small vocabularies shared by resources and queries, so generated queries often match.

IDS: dict[str, tuple[str, ...]] = {
    "Patient": ("p0", "p1", "p2", "p3", "p4"),
    "Practitioner": ("d0", "d1", "d2"),
    "Organization": ("g0", "g1"),
    "Observation": ("o0", "o1", "o2", "o3", "o4", "o5"),
    "Condition": ("c0", "c1", "c2"),
    "Location": ("l0", "l1", "l2", "l3"),
    "Encounter": ("e0", "e1"),
    "RiskAssessment": ("r0", "r1", "r2"),
}
NAMES = ("Dupont", "dupont", "Hélène", "HELENE", "Müller", "Mueller", "Ærø", "Straße",
         "van der Berg", "O'Brien", "Łukasz", "Smith, Jr")
CITIES = ("Paris", "Saint-Étienne", "São Paulo", "Köln", "paris")
SYSTEMS = ("urn:oid:1.2.250.1.213.1.4.8", "http://hospital.org/mrn")
ID_VALUES = ("123", "ABC", "abc", "x-1")
TYPE_CODE = ("http://terminology.hl7.org/CodeSystem/v2-0203", ("MR", "SS"))
LOINC, SNOMED, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"
CODES: tuple[tuple[str | None, str, str | None], ...] = (
    (LOINC, "8867-4", "Heart rate"),
    (LOINC, "8480-6", "Systolic blood pressure"),
    (SNOMED, "8867-4", "Other system, same code"),
    (None, "8867-4", None),
    (SNOMED, "254637007", "Non-small cell lung cancer"),
)
UNITS: tuple[tuple[str | None, str | None, str | None], ...] = (  # (system, code, unit)
    (UCUM, "mg", "mg"), (UCUM, "mm[Hg]", "mmHg"), (None, None, "mg"), (UCUM, "kg", "kilogram"),
)
AMOUNTS = (5.4, 5.0, 100.0, 99.5, 100.5, 0.1, 120, 3, -3.25, 1000)
YEARS = (1961, 1962, 1963, 2020, 2021)
PROFILES = ("http://example.org/fhir/StructureDefinition/a",
            "http://example.org/fhir/StructureDefinition/a/b", "http://hl7.org/fhir/x")
TAGS = (("http://example.org/tags", "trial"), ("http://example.org/tags", "TRIAL"), (None, "trial"))
POINTS = ((48.8566, 2.3522), (48.86, 2.36), (45.764, 4.8357), (-33.8688, 151.2093))


BOOLEANS = st.booleans()


@functools.lru_cache(maxsize=2048)
def _sampled(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


def choice(options: Sequence[T]) -> st.SearchStrategy[T]:
    """`st.sampled_from`, built once per tuple of options: building strategies anew for
    every draw was most of the cost of generating a data set."""
    if isinstance(options, tuple):
        try:
            return _sampled(options)
        except TypeError:  # unhashable options (dicts)
            pass
    return st.sampled_from(options)


@functools.lru_cache(maxsize=256)
def between(low: int, high: int) -> st.SearchStrategy[int]:
    """`st.integers(low, high)`, built once."""
    return st.integers(low, high)


@st.composite
def dates(draw: st.DrawFn, with_time: bool = True) -> str:
    """A FHIR date (year, month or day precision) or, `with_time`, a dateTime."""
    year = draw(choice(YEARS))
    month, day = draw(choice((1, 4, 12))), draw(choice((1, 17, 28)))
    precision = draw(choice(("y", "m", "d", "s", "f") if with_time else ("y", "m", "d")))
    if precision == "y":
        return f"{year}"
    if precision == "m":
        return f"{year}-{month:02d}"
    text = f"{year}-{month:02d}-{day:02d}"
    if precision == "d":
        return text
    hour = draw(choice((0, 10, 23)))
    zone = draw(choice(("Z", "+02:00", "-05:00")))
    frac = ".5" if precision == "f" else ""
    return f"{text}T{hour:02d}:30:00{frac}{zone}"


def _reference(draw: st.DrawFn, rtype: str) -> dict[str, Any]:
    """Relative (sometimes versioned), absolute, identifier-only or contained references."""
    rid = draw(choice(IDS[rtype] + ("zz",)))  # "zz" never exists: dangling
    kind = draw(choice(("rel", "rel", "rel", "version", "abs", "ident", "both", "contained")))
    identifier = {"system": draw(choice(SYSTEMS)), "value": draw(choice(ID_VALUES))}
    forms: dict[str, dict[str, Any]] = {
        "rel": {"reference": f"{rtype}/{rid}"},
        "version": {"reference": f"{rtype}/{rid}/_history/2"},
        "abs": {"reference": f"http://other.org/fhir/{rtype}/{rid}"},
        "ident": {"identifier": identifier},
        "both": {"reference": f"{rtype}/{rid}", "identifier": identifier},
        "contained": {"reference": "#c1"},
    }
    return forms[kind]


def _coding(draw: st.DrawFn) -> dict[str, Any]:
    system, code, display = draw(choice(CODES))
    coding = {"code": code} if system is None else {"system": system, "code": code}
    if display is not None and draw(BOOLEANS):
        coding["display"] = display
    return coding


def _concept(draw: st.DrawFn) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [_coding(draw) for _ in range(draw(between(1, 2)))]}
    if draw(BOOLEANS):
        concept["text"] = draw(choice(("Heart rate", "Hémoglobine", "lung")))
    return concept


def _quantity(draw: st.DrawFn) -> dict[str, Any]:
    system, code, unit = draw(choice(UNITS))
    quantity: dict[str, Any] = {"value": draw(choice(AMOUNTS))}
    quantity.update({k: v for k, v in (("system", system), ("code", code), ("unit", unit)) if v})
    if draw(between(0, 5)) == 0:
        quantity["comparator"] = draw(choice(("<", ">=")))
    return quantity


def _period(draw: st.DrawFn) -> dict[str, Any]:
    period = {"start": draw(dates()), "end": draw(dates())}
    drop = draw(choice(("", "", "start", "end")))
    period.pop(drop, None)
    return period


def _meta(draw: st.DrawFn, resource: dict[str, Any]) -> None:
    meta: dict[str, Any] = {}
    if draw(BOOLEANS):
        meta["profile"] = draw(st.lists(st.sampled_from(PROFILES), max_size=2, unique=True))
    if draw(BOOLEANS):
        tags = draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True))
        meta["tag"] = [{"code": c} if s is None else {"system": s, "code": c} for s, c in tags]
    if draw(between(0, 3)) == 0:
        meta["source"] = draw(choice(("http://example.org/source#a", "urn:uuid:1234")))
    if meta:
        resource["meta"] = meta


def _human(draw: st.DrawFn) -> dict[str, Any]:
    name: dict[str, Any] = {"family": draw(choice(NAMES))}
    name["given"] = draw(st.lists(st.sampled_from(NAMES), max_size=2))
    return name


def _identifier(draw: st.DrawFn) -> dict[str, Any]:
    identifier: dict[str, Any] = {"value": draw(choice(ID_VALUES))}
    if draw(between(0, 3)):
        identifier["system"] = draw(choice(SYSTEMS))
    if draw(BOOLEANS):
        identifier["type"] = {"coding": [{"system": TYPE_CODE[0], "code": draw(choice(TYPE_CODE[1]))}]}
    return identifier


def _optional(draw: st.DrawFn, resource: dict[str, Any], key: str, make: Any) -> None:
    """Sets `key` three times out of four (dense data: more queries find something)."""
    if draw(between(0, 3)):
        resource[key] = make(draw)


def _patient(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Patient", "id": rid}
    _optional(draw, r, "name", lambda d: [_human(d) for _ in range(d(between(1, 2)))])
    _optional(draw, r, "birthDate", lambda d: d(dates(with_time=False)))
    _optional(draw, r, "gender", lambda d: d(choice(("male", "female", "other", "unknown"))))
    _optional(draw, r, "active", lambda d: d(BOOLEANS))
    _optional(draw, r, "identifier", lambda d: [_identifier(d) for _ in range(d(between(1, 2)))])
    _optional(draw, r, "telecom", lambda d: [{"system": d(choice(("phone", "email"))),
                                               "value": d(choice(("555-1234", "a@b.org")))}])
    _optional(draw, r, "address", lambda d: [{"city": d(choice(CITIES)), "line": ["1 rue Émile Zola"],
                                               "postalCode": d(choice(("75001", "69002")))}])
    _optional(draw, r, "generalPractitioner", lambda d: [_reference(d, d(choice(("Practitioner", "Organization"))))])
    _optional(draw, r, "managingOrganization", lambda d: _reference(d, "Organization"))
    _optional(draw, r, "link", lambda d: [{"other": _reference(d, "Patient"), "type": "seealso"}])
    return r


def _practitioner(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Practitioner", "id": rid}
    _optional(draw, r, "name", lambda d: [_human(d)])
    _optional(draw, r, "identifier", lambda d: [_identifier(d)])
    return r


def _organization(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Organization", "id": rid}
    _optional(draw, r, "name", lambda d: d(choice(NAMES)))
    _optional(draw, r, "partOf", lambda d: _reference(d, "Organization"))
    return r


def _component(draw: st.DrawFn) -> dict[str, Any]:
    return {"code": {"coding": [_coding(draw)]}, "valueQuantity": _quantity(draw)}


def _observation(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Observation", "id": rid, "status": draw(choice(("final", "amended")))}
    _optional(draw, r, "code", _concept)
    _optional(draw, r, "subject", lambda d: _reference(d, d(choice(("Patient", "Patient", "Location")))))
    _optional(draw, r, "encounter", lambda d: _reference(d, "Encounter"))
    _optional(draw, r, "performer", lambda d: [_reference(d, "Practitioner")])
    _optional(draw, r, "hasMember", lambda d: [_reference(d, "Observation")])
    effective = draw(choice(("effectiveDateTime", "effectivePeriod", None)))
    if effective == "effectiveDateTime":
        r[effective] = draw(dates())
    elif effective == "effectivePeriod":
        r[effective] = _period(draw)
    value = draw(choice(("valueQuantity", "valueQuantity", "valueString", "valueCodeableConcept", None)))
    if value == "valueQuantity":
        r[value] = _quantity(draw)
    elif value == "valueString":
        r[value] = draw(choice(NAMES))
    elif value == "valueCodeableConcept":
        r[value] = _concept(draw)
    _optional(draw, r, "component", lambda d: [_component(d) for _ in range(d(between(1, 2)))])
    return r


def _condition(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Condition", "id": rid}
    _optional(draw, r, "code", _concept)
    _optional(draw, r, "subject", lambda d: _reference(d, "Patient"))
    onset = draw(choice(("onsetDateTime", "onsetPeriod", "onsetAge", "onsetString", None)))
    if onset == "onsetDateTime":
        r[onset] = draw(dates())
    elif onset == "onsetPeriod":
        r[onset] = _period(draw)
    elif onset == "onsetAge":
        r[onset] = {"value": draw(choice(AMOUNTS)), "system": UCUM, "code": "a", "unit": "years"}
    elif onset == "onsetString":
        r[onset] = draw(choice(NAMES))
    _optional(draw, r, "recordedDate", lambda d: d(dates()))
    return r


def _location(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Location", "id": rid}
    _optional(draw, r, "name", lambda d: d(choice(CITIES)))
    if draw(between(0, 3)):
        lat, lon = draw(choice(POINTS))
        shift = draw(choice((0.0, 0.001, 0.03, -0.2)))
        r["position"] = {"latitude": lat + shift, "longitude": lon - shift}
    _optional(draw, r, "partOf", lambda d: _reference(d, "Location"))
    return r


def _encounter(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Encounter", "id": rid, "status": "finished"}
    _optional(draw, r, "subject", lambda d: _reference(d, "Patient"))
    _optional(draw, r, "period", _period)
    _optional(draw, r, "length", lambda d: {"value": d(choice(AMOUNTS)), "system": UCUM, "code": "min"})
    return r


def _risk(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "RiskAssessment", "id": rid, "status": "final"}
    _optional(draw, r, "subject", lambda d: _reference(d, "Patient"))
    predictions: list[dict[str, Any]] = []
    for _ in range(draw(between(0, 2))):
        if draw(BOOLEANS):
            predictions.append({"probabilityDecimal": draw(choice((0.1, 0.5, 0.55, 0.05, 1)))})
        else:
            low, high = sorted(draw(st.lists(st.sampled_from((0.1, 0.5, 0.9)), min_size=2, max_size=2)))
            predictions.append({"probabilityRange": {"low": {"value": low}, "high": {"value": high}}})
    if predictions:
        r["prediction"] = predictions
    return r


MAKERS = {
    "Patient": _patient, "Practitioner": _practitioner, "Organization": _organization,
    "Observation": _observation, "Condition": _condition, "Location": _location,
    "Encounter": _encounter, "RiskAssessment": _risk,
}


@st.composite
def resources(draw: st.DrawFn, rtype: str, rid: str) -> dict[str, Any]:
    """One resource of `rtype` with id `rid`, meta profiles and tags included."""
    resource = MAKERS[rtype](draw, rid)
    _meta(draw, resource)
    return resource


@st.composite
def worlds(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A small set of resources: a subset of each type's id pool, most of it for the types
    queries test most."""
    out = []
    for rtype, pool in IDS.items():
        least = min(len(pool), 3 if rtype in ("Patient", "Observation") else 1)
        for rid in draw(st.lists(st.sampled_from(pool), unique=True, min_size=least, max_size=len(pool))):
            out.append(draw(resources(rtype, rid)))
    return out


# --- the order of a sorted search (search.html#sort) ---------------------------------------------


def sort_value(entries: Sequence[IndexEntry], rtype: str, sort: Sort) -> Any:
    """The value a resource sorts by for one `_sort` key, None when it has none.

    A repeated element sorts by its lowest value ascending and its highest descending; a date
    or number range by its start ascending and its end descending (store/sqlite/query.py).
    """
    if sort.param == "_id":
        return next(e.code for e in entries if e.param == "_id" and isinstance(e, TokenEntry))
    param = default_registry().get(rtype, sort.param)
    assert param is not None, sort.param
    values: list[Any] = []
    for e in entries:
        if e.param != sort.param:
            continue
        if isinstance(e, (DateEntry, NumberEntry, QuantityEntry)):
            values.append(e.high if sort.descending else e.low)
        elif isinstance(e, (StringEntry, UriEntry)):
            values.append(e.value)
        elif isinstance(e, TokenEntry) and e.code is not None:
            values.append(e.code)
        elif isinstance(e, ReferenceEntry) and e.id is not None:
            values.append(e.id)
    if not values:
        return None
    return max(values) if sort.descending else min(values)


def sorted_keys(world: World, keys: Iterable[Key], sorts: Sequence[Sort]) -> list[Key]:
    """`keys` in the order of `sorts`: missing values last either way, ties by creation."""

    def compare(a: Key, b: Key) -> int:
        for sort in sorts:
            x = sort_value(world.entries[a], a[0], sort)
            y = sort_value(world.entries[b], b[0], sort)
            if x == y:
                continue
            if x is None or y is None:
                return 1 if x is None else -1
            before = x < y if not sort.descending else x > y
            return -1 if before else 1
        return world.order[a] - world.order[b]

    return sorted(keys, key=functools.cmp_to_key(compare))


def uses(q: Query, kinds: tuple[type, ...]) -> bool:
    """Whether any predicate of `q`, at any depth (chains, _has, :not, composites), is of `kinds`."""
    def walk(p: Any) -> bool:
        if isinstance(p, kinds):
            return True
        inner = getattr(p, "inner", None)
        nested = getattr(p, "any_of", ()) + getattr(p, "parts", ())
        return (inner is not None and walk(inner)) or any(walk(n) for n in nested)

    return bool(kinds) and any(walk(p) for c in q.clauses for p in c.any_of)
