"""The SQLite search translation agrees with the reference evaluator (FHIR R4 search.html).

Hypothesis builds small sets of resources and queries over every parameter type (#string,
#token, #reference, #date, #number, #quantity, #uri, #composite, location.html#positional),
the modifiers (#modifiers: missing, exact, contains, text, not, of-type, identifier, [type],
above, below), the prefixes (#prefix), OR and AND (#combining), chains (#chaining), reverse
chains (#has), `_id` and `_lastUpdated` (#all), and system-level search (http.html#search).
Each query is parsed by the real parser, run on the store page by page, and its result must be
exactly the set `search.matches()` accepts, in the store's default order (creation order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.search import (
    CompositeEntry,
    DateEntry,
    IndexEntry,
    NumberEntry,
    PositionEntry,
    QuantityEntry,
    Query,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
    default_registry,
)
from tests.store import search_model as m
from tests.store.conftest import STORES
from tests.store.search_model import BOOLEANS, Harness, Key, World, between, choice

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

Values = st.SearchStrategy[str]
Param = tuple[str, Values]  # (parameter name with modifier or chain, one value)


@pytest.fixture(scope="module", params=sorted(STORES))
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    yield from m.harness(request.param, tmp_path_factory.mktemp("property"))


# --- values of each parameter type -------------------------------------------------------------


def escape(text: str) -> str:
    """search.html#escaping: `\\`, `,`, `|` and `$` in a value are escaped."""
    for c in "\\,|$":
        text = text.replace(c, "\\" + c)
    return text


@st.composite
def _string_value(draw: st.DrawFn, vocabulary: tuple[str, ...], modifier: str | None) -> str:
    word = draw(choice(vocabulary))
    if modifier == "exact":
        word = draw(choice((word, word.lower(), word.upper())))
    else:
        word = draw(choice((word, word.lower(), word.upper(), word.swapcase())))
        start = draw(between(0, len(word) - 1)) if modifier == "contains" else 0
        word = word[start : draw(between(start + 1, len(word)))]
    return escape(word)


def strings(code: str, vocabulary: tuple[str, ...] = m.NAMES) -> list[Param]:
    return [(code if mod is None else f"{code}:{mod}", _string_value(vocabulary, mod))
            for mod in (None, None, "exact", "contains")]


def _tokens(codes: tuple[tuple[str | None, str, str | None], ...]) -> Values:
    """Every token form (search.html#token): code, |code, system|code, system|."""
    forms = []
    for system, code, _ in codes:
        forms += [code, f"|{code}"] + ([f"{system}|{code}", f"{system}|"] if system else [])
    return st.sampled_from(forms)


def tokens(code: str, values: Values, texts: tuple[str, ...] = ()) -> list[Param]:
    params: list[Param] = [(code, values), (code, values), (f"{code}:not", values)]
    if texts:
        params.append((f"{code}:text", _string_value(texts, None)))
    return params


CODE_VALUES = _tokens(m.CODES)
DISPLAYS = ("Heart rate", "Systolic blood pressure", "Hémoglobine", "lung", "Non-small")
IDENTIFIERS = st.sampled_from(
    [v for v in m.ID_VALUES] + [f"|{v}" for v in m.ID_VALUES]
    + [f"{s}|{v}" for s in m.SYSTEMS for v in m.ID_VALUES] + [f"{s}|" for s in m.SYSTEMS])
OF_TYPE = st.sampled_from([f"{m.TYPE_CODE[0]}|{c}|{v}" for c in m.TYPE_CODE[1] for v in m.ID_VALUES])
PREFIX = st.sampled_from(("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"))
HIT_PREFIX = st.sampled_from(("", "", "", "ge", "le", "ap", "ne", "gt", "lt", "sa", "eb"))  # mostly hits
NUMBERS = st.sampled_from(("5.4", "5.40", "5", "100", "1e2", "99.5", "100.5", "0.1", "120",
                           "1.2e2", "-3.25", "3", "1000", "0.5", "0.55", "0.9", "0"))


@st.composite
def date_values(draw: st.DrawFn) -> str:
    text = draw(st.one_of(m.dates(), st.sampled_from(("2020-01-01T10:30", "1962-04-17T00:00"))))
    return draw(PREFIX) + text


@st.composite
def quantity_values(draw: st.DrawFn) -> str:
    number = draw(PREFIX) + draw(NUMBERS)
    system, code, unit = draw(choice(m.UNITS))
    unit_part = draw(choice((
        "", f"|{system}|{code}" if system else "", f"||{code or unit}", f"||{unit}")))
    return number + unit_part


@st.composite
def number_values(draw: st.DrawFn) -> str:
    return draw(PREFIX) + draw(NUMBERS)


def references(code: str, targets: tuple[str, ...]) -> list[Param]:
    @st.composite
    def value(draw: st.DrawFn) -> str:
        rtype = draw(choice(targets))
        rid = draw(choice(m.IDS[rtype] + ("zz",)))
        return draw(choice((
            f"{rtype}/{rid}", rid, f"{rtype}/{rid}/_history/2", f"http://other.org/fhir/{rtype}/{rid}")))

    return [
        (code, value()), (code, value()),
        (f"{code}:{targets[0]}", st.sampled_from(m.IDS[targets[0]] + ("zz",))),
        (f"{code}:identifier", IDENTIFIERS.filter(lambda v: not v.endswith("|"))),
    ]


def missing(*codes: str) -> list[Param]:
    return [(f"{c}:missing", st.sampled_from(("true", "false"))) for c in codes]


# --- values taken from the stored data (so most of these queries find something) ---------------


def _instant(micros: int, precision: str) -> str:
    """A date of `precision` (y, m, d, s, us) around the instant `micros`, in UTC."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    text = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    return {
        "y": text[:4], "m": text[:7], "d": text,
        "s": f"{text}T{moment:%H:%M:%S}Z", "us": f"{text}T{moment:%H:%M:%S.%f}Z",
    }[precision]


def _precision(e: DateEntry) -> str:
    """The precision of a stored date from its width, so searches hit its exact bounds."""
    width = e.high - e.low + 1
    day = 86_400_000_000
    if width <= 1_000_000:
        return "s" if width == 1_000_000 else "us"
    return "d" if width == day else "m" if width <= 31 * day else "y"


def _number(value: float | None, draw: st.DrawFn) -> str | None:
    if value is None or not math.isfinite(value):
        return None
    text = repr(value) if draw(BOOLEANS) else f"{value:g}"
    return draw(HIT_PREFIX) + text


def _value(draw: st.DrawFn, e: IndexEntry, negate: bool) -> tuple[str, str] | None:
    """(modifier suffix, value) of a search that the entry `e` is likely to satisfy."""
    if isinstance(e, StringEntry):
        mode = draw(choice(("", "", ":exact", ":contains")))
        if mode == ":exact":
            return mode, escape(e.exact)
        if mode == ":contains":
            start = draw(between(0, len(e.value) - 1))
            return mode, escape(e.value[start : draw(between(start + 1, len(e.value)))])
        cut = e.exact[: draw(between(1, len(e.exact)))]
        return "", escape(draw(choice((cut, cut.upper(), cut.lower()))))
    if isinstance(e, TokenEntry):
        forms: list[tuple[str, str]] = []
        if e.code:
            code = escape(e.code)
            forms += [("", code), ("", f"{escape(e.system)}|{code}" if e.system else f"|{code}")]
            forms += [("", f"{escape(e.system)}|")] if e.system else []
            if e.type_system and e.type_code:
                forms.append((":of-type", f"{escape(e.type_system)}|{escape(e.type_code)}|{code}"))
        if e.text:
            forms.append((":text", escape(e.text[: draw(between(1, len(e.text)))])))
        if not forms:
            return None
        modifier, value = draw(choice(forms))
        return (":not" if negate and modifier == "" else modifier), value
    if isinstance(e, ReferenceEntry):
        forms = []
        if e.url is None and e.type and e.id:
            forms += [("", f"{e.type}/{e.id}"), (f":{e.type}", e.id), ("", e.id)]
            forms += [("", f"{e.type}/{e.id}/_history/{e.version}")] if e.version else []
        if e.url is not None:
            forms.append(("", escape(e.url) + (f"|{e.version}" if e.version else "")))
        if e.identifier_value:
            forms.append((":identifier", f"{escape(e.identifier_system or '')}|{escape(e.identifier_value)}"))
        return draw(choice(forms)) if forms else None
    if isinstance(e, DateEntry):
        edge = draw(choice((e.low, e.high)))
        precision = draw(choice((_precision(e), "y", "m", "d", "s", "us")))
        return "", draw(PREFIX) + _instant(edge, precision)
    if isinstance(e, NumberEntry):
        number = _number(draw(choice((e.value, e.low, e.high))), draw)
        return None if number is None else ("", number)
    if isinstance(e, QuantityEntry):
        number = _number(draw(choice((e.value, e.low, e.high))), draw)
        if number is None:
            return None
        units = [""] + ([f"|{escape(e.system)}|{escape(e.code)}"] if e.system and e.code else [])
        units += [f"||{escape(u)}" for u in (e.code, e.unit) if u]
        return "", number + draw(choice(units))
    if isinstance(e, UriEntry):
        return draw(choice((("", e.value), (":below", e.value[:-3]), (":above", e.value + "/x"))))
    if isinstance(e, PositionEntry):
        distance = draw(choice(("0.001", "2", "50")))
        return "", f"{e.latitude + 0.01}|{e.longitude}|{distance}|km"
    if isinstance(e, CompositeEntry):
        parts = [_value(draw, c, False) for c in e.components]
        if any(p is None or p[0] for p in parts):
            return None
        return "", "$".join(p[1] for p in parts if p is not None)
    return None


@st.composite
def seeded(
    draw: st.DrawFn, world: World, rtype: str, depth: int = 0, key: Key | None = None
) -> tuple[str, str] | None:
    """A parameter built from a stored `rtype` resource (`key`, else any): a value of one of
    its entries, a chain through one of its local references, or a `_has` from a resource
    referencing it."""
    if key is None:
        keys = sorted(k for k in world.entries if k[0] == rtype)
        if not keys:
            return None
        key = draw(choice(keys))
    kind = draw(choice(("entry", "entry", "entry", "chain", "has") if depth < 2 else ("entry",)))
    if kind == "chain":
        links = [e for e in world.entries[key] if isinstance(e, ReferenceEntry) and e.url is None
                 and (e.type, e.id) in world.entries and not e.param.startswith("_")]
        if links:
            link = draw(choice(links))
            inner = draw(seeded(world, str(link.type), depth + 1, (str(link.type), str(link.id))))
            if inner is not None and not inner[0].startswith("_has:") and ":not" not in inner[0]:
                typed = draw(choice((f":{link.type}", "")))
                return f"{link.param}{typed}.{inner[0]}", inner[1]
    if kind == "has":
        sources = [(k, e) for k, entries in sorted(world.entries.items()) for e in entries
                   if isinstance(e, ReferenceEntry) and e.url is None and (e.type, e.id) == key]
        if sources:
            source, link = draw(choice(sources))
            source_type = source[0]
            inner = draw(seeded(world, source_type, depth + 1, source))
            if inner is not None and ":not" not in inner[0]:
                return f"_has:{source_type}:{link.param}:{inner[0]}", inner[1]
    usable = [e for e in world.entries[key] if not isinstance(e, CompositeEntry) or depth == 0]
    # Entry type first, so rare types (composite, position, number) are drawn as often as tokens.
    kinds = sorted({type(e).__name__ for e in usable})
    kind = draw(choice(kinds))
    entry = draw(choice([e for e in usable if type(e).__name__ == kind]))
    found = _value(draw, entry, negate=depth == 0 and draw(between(0, 4)) == 0)
    if found is None:
        return f"{entry.param}:missing", draw(choice(("true", "false")))
    return f"{entry.param}{found[0]}", found[1]


# --- parameters per resource type ---------------------------------------------------------------


def _common(stamps: list[str]) -> list[Param]:
    """Resource-level parameters (search.html#all), `_lastUpdated` near the stored instants."""
    return [
        ("_id", st.sampled_from([i for pool in m.IDS.values() for i in pool[:3]] + ["zz", "|p0"])),
        ("_id:not", st.sampled_from(("p0", "o1", "zz"))),
        ("_lastUpdated", _last_updated(stamps)),
        ("_tag", st.sampled_from(("trial", "TRIAL", "http://example.org/tags|trial", "|trial",
                                  "http://example.org/tags|"))),
        ("_profile", st.sampled_from(m.PROFILES)),
        ("_profile:below", st.sampled_from(("http://example.org/fhir/", "http://example.org/fhir/StructureDefinition/a"))),
        ("_profile:above", st.sampled_from(("http://example.org/fhir/StructureDefinition/a/b/c",
                                            "http://hl7.org/fhir/x", "http://hl7.org/"))),
        *missing("_tag", "_profile", "_id"),
    ]


def _last_updated(stamps: list[str]) -> Values:
    around = [s[:n] for s in stamps for n in (len(s), 19, 16, 10)] or ["2020"]
    return st.tuples(PREFIX, st.sampled_from(around + ["2020", "2099"])).map("".join)


def _patient() -> list[Param]:
    return [
        *strings("name"), *strings("family"), *strings("given"),
        *strings("address-city", m.CITIES), *strings("address", m.CITIES + ("rue", "Zola")),
        ("birthdate", date_values()), ("birthdate", date_values()),
        *tokens("gender", st.sampled_from(("male", "female", "other", "MALE"))),
        *tokens("active", st.sampled_from(("true", "false"))),
        *tokens("identifier", IDENTIFIERS, ("Medical",)),
        ("identifier:of-type", OF_TYPE),
        *tokens("telecom", st.sampled_from(("555-1234", "a@b.org", "phone|555-1234"))),
        *tokens("phone", st.sampled_from(("555-1234", "a@b.org"))),
        *references("general-practitioner", ("Practitioner", "Organization")),
        *references("organization", ("Organization",)),
        *references("link", ("Patient",)),
        ("general-practitioner.name", _string_value(m.NAMES, None)),
        ("general-practitioner:Practitioner.identifier", IDENTIFIERS),
        ("organization.partof.name", _string_value(m.NAMES, None)),
        ("link:Patient.gender", st.sampled_from(("male", "female"))),
        ("_has:Observation:patient:code", CODE_VALUES),
        ("_has:Observation:subject:value-quantity", quantity_values()),
        ("_has:Condition:subject:onset-date", date_values()),
        ("_has:Observation:patient:_has:Observation:has-member:status", st.sampled_from(("final", "amended"))),
        ("_has:Observation:patient:performer.name", _string_value(m.NAMES, None)),
        *missing("name", "birthdate", "gender", "identifier", "general-practitioner", "address-city"),
    ]


def _observation() -> list[Param]:
    composite_code = st.sampled_from(("8867-4", "http://loinc.org|8867-4", "8480-6", "|8867-4"))
    return [
        *tokens("code", CODE_VALUES, DISPLAYS), *tokens("status", st.sampled_from(("final", "amended"))),
        *tokens("value-concept", CODE_VALUES, DISPLAYS),
        ("date", date_values()), ("date", date_values()),
        ("value-quantity", quantity_values()), ("value-quantity", quantity_values()),
        ("component-value-quantity", quantity_values()),
        *strings("value-string"),
        *references("subject", ("Patient", "Location")), *references("patient", ("Patient",)),
        *references("encounter", ("Encounter",)), *references("has-member", ("Observation",)),
        ("code-value-quantity", st.tuples(composite_code, quantity_values()).map("$".join)),
        ("component-code-value-quantity", st.tuples(composite_code, quantity_values()).map("$".join)),
        ("combo-code-value-quantity", st.tuples(composite_code, quantity_values()).map("$".join)),
        ("code-value-concept", st.tuples(composite_code, CODE_VALUES).map("$".join)),
        ("code-value-string", st.tuples(composite_code, _string_value(m.NAMES, None)).map("$".join)),
        ("subject:Patient.name", _string_value(m.NAMES, None)),
        ("subject.name", _string_value(m.NAMES + m.CITIES, None)),
        ("patient.birthdate", date_values()),
        ("patient.general-practitioner.name", _string_value(m.NAMES, None)),
        ("patient.general-practitioner:Practitioner.identifier", IDENTIFIERS),
        ("subject:Patient.organization.name:exact", _string_value(m.NAMES, "exact")),
        ("patient.gender:missing", st.sampled_from(("true", "false"))),
        ("patient._id", st.sampled_from(m.IDS["Patient"])),
        ("encounter.subject.gender", st.sampled_from(("male", "female"))),
        ("has-member.code", CODE_VALUES),
        ("subject:Location.near", st.just("48.8566|2.3522|5|km")),
        ("_has:Observation:has-member:status", st.sampled_from(("final", "amended"))),
        *missing("code", "subject", "date", "value-quantity", "code-value-quantity", "value-string"),
    ]


def _condition() -> list[Param]:
    return [
        *tokens("code", CODE_VALUES, DISPLAYS), ("onset-date", date_values()),
        ("recorded-date", date_values()), ("onset-age", quantity_values()),
        *strings("onset-info"), *references("subject", ("Patient",)),
        ("patient.name", _string_value(m.NAMES, None)),
        *missing("onset-date", "onset-age", "code"),
    ]


def _location() -> list[Param]:
    near = st.tuples(st.sampled_from(m.POINTS), st.sampled_from(("0.01", "1", "5", "30", "600")),
                     st.sampled_from(("", "|km", "|m", "|[mi_i]")))
    return [
        ("near", near.map(lambda n: f"{n[0][0]}|{n[0][1]}|{n[1]}{n[2]}")),
        ("near", near.map(lambda n: f"{n[0][0] + 0.01}|{n[0][1]}|{n[1]}{n[2]}")),
        *strings("name", m.CITIES), *references("partof", ("Location",)),
        ("partof.name", _string_value(m.CITIES, None)),
        ("_has:Observation:subject:code", CODE_VALUES),
        *missing("near", "name"),
    ]


def _practitioner() -> list[Param]:
    return [
        *strings("name"), *tokens("identifier", IDENTIFIERS),
        ("_has:Patient:general-practitioner:name", _string_value(m.NAMES, None)),
        ("_has:Patient:general-practitioner:_has:Observation:patient:code", CODE_VALUES),
        ("_has:Observation:performer:subject:Patient.gender", st.sampled_from(("male", "female"))),
        *missing("name"),
    ]


def _encounter() -> list[Param]:
    return [("date", date_values()), ("length", quantity_values()), *references("subject", ("Patient",)),
            ("_has:Observation:encounter:code", CODE_VALUES), *missing("date", "length")]


def _risk() -> list[Param]:
    return [("probability", number_values()), ("probability", number_values()),
            *references("subject", ("Patient",)), *missing("probability")]


def _organization() -> list[Param]:
    return [*strings("name"), *references("partof", ("Organization",)),
            ("_has:Patient:organization:gender", st.sampled_from(("male", "female"))),
            ("partof.partof.name", _string_value(m.NAMES, None))]


PARAMS: dict[str, Callable[[], list[Param]]] = {
    "Patient": _patient, "Observation": _observation, "Condition": _condition,
    "Location": _location, "Practitioner": _practitioner, "Encounter": _encounter,
    "RiskAssessment": _risk, "Organization": _organization,
}
_BUILT = {rtype: make() for rtype, make in PARAMS.items()}
# Parameters whose definition says multipleOr false (the parser refuses a comma list).
_SINGLE = frozenset(
    p.code for p in default_registry().params if not p.multiple_or and set(p.base) & set(PARAMS))


@st.composite
def clauses(draw: st.DrawFn, options: list[Param]) -> tuple[str, str]:
    """One query parameter: 1-3 comma-separated values (search.html#combining)."""
    name, values = draw(choice(options))
    count = 1 if name.endswith(":missing") or name in _SINGLE else draw(between(1, 3))
    return name, ",".join(draw(values) for _ in range(count))


@st.composite
def queries(draw: st.DrawFn, world: World) -> Query:
    """A type-level search of 1-3 parameters (ANDed), or now and then a system-level one.

    Half the parameters take their value from the stored data (`seeded`), half from the
    vocabularies above (near misses, other types, edge cases)."""
    stamps = sorted({body["meta"]["lastUpdated"] for body in world.bodies.values()})
    if draw(between(0, 9)) == 0:
        types = draw(st.lists(st.sampled_from(sorted(PARAMS)), max_size=3, unique=True))
        common = [draw(clauses(_common(stamps))) for _ in range(draw(between(1, 2)))]
        typed = [("_type", ",".join(types))] if types else []
        return m.query(None, *typed, *common)
    rtype = draw(choice(sorted(PARAMS)))
    options = _BUILT[rtype] + _common(stamps)
    params: list[tuple[str, str]] = []
    for _ in range(draw(choice((1, 1, 1, 2, 3)))):
        found = draw(seeded(world, rtype)) if draw(BOOLEANS) else None
        params.append(found or draw(clauses(options)))
    return m.query(rtype, *params)


def check(harness: Harness, q: Query) -> None:
    """Store and reference evaluator agree on the set, the order is creation order."""
    if m.uses(q, harness.lacks):
        return  # a double's gap (conftest.DOUBLE_LACKS), listed in the session's summary
    expected = harness.world.expected(q)
    found: list[Key] = harness.keys(q)
    assert len(found) == len(set(found)), f"duplicates in {found}"
    assert set(found) == expected, (q, sorted(set(found) - expected), sorted(expected - set(found)))
    assert found == sorted(found, key=harness.world.order.__getitem__)


@SETTINGS
@given(data=st.data())
def test_store_matches_reference_evaluator(harness: Harness, data: Any) -> None:
    """Any generated data set and query: the SQL translation returns what match.py accepts."""
    harness.replace_all(data.draw(m.worlds(), label="resources"))
    for _ in range(4):
        check(harness, data.draw(queries(harness.world), label="query"))


@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_updates_and_deletes_keep_the_index_exact(harness: Harness, data: Any) -> None:
    """Rewriting part of the data set (updates, deletions, re-creations) leaves no stale index
    rows: the same queries still agree after each change."""
    harness.replace_all(data.draw(m.worlds(), label="first"))
    for _ in range(2):
        first = [harness.world.bodies[key] for key in sorted(harness.world.bodies)]
        kept = data.draw(st.lists(st.sampled_from(first), unique_by=lambda r: r["id"]) if first else st.just([]))
        harness.replace_all(kept + data.draw(m.worlds(), label="more"))
        check(harness, data.draw(queries(harness.world), label="query"))


# --- every prefix against every precision (search.html#prefix) ---------------------------------

GRID_DATES = ("1962", "1962-04", "1962-04-17", "1962-04-16T23:59:59Z", "1962-04-17T10:00:00Z",
              "1962-04-17T10:00:00.5+02:00", "1962-12-31", "1963")
GRID_NUMBERS = ((99.5, "99.5"), (100, "100"), (100.5, "100.5"), (5.4, "5.4"), (0.1, "0.1"), (-3, "-3"))
GRID_UNITS = ({"system": m.UCUM, "code": "mg", "unit": "mg"}, {"unit": "mg"}, {"system": m.UCUM, "code": "kg"})


def _grid_resources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, text in enumerate(GRID_DATES):
        out.append({"resourceType": "Patient", "id": f"d{n}", "birthDate": text[:10]})
        out.append({"resourceType": "Observation", "id": f"t{n}", "status": "final", "effectiveDateTime": text})
    out.append({"resourceType": "Observation", "id": "period", "status": "final",
                "effectivePeriod": {"start": "1962-04-17", "end": "1962-05"}})
    out.append({"resourceType": "Observation", "id": "open", "status": "final", "effectivePeriod": {"start": "1962-04"}})
    for n, (value, _) in enumerate(GRID_NUMBERS):
        out.append({"resourceType": "RiskAssessment", "id": f"n{n}", "status": "final",
                    "prediction": [{"probabilityDecimal": value}]})
        for u, unit in enumerate(GRID_UNITS):
            out.append({"resourceType": "Observation", "id": f"q{n}-{u}", "status": "final",
                        "valueQuantity": {"value": value, **unit}})
    out.append({"resourceType": "RiskAssessment", "id": "range", "status": "final",
                "prediction": [{"probabilityRange": {"low": {"value": 5.4}, "high": {"value": 100}}}]})
    out.append({"resourceType": "Observation", "id": "below", "status": "final",
                "valueQuantity": {"value": 100, "comparator": "<", "unit": "mg"}})
    return out


def _grid_queries() -> Iterator[Query]:
    prefixes = ("", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
    for prefix in prefixes:
        for text in (*GRID_DATES, "1962-04-17T10:00", "1962-04-17T12:00:00+02:00"):
            yield m.query("Observation", ("date", prefix + text))
            yield m.query("Patient", ("birthdate", prefix + text[:10]))
        for _, text in GRID_NUMBERS + ((0, "1e2"), (0, "100.0"), (0, "5.40")):
            yield m.query("RiskAssessment", ("probability", prefix + text))
            for unit in ("", f"|{m.UCUM}|mg", "||mg"):
                yield m.query("Observation", ("value-quantity", prefix + text + unit))


def test_every_prefix_on_every_precision(harness: Harness) -> None:
    """Each prefix with values at each precision, stored points, ranges and open ends: the
    boundaries where `gt` and `ge`, `sa` and `gt`, `eq` and `ap` part."""
    harness.replace_all(_grid_resources())
    for q in _grid_queries():
        check(harness, q)
