"""Search by each parameter type on the store, with the spec's own examples (FHIR R4
search.html#date, #number, #quantity, #string, #token, #reference, #uri, #composite, #prefix,
#modifiers, #missing, #combining, #id, #lastUpdated; location.html#positional for `near`).

Every search also runs through the reference evaluator (`Dataset.search`), so an expectation
here holds for both the SQL translation and search/match.py.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.model.errors import FhirError
from fhir_server.store.base import Store, Write
from fhir_server.store.sqlite import SqliteStore
from fhir_server.store.sqlite.index import INDEX_TABLES, ParamIds
from fhir_server.store.sqlite.predicates import ESTIMATE_CAP
from fhir_server.store.sqlite.query import SqliteSearch
from tests.store.search_model import Dataset, query, write

pytestmark = pytest.mark.anyio

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
MRN = "http://hospital.org/mrn"
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def patient(rid: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, **fields}


def observation(rid: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", **fields}


@pytest.fixture
async def data(store: Store) -> AsyncIterator[Dataset]:
    yield Dataset(store)


# --- date (search.html#date, #prefix) ----------------------------------------------------------


async def test_date_precision_is_a_range(data: Dataset) -> None:
    """`birthdate=1962` finds 1962-04-17; a stored year is not within a searched day."""
    await data.load(patient("day", birthDate="1962-04-17"), patient("month", birthDate="1962-04"),
                    patient("year", birthDate="1962"), patient("other", birthDate="1963-01-01"))
    assert await data.search("Patient", ("birthdate", "1962")) == {"day", "month", "year"}
    assert await data.search("Patient", ("birthdate", "1962-04")) == {"day", "month"}
    assert await data.search("Patient", ("birthdate", "1962-04-17")) == {"day"}
    assert await data.search("Patient", ("birthdate", "ne1962")) == {"other"}


async def test_date_prefixes_on_ranges(data: Dataset) -> None:
    """gt/lt compare the ends of the ranges, ge/le add eq, sa/eb need no overlap (#prefix)."""
    await data.load(
        {"resourceType": "Encounter", "id": "jan", "status": "finished",
         "period": {"start": "2020-01-10", "end": "2020-01-20"}},
        {"resourceType": "Encounter", "id": "open", "status": "in-progress", "period": {"start": "2020-01-15"}},
        {"resourceType": "Encounter", "id": "none", "status": "planned"},
    )
    search = data.search
    assert await search("Encounter", ("date", "ge2020-01-15")) == {"jan", "open"}
    assert await search("Encounter", ("date", "le2020-01-15")) == {"jan"}  # "open" starts on the 15th
    assert await search("Encounter", ("date", "gt2020-01-20")) == {"open"}  # an ongoing period has no end
    assert await search("Encounter", ("date", "lt2020-01-10")) == set()
    assert await search("Encounter", ("date", "sa2020-01-09")) == {"jan", "open"}
    assert await search("Encounter", ("date", "eb2020-01-21")) == {"jan"}
    assert await search("Encounter", ("date", "eq2020-01")) == {"jan"}  # contains the whole period
    assert await search("Encounter", ("date", "ne2020-01")) == {"open"}
    assert await search("Encounter", ("date", "2020-01-15")) == set()  # a day cannot contain them


async def test_date_time_zones_and_approximation(data: Dataset) -> None:
    """A dateTime with an offset is an instant: 23:30-05:00 on March 1st is March 2nd UTC;
    `ap` widens the search range by 10% of its distance to now (#prefix)."""
    await data.load(observation("late", effectiveDateTime="2020-03-01T23:30:00-05:00"),
                    observation("early", effectiveDateTime="2020-03-01T00:30:00+02:00"),
                    observation("far", effectiveDateTime="2010-06-01"))
    assert await data.search("Observation", ("date", "2020-03-02")) == {"late"}
    assert await data.search("Observation", ("date", "2020-02-29")) == {"early"}
    assert await data.search("Observation", ("date", "lt2020-03-01T00:00:00Z")) == {"early", "far"}
    assert await data.search("Observation", ("date", "ap2020-03-01")) == {"late", "early"}


# --- number and quantity (search.html#number, #quantity) --------------------------------------


def risk(rid: str, probability: Any) -> dict[str, Any]:
    key = "probabilityRange" if isinstance(probability, dict) else "probabilityDecimal"
    return {"resourceType": "RiskAssessment", "id": rid, "status": "final", "prediction": [{key: probability}]}


async def test_number_implicit_precision(data: Dataset) -> None:
    """`100` means [99.5, 100.5); `lt100` is less than exactly 100; `1e2` has one figure."""
    await data.load(risk("a", 99.5), risk("b", 100), risk("c", 100.5), risk("d", 140),
                    risk("range", {"low": {"value": 90}, "high": {"value": 110}}))
    search = data.search
    assert await search("RiskAssessment", ("probability", "100")) == {"a", "b"}
    assert await search("RiskAssessment", ("probability", "100.0")) == {"b"}
    assert await search("RiskAssessment", ("probability", "1e2")) == {"a", "b", "c", "d", "range"}
    assert await search("RiskAssessment", ("probability", "lt100")) == {"a", "range"}
    assert await search("RiskAssessment", ("probability", "le100")) == {"a", "b", "range"}
    assert await search("RiskAssessment", ("probability", "gt100")) == {"c", "d", "range"}
    assert await search("RiskAssessment", ("probability", "ge100.5")) == {"c", "d", "range"}
    assert await search("RiskAssessment", ("probability", "sa100")) == {"c", "d"}
    assert await search("RiskAssessment", ("probability", "eb100")) == set()
    assert await search("RiskAssessment", ("probability", "ne100")) == {"c", "d", "range"}
    assert await search("RiskAssessment", ("probability", "ap130")) == {"d"}  # [116.5, 143.5)


def weighed(rid: str, value: float, **unit: str) -> dict[str, Any]:
    return observation(rid, valueQuantity={"value": value, **unit})


async def test_quantity_units(data: Dataset) -> None:
    """`5.4|system|code` needs both; `5.4||mg` the code or the unit; `5.4` any unit."""
    await data.load(
        weighed("ucum", 5.4, system=UCUM, code="mg", unit="milligram"),
        weighed("unit-only", 5.4, unit="mg"),
        weighed("kg", 5.4, system=UCUM, code="kg"),
        weighed("other-system", 5.4, system="http://example.org/units", code="mg"),
        weighed("more", 5.6, system=UCUM, code="mg"),
    )
    search = data.search
    assert await search("Observation", ("value-quantity", f"5.4|{UCUM}|mg")) == {"ucum"}
    assert await search("Observation", ("value-quantity", "5.4||mg")) == {"ucum", "unit-only", "other-system"}
    assert await search("Observation", ("value-quantity", "5.4")) == {"ucum", "unit-only", "kg", "other-system"}
    assert await search("Observation", ("value-quantity", f"gt5.4|{UCUM}|mg")) == {"more"}
    assert await search("Observation", ("value-quantity", "ap5||mg")) == {"ucum", "unit-only", "other-system", "more"}


async def test_quantity_comparators_are_open_intervals(data: Dataset) -> None:
    """A stored `<5` is every value below 5: `lt3` finds it, `gt6` does not."""
    await data.load(observation("below", valueQuantity={"value": 5, "comparator": "<", "unit": "mg"}),
                    observation("above", valueQuantity={"value": 5, "comparator": ">=", "unit": "mg"}))
    assert await data.search("Observation", ("value-quantity", "lt3")) == {"below"}
    assert await data.search("Observation", ("value-quantity", "gt6")) == {"above"}
    assert await data.search("Observation", ("value-quantity", "5")) == set()


# --- string (search.html#string) ---------------------------------------------------------------


async def test_string_starts_with_ignoring_case_and_accents(data: Dataset) -> None:
    """`Hélène` matches `helene` and `HELENE-Marie`; `:exact` compares case and accents;
    `:contains` matches anywhere in any part of the name."""
    await data.load(patient("plain", name=[{"family": "Helene"}]),
                    patient("accent", name=[{"given": ["Hélène"], "family": "Dupont"}]),
                    patient("upper", name=[{"family": "HELENE-Marie"}]),
                    patient("inside", name=[{"family": "Marie-Hélène"}]))
    search = data.search
    assert await search("Patient", ("name", "Hélène")) == {"plain", "accent", "upper"}
    assert await search("Patient", ("name", "hele")) == {"plain", "accent", "upper"}
    assert await search("Patient", ("name:exact", "Hélène")) == {"accent"}
    assert await search("Patient", ("name:exact", "helene")) == set()
    assert await search("Patient", ("name:contains", "HELENE")) == {"plain", "accent", "upper", "inside"}
    assert await search("Patient", ("family", "dup")) == {"accent"}
    assert await search("Patient", ("given", "dup")) == set()


async def test_string_parts_of_addresses_and_escaping(data: Dataset) -> None:
    """An Address matches through any of its parts; `\\,` is a comma, not an OR (#escaping)."""
    await data.load(patient("a", address=[{"line": ["1 rue Émile Zola"], "city": "Saint-Étienne"}]),
                    patient("b", name=[{"family": "Smith, Jr"}]), patient("c", name=[{"family": "Jr"}]))
    assert await data.search("Patient", ("address", "1 RUE emile")) == {"a"}
    assert await data.search("Patient", ("address", "zola")) == set()
    assert await data.search("Patient", ("address:contains", "zola")) == {"a"}
    assert await data.search("Patient", ("address-city", "saint-etienne")) == {"a"}
    assert await data.search("Patient", ("name", "smith\\, jr")) == {"b"}
    assert await data.search("Patient", ("name", "smith,jr")) == {"b", "c"}


async def test_string_prefix_at_the_end_of_unicode(data: Dataset) -> None:
    """Starts-with holds for every code point, the last one (U+10FFFF) included."""
    await data.load(patient("top", name=[{"family": "a\U0010ffffb"}]), patient("next", name=[{"family": "b"}]))
    assert await data.search("Patient", ("name", "a")) == {"top"}
    assert await data.search("Patient", ("name", "a\U0010ffff")) == {"top"}


# --- token (search.html#token) -----------------------------------------------------------------


def identified(rid: str, *identifiers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return patient(rid, identifier=list(identifiers), **fields)


async def test_token_system_and_code_forms(data: Dataset) -> None:
    """`code`: any system; `system|code`: both; `|code`: no system; `system|`: any code.
    Codes are case-sensitive."""
    await data.load(identified("mrn", {"system": MRN, "value": "123"}),
                    identified("bare", {"value": "123"}),
                    identified("other", {"system": MRN, "value": "ABC"}),
                    identified("lower", {"system": MRN, "value": "abc"}))
    search = data.search
    assert await search("Patient", ("identifier", "123")) == {"mrn", "bare"}
    assert await search("Patient", ("identifier", f"{MRN}|123")) == {"mrn"}
    assert await search("Patient", ("identifier", "|123")) == {"bare"}
    assert await search("Patient", ("identifier", f"{MRN}|")) == {"mrn", "other", "lower"}
    assert await search("Patient", ("identifier", "abc")) == {"lower"}


async def test_token_text_not_and_of_type(data: Dataset) -> None:
    """`:text` searches displays and CodeableConcept.text; `:not` also finds resources without
    a value; `:of-type` needs the identifier's type and value (#modifiers)."""
    await data.load(
        observation("hr", code={"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]}),
        observation("text", code={"text": "Heart beat", "coding": [{"system": LOINC, "code": "x"}]}),
        observation("none"),
        identified("typed", {"system": MRN, "value": "7", "type": {"coding": [{"system": V2, "code": "MR"}]}}),
        identified("untyped", {"system": MRN, "value": "7"}),
    )
    assert await data.search("Observation", ("code:text", "heart")) == {"hr", "text"}
    assert await data.search("Observation", ("code:text", "heart b")) == {"text"}
    assert await data.search("Observation", ("code:not", "8867-4")) == {"text", "none"}
    assert await data.search("Observation", ("code:not", "8867-4,x")) == {"none"}
    assert await data.search("Patient", ("identifier:of-type", f"{V2}|MR|7")) == {"typed"}
    assert await data.search("Patient", ("identifier:of-type", f"{V2}|SS|7")) == set()


async def test_token_on_booleans_codes_and_contact_points(data: Dataset) -> None:
    """booleans, codes and ContactPoint values are tokens without a system."""
    await data.load(
        patient("a", active=True, gender="female", telecom=[{"system": "phone", "value": "555-1234"}]),
        patient("b", active=False, gender="male", telecom=[{"system": "email", "value": "b@example.org"}]),
    )
    assert await data.search("Patient", ("active", "true")) == {"a"}
    assert await data.search("Patient", ("gender", "male,female")) == {"a", "b"}
    assert await data.search("Patient", ("gender", "MALE")) == set()
    assert await data.search("Patient", ("phone", "555-1234")) == {"a"}
    assert await data.search("Patient", ("email", "555-1234")) == set()
    assert await data.search("Patient", ("telecom", "b@example.org")) == {"b"}


# --- reference and uri (search.html#reference, #uri) --------------------------------------------


async def test_reference_forms(data: Dataset) -> None:
    """`Type/id`, a bare id, `:Type`, versions, absolute URLs and `:identifier`."""
    await data.load(
        observation("rel", subject={"reference": "Patient/1"}),
        observation("loc", subject={"reference": "Location/1"}),
        observation("ver", subject={"reference": "Patient/1/_history/2"}),
        observation("abs", subject={"reference": "http://other.org/fhir/Patient/1"}),
        observation("ident", subject={"identifier": {"system": MRN, "value": "123"}}),
    )
    search = data.search
    assert await search("Observation", ("subject", "Patient/1")) == {"rel", "ver"}
    assert await search("Observation", ("subject", "1")) == {"rel", "loc", "ver"}
    assert await search("Observation", ("subject:Location", "1")) == {"loc"}
    assert await search("Observation", ("patient", "1")) == {"rel", "ver"}
    assert await search("Observation", ("subject", "Patient/1/_history/2")) == {"ver"}
    assert await search("Observation", ("subject", "http://other.org/fhir/Patient/1")) == {"abs"}
    assert await search("Observation", ("subject:identifier", f"{MRN}|123")) == {"ident"}
    assert await search("Observation", ("subject:identifier", "|123")) == set()


async def test_uri_exact_below_and_above(data: Dataset) -> None:
    """uri values are exact; `:below` finds longer URIs, `:above` shorter ones."""
    base = "http://example.org/fhir/StructureDefinition"
    await data.load(patient("a", meta={"profile": [f"{base}/a"]}),
                    patient("ab", meta={"profile": [f"{base}/a/b"]}),
                    patient("none"))
    assert await data.search("Patient", ("_profile", f"{base}/a")) == {"a"}
    assert await data.search("Patient", ("_profile", f"{base}/A")) == set()
    assert await data.search("Patient", ("_profile:below", f"{base}/a")) == {"a", "ab"}
    assert await data.search("Patient", ("_profile:above", f"{base}/a/b/c")) == {"a", "ab"}
    assert await data.search("Patient", ("_profile:above", f"{base}/a")) == {"a"}


# --- composite and near (search.html#composite, location.html#positional) ----------------------


async def test_composite_parts_come_from_the_same_component(data: Dataset) -> None:
    """`component-code-value-quantity=X$gt100` needs one component with code X and a value
    above 100, not the code on one component and the value on another."""
    def component(code: str, value: float) -> dict[str, Any]:
        return {"code": {"coding": [{"system": LOINC, "code": code}]}, "valueQuantity": {"value": value, "unit": "mmHg"}}

    await data.load(observation("bp", component=[component("8480-6", 140), component("8462-4", 90)]),
                    observation("mixed", component=[component("8480-6", 90), component("8462-4", 140)]),
                    observation("code", code={"coding": [{"system": LOINC, "code": "8867-4"}]},
                                valueQuantity={"value": 72, "unit": "/min"}))
    assert await data.search("Observation", ("component-code-value-quantity", "8480-6$gt100")) == {"bp"}
    assert await data.search("Observation", ("component-code-value-quantity", f"{LOINC}|8462-4$gt100")) == {"mixed"}
    assert await data.search("Observation", ("code-value-quantity", f"{LOINC}|8867-4$72||/min")) == {"code"}
    assert await data.search("Observation", ("code-value-quantity", "8867-4$lt72")) == set()


@pytest.mark.real_mongodb("the double lacks $geoWithin/$centerSphere")
async def test_near(data: Dataset) -> None:
    """Paris-Lyon is about 392 km: within 400 km, not 300; units km, m and [mi_i]."""
    await data.load({"resourceType": "Location", "id": "lyon", "position": {"latitude": 45.764, "longitude": 4.8357}},
                    {"resourceType": "Location", "id": "paris", "position": {"latitude": 48.8566, "longitude": 2.3522}},
                    {"resourceType": "Location", "id": "nowhere"})
    paris = "48.8566|2.3522"
    assert await data.search("Location", ("near", f"{paris}|400|km")) == {"lyon", "paris"}
    assert await data.search("Location", ("near", f"{paris}|300")) == {"paris"}
    assert await data.search("Location", ("near", f"{paris}|393000|m")) == {"lyon", "paris"}
    assert await data.search("Location", ("near", f"{paris}|250|[mi_i]")) == {"lyon", "paris"}
    assert await data.search("Location", ("near", f"{paris}|240|[mi_i]")) == {"paris"}  # 386 km
    assert await data.search("Location", ("near", "0|0|1|km")) == set()


# --- :missing, _id, _lastUpdated, combining (search.html#missing, #all, #combining) --------------


MISSING = [
    ("Patient", "name", patient("x", name=[{"family": "X"}])),
    ("Patient", "gender", patient("x", gender="other")),
    ("Patient", "general-practitioner", patient("x", generalPractitioner=[{"reference": "Practitioner/1"}])),
    ("Patient", "birthdate", patient("x", birthDate="2000")),
    ("Patient", "_profile", patient("x", meta={"profile": ["http://example.org/p"]})),
    ("RiskAssessment", "probability", risk("x", 0.5)),
    ("Observation", "value-quantity", weighed("x", 1, unit="mg")),
    ("Observation", "code-value-quantity", observation("x", code={"coding": [{"code": "c"}]}, valueQuantity={"value": 1})),
    ("Location", "near", {"resourceType": "Location", "id": "x", "position": {"latitude": 1, "longitude": 2}}),
]


@pytest.mark.parametrize(("rtype", "code", "resource"), MISSING, ids=[m[1] for m in MISSING])
async def test_missing_on_every_type(data: Dataset, rtype: str, code: str, resource: dict[str, Any]) -> None:
    """`:missing=true` finds resources without a value, `false` those with one (#missing)."""
    await data.load(resource, {"resourceType": rtype, "id": "y", **({"status": "final"} if rtype != "Patient" else {})})
    assert await data.search(rtype, (f"{code}:missing", "false")) == {"x"}
    assert await data.search(rtype, (f"{code}:missing", "true")) == {"y"}


async def test_id_and_last_updated(data: Dataset) -> None:
    """`_id` takes a list of ids; `_lastUpdated` compares the stored instant (#all)."""
    await data.load(patient("a"), patient("b"))
    stamp = data.world.bodies[("Patient", "a")]["meta"]["lastUpdated"]
    await data.load(patient("c"))
    assert await data.search("Patient", ("_id", "a,c,zz")) == {"a", "c"}
    assert await data.search("Patient", ("_id:missing", "true")) == set()
    assert await data.search("Patient", ("_lastUpdated", stamp)) == {"a", "b"}
    assert await data.search("Patient", ("_lastUpdated", f"gt{stamp}")) == {"c"}
    assert await data.search("Patient", ("_lastUpdated", f"le{stamp}")) == {"a", "b"}
    assert await data.search("Patient", ("_lastUpdated", "lt2000")) == set()


async def test_and_or_and_deleted_resources(data: Dataset) -> None:
    """Repeated parameters AND, commas OR; deleted resources are never found (#combining)."""
    await data.load(patient("both", name=[{"given": ["Anne"], "family": "Bell"}]),
                    patient("anne", name=[{"given": ["Anne"], "family": "Roe"}]),
                    patient("gone", name=[{"given": ["Anne"], "family": "Bell"}]))
    await data.delete("Patient", "gone")
    assert await data.search("Patient", ("name", "anne"), ("name", "bell")) == {"both"}
    assert await data.search("Patient", ("name", "roe,bell")) == {"both", "anne"}
    assert await data.search("Patient", ("name", "anne"), ("family", "zzz,roe")) == {"anne"}


async def test_a_rolled_back_unit_leaves_no_index_behind(data: Dataset) -> None:
    """Parameters first indexed by a unit of work that fails keep their own values later:
    nothing of the failed unit remains (http.html#transaction: all or nothing)."""
    first = patient("a", name=[{"family": "Smith"}], gender="male")
    with pytest.raises(FhirError):
        await data.store.commit([write(first), Write("Patient", "a", first, [], if_match=7)])
    await data.load(patient("b", birthDate="2000", address=[{"city": "Lyon"}], active=True))
    await data.load(patient("c", name=[{"family": "Jones"}], gender="male"))
    assert await data.search("Patient", ("address-city", "jones")) == set()
    assert await data.search("Patient", ("name", "lyon")) == set()
    assert await data.search("Patient", ("gender", "true")) == set()
    assert await data.search("Patient", ("name", "jones")) == {"c"}


async def test_system_level_search(data: Dataset) -> None:
    """A search over all types (http.html#search) with `_type` and common parameters."""
    await data.load(patient("p", meta={"tag": [{"code": "t"}]}), observation("o", meta={"tag": [{"code": "t"}]}),
                    {"resourceType": "Location", "id": "l"})
    assert await data.search(None, ("_tag", "t")) == {"p", "o"}
    assert await data.search(None, ("_type", "Patient,Location"), ("_id", "p,o,l")) == {"p", "l"}


# --- index use on SQLite (docs/storage.md) -------------------------------------------------------

PLANS = [
    # The most selective clause drives (an IN list); the others are per-row checks.
    ("Observation", [("patient", "p1"), ("code", f"{LOINC}|8867-4")],
     ["idx_reference_target_any", "idx_token_pk (pk=? AND pid=?)"]),
    ("Patient", [("name", "smi")], ["idx_string_value (pid=? AND value>? AND value<?)"]),
    ("Patient", [("identifier", f"{MRN}|123")], ["idx_token_code (pid=? AND code=? AND system=?)"]),
    ("Patient", [("_has:Observation:patient:code", "8867-4")],
     ["idx_token_code (pid=? AND code=?)", "idx_reference_pk (pk=? AND pid=?)"]),
    ("Observation", [("subject:Patient.name", "smi")], ["idx_string_value (pid=? AND value>? AND value<?)"]),
    ("Observation", [("patient", "p1"), ("_sort", "-date")], ["idx_date_pk (pk=? AND pid=?)"]),
    # Several values of the driving parameter: one list of their matches (it scanned every
    # Observation, an OR of lists).
    ("Observation", [("patient", "p1,p2,p3"), ("code", f"{LOINC}|8867-4")],
     ["idx_reference_target_any", "UNION ALL", "idx_token_pk (pk=? AND pid=?)"]),
    # Several ids: one list of seeks on the (type, id) key (an OR of `a.id = ?` walked every
    # Patient: 21 ms for 100 ids among 10,000, the re-match job's reads of records).
    ("Patient", [("_id", "p1,p2,p3")], ["sqlite_autoindex_resource_1 (type=? AND id=?)", "UNION ALL"]),
]


@pytest.mark.parametrize(("rtype", "params", "indexes"), PLANS, ids=[str(p[1]) for p in PLANS])
async def test_typical_searches_seek_indexes(
    tmp_path: Path, rtype: str, params: list[tuple[str, str]], indexes: list[str]
) -> None:
    """The common shapes seek index entries, then the matching resources by pk: no index
    table is scanned, nor every resource of the type."""
    store = SqliteStore(tmp_path / "plans.db")
    await store.open()
    try:
        await store.commit([write(r) for r in (
            patient("p1", name=[{"family": "Smith"}], identifier=[{"system": MRN, "value": "123"}]),
            observation("o1", subject={"reference": "Patient/p1"}, effectiveDateTime="2020",
                        code={"coding": [{"system": LOINC, "code": "8867-4"}]}),
        )])
        with closing(sqlite3.connect(store.path)) as conn:
            plan = SqliteSearch(conn, store.ids, store.registry).plan(query(rtype, *params))
    finally:
        await store.close()
    assert not [step for step in plan if step.startswith("SCAN")], plan
    assert any(step.startswith("SEARCH a ") and "rowid=?" in step for step in plan), plan
    for index in indexes:
        assert any(index in step for step in plan), (index, plan)


async def test_an_unselective_clause_walks_resources_in_page_order(tmp_path: Path) -> None:
    """When every clause matches many rows, no match list is built: resources are read in
    pk order and checked one by one, so the first page comes without collecting every match."""
    store = SqliteStore(tmp_path / "walk.db")
    await store.open()
    try:
        await store.commit([write(observation(f"o{n}", code={"coding": [{"system": LOINC, "code": "8867-4"}]}))
                            for n in range(ESTIMATE_CAP + 1)])
        with closing(sqlite3.connect(store.path)) as conn:
            search = SqliteSearch(conn, store.ids, store.registry)
            plan = search.plan(query("Observation", ("code", "8867-4")))
            selective = search.plan(query("Observation", ("code", "8867-4"), ("_id", "o7")))
        page = await store.search(query("Observation", ("code", "8867-4")))
    finally:
        await store.close()
    assert not [step for step in plan if step.startswith("SCAN")], plan
    assert any("idx_token_pk (pk=? AND pid=?)" in step for step in plan), plan
    assert not any("idx_token_code" in step for step in plan), plan
    assert any("sqlite_autoindex_resource_1 (type=? AND id=?)" in step for step in selective), selective
    assert [v.id for v in page.matches] == [f"o{n}" for n in range(20)]


@pytest.mark.parametrize("settled", [False, True])
def test_parameter_ids_survive_rollbacks(settled: bool) -> None:
    """A pid inserted by a rolled-back unit is never cached: SQLite reuses the rowid for the
    next new parameter. With `settle` reported after each transaction, or without it."""
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        conn.executescript(INDEX_TABLES)
        _rollback_then_commit(conn, ParamIds(), settled)


def _rollback_then_commit(conn: sqlite3.Connection, ids: ParamIds, settled: bool) -> None:
    def unit(code: str, commit: bool) -> int:
        conn.execute("BEGIN IMMEDIATE")
        pid = ids.ensure(conn, "Patient", code)
        assert ids.ensure(conn, "Patient", code) == pid
        conn.execute("COMMIT" if commit else "ROLLBACK")
        if settled:
            ids.settle(commit)
        return pid

    lost = unit("name", commit=False)
    kept = unit("gender", commit=True)
    assert kept == lost  # the rowid came back
    conn.execute("BEGIN IMMEDIATE")
    assert ids.get(conn, "Patient", "name") is None
    assert ids.ensure(conn, "Patient", "name") != kept
    assert ids.get(conn, "Patient", "gender") == kept
    conn.execute("COMMIT")
