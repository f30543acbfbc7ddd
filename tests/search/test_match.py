"""The reference evaluator against the spec's own examples (search.html#date, #number,
#quantity, #string, #token, #reference, #uri, #composite, #missing, #not, #chaining, #has)
and properties of the prefix rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.search import (
    Clause,
    DateEntry,
    DatePredicate,
    IndexEntry,
    NumberEntry,
    ReferenceEntry,
    Unsupported,
    extract,
    matches,
    parse_query,
)
from fhir_server.search.params.date import match_date
from fhir_server.search.params.number import match_range

NOW = 1_700_000_000_000_000


def hit(rtype: str, resource: dict[str, Any], *params: tuple[str, str], resolver: Any = None) -> bool:
    query, issues = parse_query(rtype, list(params), now=NOW)
    assert issues == [], issues
    return matches(query, extract({"resourceType": rtype, **resource}), resolver)


def date_hit(search: str, stored: str) -> bool:
    return hit("Patient", {"birthDate": stored} if "T" not in stored else {"meta": {"lastUpdated": stored}},
               ("birthdate" if "T" not in stored else "_lastUpdated", search))


# --- date ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("search", "stored", "expected"), [
    # search.html#date examples
    ("eq2013-01-14", "2013-01-14T00:00:00Z", True),
    ("eq2013-01-14", "2013-01-14T10:00:00Z", True),
    ("eq2013-01-14", "2013-01-15T00:00:00Z", False),
    ("ne2013-01-14", "2013-01-15T00:00:00Z", True),
    ("ne2013-01-14", "2013-01-14T10:00:00Z", False),
    ("lt2013-01-14T10:00", "2013-01-14", True),  # the day starts before 10:00
    ("gt2013-01-14T10:00", "2013-01-14", True),  # the day ends after 10:00
    ("eq2013-01-14T10:00", "2013-01-14", False),
    ("ge2013-03-14", "2013-03-14", True),
    ("ge2013-03-14", "2013-03-13", False),
    ("le2013-03-14", "2013-03-14", True),
    ("le2013-03-14", "2013-03-15", False),
    ("sa2013-03-14", "2013-03-15", True),
    ("sa2013-03-14", "2013-03-14T23:00:00Z", False),
    ("eb2013-03-14", "2013-03-13", True),
    ("eb2013-03-14", "2013-03-14", False),
    ("2013", "2013-07-01", True),
    ("2013-07", "2013", False),  # the stored year is wider than the searched month
    ("lt2013-07", "2013", True),
])
def test_date_prefixes(search: str, stored: str, expected: bool) -> None:
    """Date values are ranges (search.html#date): eq means the search range contains the
    stored range; gt/lt compare the ends; sa/eb need no overlap."""
    assert date_hit(search, stored) is expected


def test_periods_and_open_ends() -> None:
    """An ongoing Period (no end) is after any date; eq cannot contain an open range."""
    enc = {"period": {"start": "2020-01-01"}}
    assert hit("Encounter", enc, ("date", "gt2030"))
    assert not hit("Encounter", enc, ("date", "lt2019"))
    assert not hit("Encounter", enc, ("date", "eq2020"))
    closed = {"period": {"start": "2020-01-10", "end": "2020-01-20"}}
    assert hit("Encounter", closed, ("date", "2020-01"))
    assert hit("Encounter", closed, ("date", "ge2020-01-15"))  # ends after the 15th
    assert not hit("Encounter", closed, ("date", "sa2020-01-15"))
    # ge: "the range above the search value intersects the target, or the search range
    # contains it" -- a period ending during the searched day does neither (le mirrors it).
    ends_inside = {"period": {"start": "2020-01-10", "end": "2020-01-15T12:00:00Z"}}
    assert not hit("Encounter", ends_inside, ("date", "ge2020-01-15"))
    assert hit("Encounter", ends_inside, ("date", "le2020-01-15"))
    starts_inside = {"period": {"start": "2020-01-15T12:00:00Z", "end": "2020-01-20"}}
    assert not hit("Encounter", starts_inside, ("date", "le2020-01-15"))
    assert hit("Encounter", starts_inside, ("date", "ge2020-01-15"))


def test_ap_uses_ten_percent_of_the_distance_to_now() -> None:
    # now is 2023-11-14; ap2013-01-01 reaches about a year either way.
    assert date_hit("ap2013-01-01", "2013-11-01")
    assert not date_hit("ap2013-01-01", "2016-01-01")


def test_timezones_are_compared_in_utc() -> None:
    assert date_hit("2013-01-14", "2013-01-15T08:00:00+10:00")
    assert not date_hit("2013-01-14", "2013-01-14T20:00:00-05:00")


# --- number and quantity ----------------------------------------------------------------------


@pytest.mark.parametrize(("search", "stored", "expected"), [
    ("100", 100, True), ("100", 99.5, True), ("100", 100.4, True), ("100", 100.5, False),
    ("100.00", 100.004, True), ("100.00", 100.006, False),
    ("lt100", 100, False), ("lt100", 99.9, True), ("le100", 100, True),
    ("gt100", 100, False), ("gt100", 100.4, True), ("ge100", 100, True), ("ge100", 99.9, False),
    ("ne100", 101, True), ("ne100", 100.2, False),
    ("sa100", 100.5, True), ("sa100", 100.4, False), ("eb100", 99.4, True), ("eb100", 99.5, False),
    ("ap100", 109, True), ("ap100", 112, False),
    ("1e2", 140, True), ("1e2", 151, False),
])
def test_number_prefixes(search: str, stored: float, expected: bool) -> None:
    """search.html#number: `100` is [99.5, 100.5); `lt100` is less than exactly 100."""
    risk = {"prediction": [{"probabilityDecimal": stored}]}
    assert hit("RiskAssessment", risk, ("probability", search)) is expected


def test_number_range_targets() -> None:
    """A Range matches eq only when the search range contains it."""
    risk = {"prediction": [{"probabilityRange": {"low": {"value": 0.2}, "high": {"value": 0.3}}}]}
    assert hit("RiskAssessment", risk, ("probability", "gt0.25"))
    assert hit("RiskAssessment", risk, ("probability", "lt0.25"))
    assert not hit("RiskAssessment", risk, ("probability", "0.25"))
    assert hit("RiskAssessment", risk, ("probability", "0"))  # [-0.5, 0.5) contains [0.2, 0.3]


def test_quantity_units() -> None:
    """search.html#quantity: system|code must both match; ||code matches code or unit."""
    obs = {"valueQuantity": {"value": 5.4, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}
    assert hit("Observation", obs, ("value-quantity", "5.4|http://unitsofmeasure.org|mg"))
    assert not hit("Observation", obs, ("value-quantity", "5.4|http://other.org|mg"))
    assert hit("Observation", obs, ("value-quantity", "5.4||mg"))
    assert hit("Observation", obs, ("value-quantity", "gt5"))
    assert not hit("Observation", obs, ("value-quantity", "5.4||g"))
    unit_only = {"valueQuantity": {"value": 5.4, "unit": "milligram"}}
    assert hit("Observation", unit_only, ("value-quantity", "5.4||milligram"))


def test_quantity_comparator_is_a_range() -> None:
    obs = {"valueQuantity": {"value": 5, "comparator": "<"}}
    assert hit("Observation", obs, ("value-quantity", "lt4"))
    assert not hit("Observation", obs, ("value-quantity", "gt6"))


# --- string, token, reference, uri ----------------------------------------------------------


def test_string_matching() -> None:
    """search.html#string: starts-with ignoring case and accents; :contains; :exact."""
    patient = {"name": [{"family": "Müller", "given": ["Eve"]}]}
    assert hit("Patient", patient, ("name", "mul"))
    assert hit("Patient", patient, ("name", "MÜLL"))
    assert not hit("Patient", patient, ("name", "ller"))
    assert hit("Patient", patient, ("name:contains", "LLE"))
    assert hit("Patient", patient, ("name:exact", "Müller"))
    assert not hit("Patient", patient, ("name:exact", "muller"))
    assert hit("Patient", patient, ("name", "zzz,eve"))  # OR


def test_token_matching() -> None:
    obs = {"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "Pulse"},
           "status": "final"}
    assert hit("Observation", obs, ("code", "8867-4"))
    assert hit("Observation", obs, ("code", "http://loinc.org|8867-4"))
    assert hit("Observation", obs, ("code", "http://loinc.org|"))
    assert not hit("Observation", obs, ("code", "|8867-4"))  # it has a system
    assert hit("Observation", obs, ("status", "|final"))  # codes carry no system
    assert not hit("Observation", obs, ("code", "8867-4X"))
    assert not hit("Observation", obs, ("status", "FINAL"))  # tokens are case-sensitive
    assert hit("Observation", obs, ("code:text", "heart"))
    assert hit("Observation", obs, ("code:text", "puls"))


def test_not_includes_resources_without_a_value() -> None:
    """search.html#modifiers: :not returns resources that do not have a matching value,
    including those with no value at all."""
    assert hit("Patient", {"gender": "female"}, ("gender:not", "male"))
    assert not hit("Patient", {"gender": "male"}, ("gender:not", "male"))
    assert hit("Patient", {}, ("gender:not", "male"))
    assert not hit("Patient", {"gender": "other"}, ("gender:not", "male,other"))


def test_identifier_of_type() -> None:
    patient = {"identifier": [{"system": "http://h.org", "value": "1",
                               "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}]}
    assert hit("Patient", patient, ("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|MR|1"))
    assert not hit("Patient", patient, ("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|SS|1"))
    assert hit("Patient", patient, ("identifier", "http://h.org|1"))


def test_missing() -> None:
    assert hit("Patient", {}, ("birthdate:missing", "true"))
    assert not hit("Patient", {"birthDate": "2000"}, ("birthdate:missing", "true"))
    assert hit("Patient", {"birthDate": "2000"}, ("birthdate:missing", "false"))


def test_reference_matching() -> None:
    obs = {"subject": {"reference": "Patient/1/_history/2"},
           "performer": [{"reference": "http://other.org/fhir/Practitioner/9"},
                         {"identifier": {"system": "http://npi", "value": "77"}}]}
    assert hit("Observation", obs, ("subject", "Patient/1"))
    assert hit("Observation", obs, ("subject", "1"))
    assert hit("Observation", obs, ("subject:Patient", "1"))
    assert not hit("Observation", obs, ("subject:Group", "1"))
    assert hit("Observation", obs, ("subject", "Patient/1/_history/2"))
    assert not hit("Observation", obs, ("subject", "Patient/1/_history/3"))
    assert hit("Observation", obs, ("patient", "1"))
    # An absolute reference to another server is not the local Practitioner/9.
    assert not hit("Observation", obs, ("performer", "Practitioner/9"))
    assert hit("Observation", obs, ("performer", "http://other.org/fhir/Practitioner/9"))
    assert hit("Observation", obs, ("performer:identifier", "http://npi|77"))
    assert not hit("Observation", obs, ("performer:identifier", "|77"))


def test_uri_matching() -> None:
    vs = {"url": "http://acme.org/fhir/ValueSet/123"}
    assert hit("ValueSet", vs, ("url", "http://acme.org/fhir/ValueSet/123"))
    assert not hit("ValueSet", vs, ("url", "http://acme.org/fhir/ValueSet"))
    assert hit("ValueSet", vs, ("url:below", "http://acme.org/fhir/"))
    assert hit("ValueSet", vs, ("url:above", "http://acme.org/fhir/ValueSet/123/_history/5"))
    assert not hit("ValueSet", vs, ("url:above", "http://acme.org/other"))


def test_composite_parts_must_come_from_the_same_component() -> None:
    bp = {"component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 120}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 80}},
    ]}
    assert hit("Observation", bp, ("component-code-value-quantity", "http://loinc.org|8480-6$gt100"))
    assert not hit("Observation", bp, ("component-code-value-quantity", "http://loinc.org|8462-4$gt100"))


def test_near() -> None:
    amsterdam = {"position": {"latitude": 52.3676, "longitude": 4.9041}}
    assert hit("Location", amsterdam, ("near", "52.0907|5.1214|50|km"))  # Utrecht, ~35 km
    assert not hit("Location", amsterdam, ("near", "52.0907|5.1214|30|km"))
    assert hit("Location", amsterdam, ("near", "52.0907|5.1214|25|[mi_i]"))


# --- chains and _has ----------------------------------------------------------------------------


class DictResolver:
    """Resolves over a fixed set of resources (what a store does with its index)."""

    def __init__(self, resources: Iterable[dict[str, Any]]) -> None:
        self.by_key = {(r["resourceType"], r["id"]): extract(r) for r in resources}

    def entries(self, resource_type: str, resource_id: str) -> Sequence[IndexEntry] | None:
        return self.by_key.get((resource_type, resource_id))

    def referencing(self, source_type: str, param: str, target_type: str, target_id: str) -> Iterable[Sequence[IndexEntry]]:
        for (rtype, _), entries in self.by_key.items():
            if rtype == source_type and any(
                type(e) is ReferenceEntry and e.param == param and e.url is None
                and e.type == target_type and e.id == target_id for e in entries
            ):
                yield entries


RESOURCES = [
    {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]},
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Smith"}], "generalPractitioner": [{"reference": "Practitioner/dr"}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Jones"}]},
    {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"},
     "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]}},
    {"resourceType": "AuditEvent", "id": "a1", "entity": [{"what": {"reference": "Observation/o1"}}],
     "agent": [{"who": {"reference": "Practitioner/dr"}}]},
]


def test_chains_follow_local_references() -> None:
    resolver = DictResolver(RESOURCES)
    obs = RESOURCES[3]
    assert hit("Observation", obs, ("subject:Patient.name", "smi"), resolver=resolver)
    assert hit("Observation", obs, ("subject.name", "smi"), resolver=resolver)
    assert not hit("Observation", obs, ("subject:Patient.name", "jon"), resolver=resolver)
    assert hit("Observation", obs, ("subject:Patient.general-practitioner:Practitioner.name", "house"), resolver=resolver)


def test_has_finds_referencing_resources() -> None:
    resolver = DictResolver(RESOURCES)
    p1, p2 = RESOURCES[1], RESOURCES[2]
    assert hit("Patient", p1, ("_has:Observation:patient:code", "1234-5"), resolver=resolver)
    assert not hit("Patient", p2, ("_has:Observation:patient:code", "1234-5"), resolver=resolver)
    nested = ("_has:Observation:patient:_has:AuditEvent:entity:agent", "Practitioner/dr")
    assert hit("Patient", p1, nested, resolver=resolver)


def test_chains_without_a_resolver_are_unsupported() -> None:
    query, _ = parse_query("Observation", [("subject:Patient.name", "x")])
    with pytest.raises(Unsupported):
        matches(query, extract(RESOURCES[3]))
    query, _ = parse_query("Patient", [("_has:Observation:patient:code", "x")])
    with pytest.raises(Unsupported):
        matches(query, extract(RESOURCES[1]))


def test_matches_a_clause_or_predicate_alone() -> None:
    entries = extract({"resourceType": "Patient", "gender": "male"})
    query, _ = parse_query("Patient", [("gender", "male")])
    clause: Clause = query.clauses[0]
    assert matches(clause, entries) and matches(clause.any_of[0], entries)
    assert matches(query.restrict(), entries)


def test_synthea_observations_by_patient(synthea: list[dict[str, Any]]) -> None:
    """Every Synthea Observation matches `patient=<its subject>` and no other patient."""
    patients = [r["id"] for r in synthea if r["resourceType"] == "Patient"]
    for obs in (r for r in synthea if r["resourceType"] == "Observation"):
        own = obs["subject"]["reference"].split("/")[1]
        for pid in patients:
            query, _ = parse_query("Observation", [("patient", pid)])
            assert matches(query, extract(obs)) is (pid == own)


# --- properties of the prefix rules -----------------------------------------------------------

ranges = st.tuples(st.integers(-10**6, 10**6), st.integers(0, 10**6)).map(lambda t: (t[0], t[0] + t[1]))


@given(ranges, ranges)
def test_date_prefix_relations(search: tuple[int, int], stored: tuple[int, int]) -> None:
    """eq implies ge and le; ne is not eq; sa implies gt; eb implies lt."""
    def m(prefix: str) -> bool:
        return match_date(DatePredicate("d", prefix, search[0], search[1], ""), DateEntry("d", *stored))  # type: ignore[arg-type]

    assert m("ne") is not m("eq")
    if m("eq"):
        assert m("ge") and m("le")
    if m("sa"):
        assert m("gt") and not m("lt")
    if m("eb"):
        assert m("lt") and not m("gt")


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_number_points_order_totally(value: float, stored: float) -> None:
    """For exact stored numbers, exactly one of lt, eq-exactly, gt holds against the value."""
    lt = match_range("lt", value, value, value, stored, stored)
    gt = match_range("gt", value, value, value, stored, stored)
    le = match_range("le", value, value, value, stored, stored)
    ge = match_range("ge", value, value, value, stored, stored)
    assert (lt, gt) != (True, True)
    assert le == (lt or stored == value) and ge == (gt or stored == value)


def test_stored_decimals_are_points() -> None:
    """A stored decimal is [v, v], so `lt100` never finds a stored 100 (search.html#number)."""
    entry = extract({"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 100}]})
    assert NumberEntry("probability", 100.0, 100.0, 100.0) in entry
