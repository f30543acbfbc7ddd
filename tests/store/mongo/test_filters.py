"""Query AST -> MongoDB filters (store/mongo/filters.py), compared exactly.

Each case pins the filter one predicate, clause or query translates to: the entry array it
tests (`$elemMatch` on the short field names of store/mongo/layout.py), the conditions of
search/params/*.match_* (the same ones store/sqlite/predicates.py writes in SQL), constant
folding, and the inner searches of chains and `_has` made through a recording Resolver.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.model.errors import FhirError, Kind
from fhir_server.search import (
    Chain,
    Clause,
    CompositePredicate,
    DatePredicate,
    Has,
    Missing,
    NearPredicate,
    Not,
    NumberPredicate,
    Predicate,
    Prefix,
    QuantityPredicate,
    StringPredicate,
    TokenPredicate,
    default_registry,
)
from fhir_server.search.params.special import EARTH_RADIUS_KM
from fhir_server.store.mongo.filters import (
    FALSE,
    MAX_RESOLVED,
    TRUE,
    Filter,
    FilterBuilder,
    all_of,
    any_of,
    condition,
    date_filter,
    starts_with,
)
from tests.store.search_model import query

REGISTRY = default_registry()
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


class FakeResolver:
    """Records every inner search of chains and `_has`, and answers from fixed id lists."""

    def __init__(self, ids: dict[str, list[str]] | None = None,
                 referenced: list[str] | None = None) -> None:
        self.answers = ids or {}
        self.referencing = referenced or []
        self.calls: list[tuple[Any, ...]] = []

    async def ids(self, resource_type: str, where: Filter) -> list[str]:
        self.calls.append(("ids", resource_type, where))
        return list(self.answers.get(resource_type, []))

    async def referenced(self, source_type: str, param: str, target_type: str,
                         where: Filter) -> list[str]:
        self.calls.append(("referenced", source_type, param, target_type, where))
        return list(self.referencing)


async def build(rtype: str, *params: tuple[str, str],
                resolver: FakeResolver | None = None) -> Filter:
    """The filter of a parsed type-level search (no inner searches expected by default)."""
    parsed = query(rtype, *params)
    return await FilterBuilder(REGISTRY, resolver or FakeResolver()).clauses(parsed.clauses, rtype)


async def translate(p: Predicate, rtype: str, resolver: FakeResolver | None = None) -> Filter:
    """The filter of one AST predicate over `rtype` documents."""
    return await FilterBuilder(REGISTRY, resolver or FakeResolver()).predicate(p, rtype)


def elem(array: str, param: str, **test: Any) -> Filter:
    """`$elemMatch` on the entries of `param` in `array` (`test` keys are entry fields)."""
    return {array: {"$elemMatch": {"p": param, **test}}}


def string_entry(param: str, prefix: str, upper: str) -> Filter:
    return elem("str", param, v={"$gte": prefix, "$lt": upper})


# --- constant folding and combinators ------------------------------------------------------


@pytest.mark.parametrize(("parts", "expected"), [
    ((), {}),
    (({}, {}), {}),
    (({"a": 1}, {}), {"a": 1}),
    (({"a": 1}, {"b": 2}), {"a": 1, "b": 2}),
    (({"a": 1}, {"a": 2}), {"$and": [{"a": 1}, {"a": 2}]}),
    (({"a": 1}, {}, {"b": 2}, {"a": 3}), {"$and": [{"a": 1}, {"b": 2}, {"a": 3}]}),
    (({"a": 1}, {"_id": {"$in": []}}), {"_id": {"$in": []}}),
    (({"_id": {"$in": []}}, {}), {"_id": {"$in": []}}),
])
def test_all_of(parts: tuple[Filter, ...], expected: Filter) -> None:
    """AND: TRUE parts drop, any FALSE wins, disjoint keys merge, a key clash gives `$and`."""
    copies = [dict(p) for p in parts]
    assert all_of(*parts) == expected
    assert list(parts) == copies  # the parts are not modified by merging


@pytest.mark.parametrize(("parts", "expected"), [
    ([], {"_id": {"$in": []}}),
    ([{"_id": {"$in": []}}], {"_id": {"$in": []}}),
    ([{"a": 1}, {}], {}),
    ([{"a": 1}, {"_id": {"$in": []}}], {"a": 1}),
    ([{"a": 1}, {"a": 2}], {"$or": [{"a": 1}, {"a": 2}]}),
    ([{"a": 1}, {"_id": {"$in": []}}, {"b": 2}], {"$or": [{"a": 1}, {"b": 2}]}),
])
def test_any_of(parts: list[Filter], expected: Filter) -> None:
    """OR: any TRUE part wins, FALSE parts drop, one left is returned bare, several `$or`."""
    assert any_of(parts) == expected


def test_constants() -> None:
    """TRUE is the empty filter, FALSE one no document matches (an `_id` in no list)."""
    assert TRUE == {}
    assert FALSE == {"_id": {"$in": []}}
    assert MAX_RESOLVED == 100_000


@pytest.mark.parametrize(("prefix", "expected"), [
    ("abc", {"v": {"$gte": "abc", "$lt": "abd"}}),
    ("", {"v": {"$gte": ""}}),
    ("a\U0010ffff", {"v": {"$gte": "a\U0010ffff", "$lt": "b"}}),
    ("\U0010ffff\U0010ffff", {"v": {"$gte": "\U0010ffff\U0010ffff"}}),
    ("a\ud7ff", {"v": {"$gte": "a\ud7ff", "$lt": "a\ue000"}}),
])
def test_starts_with(prefix: str, expected: Filter) -> None:
    """A prefix becomes the code point range [prefix, successor): the last character that
    can grow is incremented (skipping surrogates), none left means no upper bound."""
    assert starts_with("v", prefix) == expected


# --- every parameter type, parsed from the query string ---------------------------------


PARSED: list[Any] = [
    pytest.param("Patient", ("name", "Ådam"), string_entry("name", "adam", "adan"),
                 id="string-normalized-starts-with"),
    pytest.param("Patient", ("name:exact", "Ådam"), elem("str", "name", v="adam", x="Ådam"),
                 id="string-exact"),
    pytest.param("Patient", ("name:contains", "a.b"),
                 elem("str", "name", v={"$regex": "a\\.b"}), id="string-contains-escaped"),
    pytest.param("Patient", ("identifier", "http://s|123"),
                 elem("tok", "identifier", c="123", s="http://s"), id="token-system-code"),
    pytest.param("Patient", ("identifier", "|123"),
                 elem("tok", "identifier", c="123", s=None), id="token-no-system"),
    pytest.param("Patient", ("identifier", "http://s|"),
                 elem("tok", "identifier", s="http://s"), id="token-any-code"),
    pytest.param("Patient", ("gender", "male"), elem("tok", "gender", c="male"),
                 id="token-code"),
    pytest.param("Observation", ("code:text", "Blood  Pressure"),
                 elem("tok", "code", tx={"$gte": "blood pressure", "$lt": "blood pressurf"}),
                 id="token-text"),
    pytest.param("Patient", ("identifier:of-type", "http://t|MR|42"),
                 elem("tok", "identifier", ts="http://t", tc="MR", c="42"), id="token-of-type"),
    pytest.param("Observation", ("subject", "Patient/1"),
                 elem("ref", "subject", u=None, i="1", t="Patient"), id="reference-relative"),
    pytest.param("Observation", ("patient", "abc"),
                 elem("ref", "patient", u=None, i="abc", t="Patient"),
                 id="reference-id-single-target"),
    pytest.param("Patient", ("general-practitioner", "abc"),
                 elem("ref", "general-practitioner", u=None, i="abc"),
                 id="reference-id-any-type"),
    pytest.param("Observation", ("subject", "Patient/1/_history/2"),
                 elem("ref", "subject", v="2", u=None, i="1", t="Patient"),
                 id="reference-version"),
    pytest.param("Observation", ("subject", "http://other/fhir/Patient/1"),
                 elem("ref", "subject", u="http://other/fhir/Patient/1"),
                 id="reference-absolute"),
    pytest.param("Library", ("depends-on", "http://x|1.0"),
                 elem("ref", "depends-on", v="1.0", u="http://x"), id="reference-canonical"),
    pytest.param("Observation", ("subject:identifier", "http://s|v"),
                 elem("ref", "subject", iv="v", **{"is": "http://s"}),
                 id="reference-identifier"),
    pytest.param("Observation", ("subject:identifier", "|v"),
                 elem("ref", "subject", iv="v", **{"is": None}),
                 id="reference-identifier-no-system"),
    pytest.param("Observation", ("subject:identifier", "v"),
                 elem("ref", "subject", iv="v"), id="reference-identifier-any-system"),
    pytest.param("Patient", ("birthdate", "ap2020-01-01"),
                 elem("date", "birthdate", lo={"$lte": 1_590_139_519_999_999},
                      hi={"$gte": 1_565_620_480_000_000}), id="date-ap-widened-at-parse"),
    pytest.param("Observation", ("date", "2020"),
                 elem("date", "date", lo={"$gte": 1_577_836_800_000_000},
                      hi={"$lte": 1_609_459_199_999_999}), id="date-year"),
    pytest.param("RiskAssessment", ("probability", "gt0.5"),
                 elem("num", "probability", hi={"$gt": 0.5}), id="number-gt"),
    pytest.param("RiskAssessment", ("probability", "0.5"),
                 elem("num", "probability", lo={"$gte": 0.45}, hi={"$lt": 0.55}),
                 id="number-eq-precision"),
    pytest.param("Observation", ("value-quantity", f"5.4|{UCUM}|mg"),
                 elem("qty", "value-quantity", s=UCUM, c="mg", lo={"$gte": 5.35},
                      hi={"$lt": 5.45}), id="quantity-system-code"),
    pytest.param("Observation", ("value-quantity", "le5.4||mg"),
                 elem("qty", "value-quantity", lo={"$lte": 5.4},
                      **{"$or": [{"c": "mg"}, {"un": "mg"}]}), id="quantity-code-or-unit"),
    pytest.param("Observation", ("value-quantity", "sa5.4"),
                 elem("qty", "value-quantity", lo={"$gte": 5.45}), id="quantity-any-unit"),
    pytest.param("ValueSet", ("url", "http://a/b"), elem("uri", "url", v="http://a/b"),
                 id="uri-eq"),
    pytest.param("ValueSet", ("url:below", "http://a/b"),
                 elem("uri", "url", v={"$gte": "http://a/b", "$lt": "http://a/c"}),
                 id="uri-below"),
    pytest.param("ValueSet", ("url:above", "http://a"),
                 elem("uri", "url", v={"$in": ["", "h", "ht", "htt", "http", "http:",
                                              "http:/", "http://", "http://a"]}),
                 id="uri-above"),
    pytest.param("Location", ("near", "45|5|10|km"),
                 elem("geo", "near", pt={"$geoWithin": {"$centerSphere": [
                     [5.0, 45.0], 10.0 / EARTH_RADIUS_KM]}}), id="near-km"),
    pytest.param("Location", ("near", "-33.5|151.25|500|m"),
                 elem("geo", "near", pt={"$geoWithin": {"$centerSphere": [
                     [151.25, -33.5], 0.5 / EARTH_RADIUS_KM]}}), id="near-metres"),
    pytest.param("Observation", ("code-value-quantity", f"{LOINC}|8480-6$gt100"),
                 {"comp": {"$elemMatch": {"p": "code-value-quantity", "k0.c": "8480-6",
                                          "k0.s": LOINC, "k1.hi": {"$gt": 100.0}}}},
                 id="composite-token-quantity"),
    pytest.param("Observation", ("code-value-date", "8480-6$ge2020"),
                 {"comp": {"$elemMatch": {"p": "code-value-date", "k0.c": "8480-6", "$or": [
                     {"k1.hi": {"$gt": 1_609_459_199_999_999}},
                     {"k1.lo": {"$gte": 1_577_836_800_000_000}}]}}},
                 id="composite-token-date"),
    pytest.param("Patient", ("gender:missing", "true"), {"tok.p": {"$ne": "gender"}},
                 id="missing-true"),
    pytest.param("Patient", ("gender:missing", "false"), {"tok.p": "gender"},
                 id="missing-false"),
    pytest.param("Patient", ("birthdate:missing", "true"), {"date.p": {"$ne": "birthdate"}},
                 id="missing-date"),
    pytest.param("Location", ("near:missing", "false"), {"geo.p": "near"},
                 id="missing-near"),
    pytest.param("Observation", ("code-value-quantity:missing", "true"),
                 {"comp.p": {"$ne": "code-value-quantity"}}, id="missing-composite"),
    pytest.param("Patient", ("_id:missing", "true"), FALSE, id="missing-id-true"),
    pytest.param("Patient", ("_lastUpdated:missing", "false"), TRUE,
                 id="missing-lastUpdated-false"),
    pytest.param("Patient", ("gender:not", "male"),
                 {"$nor": [elem("tok", "gender", c="male")]}, id="not"),
    pytest.param("Patient", ("gender:not", "male,female"),
                 {"$nor": [{"$or": [elem("tok", "gender", c="male"),
                                    elem("tok", "gender", c="female")]}]}, id="not-any-of"),
    pytest.param("Patient", ("_id", "123"), {"_id": "Patient/123"}, id="id"),
    pytest.param("Patient", ("_id", "|123"), {"_id": "Patient/123"}, id="id-no-system"),
    pytest.param("Patient", ("_id", "http://s|123"), FALSE, id="id-with-system"),
    pytest.param("Patient", ("_lastUpdated", "gt2020"), {"lu": {"$gt": 1_609_459_199_999_999}},
                 id="lastUpdated"),
    pytest.param("Patient", ("gender", "male,female"),
                 {"$or": [elem("tok", "gender", c="male"), elem("tok", "gender", c="female")]},
                 id="comma-or"),
    pytest.param("Patient", ("_id", "1,2"), {"$or": [{"_id": "Patient/1"},
                                                     {"_id": "Patient/2"}]}, id="id-or"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("rtype", "param", "expected"), PARSED)
async def test_parsed_parameter(rtype: str, param: tuple[str, str], expected: Filter) -> None:
    """One parsed search parameter -> its exact filter over `rtype` resource documents."""
    assert await build(rtype, param) == expected


# --- prefixes ------------------------------------------------------------------------------

DATE_LOW, DATE_HIGH = 100, 199
DATE_EQ: Filter = {"lo": {"$gte": DATE_LOW}, "hi": {"$lte": DATE_HIGH}}
DATE_PREFIXES: list[tuple[Prefix, Filter]] = [
    ("eq", DATE_EQ),
    ("ne", {"$nor": [DATE_EQ]}),
    ("gt", {"hi": {"$gt": DATE_HIGH}}),
    ("lt", {"lo": {"$lt": DATE_LOW}}),
    ("ge", {"$or": [{"hi": {"$gt": DATE_HIGH}}, {"lo": {"$gte": DATE_LOW}}]}),
    ("le", {"$or": [{"lo": {"$lt": DATE_LOW}}, {"hi": {"$lte": DATE_HIGH}}]}),
    ("sa", {"lo": {"$gt": DATE_HIGH}}),
    ("eb", {"hi": {"$lt": DATE_LOW}}),
    ("ap", {"lo": {"$lte": DATE_HIGH}, "hi": {"$gte": DATE_LOW}}),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("prefix", "test"), DATE_PREFIXES)
async def test_date_prefix(prefix: Prefix, test: Filter) -> None:
    """search/params/date.match_date per prefix over the entry range fields lo/hi."""
    p = DatePredicate("birthdate", prefix, DATE_LOW, DATE_HIGH, "x")
    assert date_filter(prefix, "lo", "hi", DATE_LOW, DATE_HIGH) == test
    assert await translate(p, "Patient") == {"date": {"$elemMatch": {"p": "birthdate", **test}}}


LU_EQ: Filter = {"$and": [{"lu": {"$gte": DATE_LOW}}, {"lu": {"$lte": DATE_HIGH}}]}


@pytest.mark.anyio
@pytest.mark.parametrize(("prefix", "expected"), [
    ("eq", LU_EQ),
    ("ne", {"$nor": [LU_EQ]}),
    ("gt", {"lu": {"$gt": DATE_HIGH}}),
    ("lt", {"lu": {"$lt": DATE_LOW}}),
    ("ge", {"$or": [{"lu": {"$gt": DATE_HIGH}}, {"lu": {"$gte": DATE_LOW}}]}),
    ("le", {"$or": [{"lu": {"$lt": DATE_LOW}}, {"lu": {"$lte": DATE_HIGH}}]}),
    ("sa", {"lu": {"$gt": DATE_HIGH}}),
    ("eb", {"lu": {"$lt": DATE_LOW}}),
    ("ap", {"$and": [{"lu": {"$lte": DATE_HIGH}}, {"lu": {"$gte": DATE_LOW}}]}),
])
async def test_last_updated_prefix(prefix: Prefix, expected: Filter) -> None:
    """`_lastUpdated` tests the document's own `lu` (an instant: both ends are one field,
    so the two-sided prefixes need `$and`)."""
    p = DatePredicate("_lastUpdated", prefix, DATE_LOW, DATE_HIGH, "x")
    assert await translate(p, "Patient") == expected


VALUE, LOW, HIGH = 5.0, 4.5, 5.5
NUMBER_EQ: Filter = {"lo": {"$gte": LOW}, "hi": {"$lt": HIGH}}
NUMBER_PREFIXES: list[tuple[Prefix, Filter]] = [
    ("eq", NUMBER_EQ),
    ("ne", {"$nor": [NUMBER_EQ]}),
    ("gt", {"hi": {"$gt": VALUE}}),
    ("lt", {"lo": {"$lt": VALUE}}),
    ("ge", {"hi": {"$gte": VALUE}}),
    ("le", {"lo": {"$lte": VALUE}}),
    ("sa", {"lo": {"$gte": HIGH}}),
    ("eb", {"hi": {"$lt": LOW}}),
    ("ap", {"lo": {"$lt": HIGH}, "hi": {"$gte": LOW}}),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("prefix", "test"), NUMBER_PREFIXES)
async def test_number_prefix(prefix: Prefix, test: Filter) -> None:
    """search/params/number.match_range per prefix: exact value for gt/lt/ge/le, the
    half-open precision range [low, high) for eq/ne/sa/eb/ap."""
    p = NumberPredicate("probability", prefix, VALUE, LOW, HIGH, "5")
    assert await translate(p, "RiskAssessment") == {
        "num": {"$elemMatch": {"p": "probability", **test}}}


@pytest.mark.parametrize(("prefix", "test"), NUMBER_PREFIXES)
def test_quantity_prefix(prefix: Prefix, test: Filter) -> None:
    """Quantities share the number ranges (here without a unit constraint)."""
    p = QuantityPredicate("value-quantity", prefix, VALUE, LOW, HIGH, None, None, "5")
    assert condition(p) == test


@pytest.mark.parametrize(("system", "code", "prefix", "expected"), [
    (UCUM, "mg", "ge", {"s": UCUM, "c": "mg", "hi": {"$gte": VALUE}}),
    (None, "mg", "lt", {"$or": [{"c": "mg"}, {"un": "mg"}], "lo": {"$lt": VALUE}}),
    (None, "mg", "ne", {"$or": [{"c": "mg"}, {"un": "mg"}], "$nor": [NUMBER_EQ]}),
    (UCUM, None, "gt", {"s": UCUM, "hi": {"$gt": VALUE}}),
    ("", None, "eb", {"s": None, "hi": {"$lt": LOW}}),
])
def test_quantity_units(system: str | None, code: str | None, prefix: Prefix,
                        expected: Filter) -> None:
    """`v|system|code` needs both; `v||code` the code or the human unit; a system alone
    (token conventions: "" = none) constrains the system only."""
    p = QuantityPredicate("value-quantity", prefix, VALUE, LOW, HIGH, system, code, "5")
    assert condition(p) == expected


# --- conditions inside composites --------------------------------------------------------


@pytest.mark.parametrize(("p", "expected"), [
    (StringPredicate("c", "ab", "Ab"), {"k0.v": {"$gte": "ab", "$lt": "ac"}}),
    (StringPredicate("c", "ab", "Ab", "exact"), {"k0.v": "ab", "k0.x": "Ab"}),
    (TokenPredicate("c", "", "x"), {"k0.c": "x", "k0.s": None}),
    (DatePredicate("c", "ne", 1, 2, "x"),
     {"$nor": [{"k0.lo": {"$gte": 1}, "k0.hi": {"$lte": 2}}]}),
    (QuantityPredicate("c", "ap", VALUE, LOW, HIGH, None, "mg", "5"),
     {"$or": [{"k0.c": "mg"}, {"k0.un": "mg"}], "k0.lo": {"$lt": HIGH}, "k0.hi": {"$gte": LOW}}),
    (NearPredicate("c", 1.0, 2.0, 3.0, "x"),
     {"k0.pt": {"$geoWithin": {"$centerSphere": [[2.0, 1.0], 3.0 / EARTH_RADIUS_KM]}}}),
])
def test_condition_prefixes_fields(p: Predicate, expected: Filter) -> None:
    """A composite component's condition names the fields of its `k<n>.` subdocument."""
    assert condition(p, "k0.") == expected


def test_condition_refuses_non_simple_predicates() -> None:
    """Only predicates testing one entry have a condition."""
    with pytest.raises(TypeError, match="Missing"):
        condition(Missing("gender", True))


@pytest.mark.anyio
@pytest.mark.parametrize(("p", "expected"), [
    (CompositePredicate("x", (DatePredicate("a", "ge", 1, 2, "t"),
                              DatePredicate("b", "le", 3, 4, "t"))),
     {"comp": {"$elemMatch": {"$and": [
         {"p": "x"},
         {"$or": [{"k0.hi": {"$gt": 2}}, {"k0.lo": {"$gte": 1}}]},
         {"$or": [{"k1.lo": {"$lt": 3}}, {"k1.hi": {"$lte": 4}}]}]}}}),
    (CompositePredicate("x", (TokenPredicate("a", None, "c"), Missing("b", True))), FALSE),
    (CompositePredicate("x", (TokenPredicate("a", None, None),
                              TokenPredicate("b", None, "c"))), FALSE),
])
async def test_composite_edges(p: CompositePredicate, expected: Filter) -> None:
    """Clashing component operators AND with `$and`; a part that is not a simple predicate,
    or can match nothing, makes the composite FALSE."""
    assert await translate(p, "Observation") == expected


# --- _id, :missing and :not folding ------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("p", "expected"), [
    (TokenPredicate("_id", None, "7"), {"_id": "Practitioner/7"}),
    (TokenPredicate("_id", "", None), TRUE),
    (TokenPredicate("_id", None, None), FALSE),
    (TokenPredicate("_id", "http://s", None), FALSE),
    (TokenPredicate("gender", None, None), FALSE),
    (Missing("_lastUpdated", True), FALSE),
    (Missing("_id", False), TRUE),
    (Missing("no-such-param", True), TRUE),
    (Missing("no-such-param", False), FALSE),
    (Not("_id", (TokenPredicate("_id", "http://s", "7"),)), TRUE),
    (Not("_id", (TokenPredicate("_id", "", None),)), FALSE),
    (Not("_id", (TokenPredicate("_id", None, "7"), TokenPredicate("_id", "", None))), FALSE),
    (Not("_id", (TokenPredicate("_id", None, "7"), TokenPredicate("_id", None, None))),
     {"$nor": [{"_id": "Practitioner/7"}]}),
])
async def test_folded_predicate(p: Predicate, expected: Filter) -> None:
    """Predicates that fold to TRUE/FALSE: `_id` (no system, key `Type/id`), `:missing` on
    the document's own fields or an unknown parameter, `:not` of a constant."""
    assert await translate(p, "Practitioner") == expected


# --- AND of clauses ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("params", "expected"), [
    ((("name", "a"), ("gender", "male")),
     {"str": {"$elemMatch": {"p": "name", "v": {"$gte": "a", "$lt": "b"}}},
      "tok": {"$elemMatch": {"p": "gender", "c": "male"}}}),
    ((("name", "a"), ("family", "b")),
     {"$and": [string_entry("name", "a", "b"), string_entry("family", "b", "c")]}),
    ((("gender", "male,female"), ("language", "fr,en")),
     {"$and": [{"$or": [elem("tok", "gender", c="male"), elem("tok", "gender", c="female")]},
               {"$or": [elem("tok", "language", c="fr"), elem("tok", "language", c="en")]}]}),
    ((("_id", "1"), ("_lastUpdated", "lt2020")),
     {"_id": "Patient/1", "lu": {"$lt": 1_577_836_800_000_000}}),
    ((("_id", "1"), ("_id:missing", "false")), {"_id": "Patient/1"}),
    ((("name", "a"), ("_id", "http://s|1")), FALSE),
    ((("_lastUpdated:missing", "false"), ("_id:missing", "false")), TRUE),
])
async def test_clauses(params: tuple[tuple[str, str], ...], expected: Filter) -> None:
    """Repeated parameters AND: merged into one document when their keys differ, `$and` when
    they clash (same entry array, two `$or`s); TRUE clauses drop, a FALSE one wins."""
    assert await build("Patient", *params) == expected


@pytest.mark.anyio
async def test_false_clause_stops_before_inner_searches() -> None:
    """A clause that can match nothing ends the translation: later `_has` is not resolved."""
    resolver = FakeResolver(referenced=["a"])
    clauses = (Clause((TokenPredicate("_id", "http://s", "1"),)),
               Clause((Has("Observation", "patient", TokenPredicate("code", None, "x")),)))
    built = await FilterBuilder(REGISTRY, resolver).clauses(clauses, "Patient")
    assert built == FALSE
    assert resolver.calls == []


# --- chains --------------------------------------------------------------------------------

NG = {"str": {"$elemMatch": {"p": "name", "v": {"$gte": "ng", "$lt": "nh"}}}}


def subject_in(target: str, ids: list[str]) -> Filter:
    return {"ref": {"$elemMatch": {"p": "subject", "u": None, "t": target, "i": {"$in": ids}}}}


@pytest.mark.anyio
@pytest.mark.parametrize(("answers", "expected"), [
    ({"Patient": ["p2", "p1"]}, subject_in("Patient", ["p1", "p2"])),
    ({"Location": ["l1"], "Patient": ["p1"]},
     {"$or": [subject_in("Location", ["l1"]), subject_in("Patient", ["p1"])]}),
    ({}, FALSE),
])
async def test_chain(answers: dict[str, list[str]], expected: Filter) -> None:
    """`subject.name=ng`: one inner search per target type having `name`; the outer filter
    tests local references of that type against the (sorted) ids found, FALSE if none."""
    resolver = FakeResolver(ids=answers)
    assert await build("Observation", ("subject.name", "ng"), resolver=resolver) == expected
    assert resolver.calls == [("ids", "Location", NG), ("ids", "Patient", NG)]


@pytest.mark.anyio
async def test_chain_to_id_keys_the_target_type() -> None:
    """`subject:Patient._id=123`: the inner `_id` filter is keyed by the target type."""
    resolver = FakeResolver(ids={"Patient": ["123"]})
    built = await build("Observation", ("subject:Patient._id", "123"), resolver=resolver)
    assert built == subject_in("Patient", ["123"])
    assert resolver.calls == [("ids", "Patient", {"_id": "Patient/123"})]


@pytest.mark.anyio
async def test_nested_chain_resolves_innermost_first() -> None:
    """`subject:Patient.general-practitioner:Practitioner.name=ng`: the Practitioner ids
    found become the Patient search, whose ids become the outer filter."""
    resolver = FakeResolver(ids={"Practitioner": ["d1"], "Patient": ["p1"]})
    built = await build("Observation",
                        ("subject:Patient.general-practitioner:Practitioner.name", "ng"),
                        resolver=resolver)
    assert resolver.calls == [
        ("ids", "Practitioner", NG),
        ("ids", "Patient", {"ref": {"$elemMatch": {
            "p": "general-practitioner", "u": None, "t": "Practitioner", "i": {"$in": ["d1"]}}}}),
    ]
    assert built == subject_in("Patient", ["p1"])


@pytest.mark.anyio
async def test_chain_with_false_inner_searches_nothing() -> None:
    """An inner predicate that can match nothing is not searched: the chain is FALSE."""
    resolver = FakeResolver(ids={"Patient": ["p1"]})
    chain = Chain("subject", ("Patient",), TokenPredicate("_id", "http://s", "1"))
    assert await translate(chain, "Observation", resolver) == FALSE
    assert resolver.calls == []


# --- _has ----------------------------------------------------------------------------------

CODE_1234 = {"tok": {"$elemMatch": {"p": "code", "c": "1234"}}}


@pytest.mark.anyio
@pytest.mark.parametrize(("found", "expected"), [
    (["b", "a"], {"_id": {"$in": ["Patient/a", "Patient/b"]}}),
    ([], FALSE),
])
async def test_has(found: list[str], expected: Filter) -> None:
    """`_has:Observation:patient:code=1234`: the Patients that matching Observations
    reference through `patient`, as sorted document keys; FALSE when there are none."""
    resolver = FakeResolver(referenced=found)
    built = await build("Patient", ("_has:Observation:patient:code", "1234"), resolver=resolver)
    assert built == expected
    assert resolver.calls == [("referenced", "Observation", "patient", "Patient", CODE_1234)]


@pytest.mark.anyio
async def test_has_with_false_inner_searches_nothing() -> None:
    """An inner predicate that can match nothing is not searched: `_has` is FALSE."""
    resolver = FakeResolver(referenced=["a"])
    has = Has("Observation", "patient", TokenPredicate("code", None, None))
    assert await translate(has, "Patient", resolver) == FALSE
    assert resolver.calls == []


@pytest.mark.anyio
async def test_has_and_id_clash() -> None:
    """`_id` and `_has` both test `_id`: their AND is an `$and`, not an overwritten key."""
    resolver = FakeResolver(referenced=["a"])
    built = await build("Patient", ("_id", "a"), ("_has:Observation:patient:code", "1234"),
                        resolver=resolver)
    assert built == {"$and": [{"_id": "Patient/a"}, {"_id": {"$in": ["Patient/a"]}}]}


INNER_SEARCHES = [
    pytest.param("Observation", ("subject:Patient.name", "ng"), id="chain"),
    pytest.param("Patient", ("_has:Observation:patient:code", "1234"), id="has"),
]


def _many(count: int) -> FakeResolver:
    ids = [f"r{n:06d}" for n in range(count)]
    return FakeResolver(ids={"Patient": ids}, referenced=ids)


@pytest.mark.anyio
@pytest.mark.parametrize(("rtype", "param"), INNER_SEARCHES)
async def test_inner_search_up_to_the_limit(rtype: str, param: tuple[str, str]) -> None:
    """MAX_RESOLVED ids are still carried by the outer filter."""
    built = await build(rtype, param, resolver=_many(MAX_RESOLVED))
    listed = built["ref"]["$elemMatch"]["i"] if "ref" in built else built["_id"]
    assert len(listed["$in"]) == MAX_RESOLVED


@pytest.mark.anyio
@pytest.mark.parametrize(("rtype", "param"), INNER_SEARCHES)
async def test_inner_search_over_the_limit_is_too_costly(rtype: str,
                                                         param: tuple[str, str]) -> None:
    """One id more than MAX_RESOLVED refuses the search (unprocessable, too-costly)."""
    with pytest.raises(FhirError) as raised:
        await build(rtype, param, resolver=_many(MAX_RESOLVED + 1))
    assert raised.value.kind is Kind.UNPROCESSABLE
    assert [issue.code for issue in raised.value.issues] == ["too-costly"]
