"""Write-time index extraction (search.html: string, token, reference, date, number,
quantity, uri, composite, special; search.html#all for _id, _lastUpdated, _tag, _profile,
_security, _source), on hand-made resources, the official examples and Synthea."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.search import (
    DATE_MAX,
    DATE_MIN,
    CompositeEntry,
    DateEntry,
    Extractor,
    NumberEntry,
    PositionEntry,
    QuantityEntry,
    ReferenceEntry,
    Registry,
    SearchParam,
    StringEntry,
    TokenEntry,
    UriEntry,
    extract,
)
from fhir_server.search.params.date import date_range

US = 1_000_000
DAY = 86_400 * US


def of(resource: dict[str, Any], param: str, **kwargs: Any) -> list[Any]:
    return [e for e in extract(resource, **kwargs) if e.param == param]


def utc(text: str) -> int:
    r = date_range(text)
    assert r is not None
    return r[0]


# --- string -----------------------------------------------------------------------------


def test_human_name_indexes_every_part_normalized() -> None:
    """search.html#string: name matches family, given, prefix, suffix and text; matching is
    case- and accent-insensitive, so the normalized form is stored beside the exact one."""
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Müller-Lüdenscheidt", "given": ["José", "Ann  Marie"], "prefix": ["Dr."],
                  "suffix": ["PhD"], "text": "Dr. José Müller"}],
    }
    assert {(e.value, e.exact) for e in of(patient, "name")} == {
        ("muller-ludenscheidt", "Müller-Lüdenscheidt"),
        ("jose", "José"),
        ("ann marie", "Ann  Marie"),
        ("dr.", "Dr."),
        ("phd", "PhD"),
        ("dr. jose muller", "Dr. José Müller"),
    }
    assert [e.exact for e in of(patient, "family")] == ["Müller-Lüdenscheidt"]
    assert {e.exact for e in of(patient, "given")} == {"José", "Ann  Marie"}
    assert all(isinstance(e, StringEntry) for e in of(patient, "name"))


def test_address_indexes_lines_city_district_state_postal_code_country_text() -> None:
    patient = {
        "resourceType": "Patient",
        "address": [{"line": ["1 Main St", "Apt 2"], "city": "Zürich", "district": "Kreis 1", "state": "ZH",
                     "postalCode": "8001", "country": "CH", "text": "1 Main St, Zürich"}],
    }
    assert {e.value for e in of(patient, "address")} == {
        "1 main st", "apt 2", "zurich", "kreis 1", "zh", "8001", "ch", "1 main st, zurich"}
    assert [e.value for e in of(patient, "address-city")] == ["zurich"]
    assert [e.value for e in of(patient, "address-postalcode")] == ["8001"]


def test_string_normalization_folds_case_accents_and_whitespace() -> None:
    from fhir_server.search import normalize

    assert normalize("  ÉLODIE\t  Straße ") == "elodie strasse"
    assert normalize("Ǆemal") == "dzemal"  # NFKD splits the ligature, casefold lowers it
    assert normalize("ﬁsh") == "fish"


# --- token ------------------------------------------------------------------------------


def test_codeable_concept_gives_each_coding_and_its_text() -> None:
    """search.html#token: CodeableConcept.coding system|code, text from display or .text."""
    obs = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
                            {"system": "http://snomed.info/sct", "code": "364075005"}],
                 "text": "Pulse"},
    }
    assert of(obs, "code") == [
        TokenEntry("code", "http://loinc.org", "8867-4", "heart rate"),
        TokenEntry("code", "http://snomed.info/sct", "364075005", None),
        TokenEntry("code", None, None, "pulse"),
    ]


def test_identifier_keeps_system_value_type_text_and_type_coding() -> None:
    """Identifier: system|value; type.text for :text; type.coding for :of-type."""
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345",
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
                      "text": "Medical Record"}},
            {"value": "no-system"},
        ],
    }
    assert of(patient, "identifier") == [
        TokenEntry("identifier", "urn:oid:1.2.36.146.595.217.0.1", "12345", "medical record",
                   "http://terminology.hl7.org/CodeSystem/v2-0203", "MR"),
        TokenEntry("identifier", None, "no-system"),
    ]


def test_contact_point_boolean_code_and_id_tokens() -> None:
    """ContactPoint indexes its value; booleans "true"/"false"; codes and ids the code alone."""
    patient = {
        "resourceType": "Patient", "id": "p1", "active": False, "gender": "female",
        "telecom": [{"system": "phone", "value": "555-1234"}, {"system": "email", "value": "a@b.org"}],
    }
    assert [e.code for e in of(patient, "telecom")] == ["555-1234", "a@b.org"]
    assert of(patient, "email") == [TokenEntry("email", None, "a@b.org")]
    assert of(patient, "phone") == [TokenEntry("phone", None, "555-1234")]
    assert of(patient, "active") == [TokenEntry("active", None, "false")]
    assert of(patient, "gender") == [TokenEntry("gender", None, "female")]
    assert of(patient, "_id") == [TokenEntry("_id", None, "p1")]


def test_deceased_is_a_computed_boolean() -> None:
    """Patient-deceased: `deceased.exists() and deceased != false`."""
    assert of({"resourceType": "Patient"}, "deceased") == [TokenEntry("deceased", None, "false")]
    assert of({"resourceType": "Patient", "deceasedBoolean": True}, "deceased")[0].code == "true"
    assert of({"resourceType": "Patient", "deceasedBoolean": False}, "deceased")[0].code == "false"
    assert of({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}, "deceased")[0].code == "true"


def test_meta_parameters() -> None:
    """_lastUpdated from meta.lastUpdated (an instant: millisecond precision here), _tag and
    _security Codings, _profile canonical, _source uri."""
    patient = {
        "resourceType": "Patient",
        "meta": {"lastUpdated": "2024-05-01T12:00:00.123Z", "source": "http://src.org/x",
                 "profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"],
                 "tag": [{"system": "http://t.org", "code": "t1"}],
                 "security": [{"system": "http://s.org", "code": "R"}]},
    }
    low = utc("2024-05-01T12:00:00Z") + 123_000
    assert of(patient, "_lastUpdated") == [DateEntry("_lastUpdated", low, low + 999)]
    assert of(patient, "_tag") == [TokenEntry("_tag", "http://t.org", "t1")]
    assert of(patient, "_security") == [TokenEntry("_security", "http://s.org", "R")]
    assert of(patient, "_profile") == [UriEntry("_profile", "http://hl7.org/fhir/StructureDefinition/vitalsigns")]
    assert of(patient, "_source") == [UriEntry("_source", "http://src.org/x")]


# --- reference --------------------------------------------------------------------------


def test_reference_forms() -> None:
    """references.html#literal: relative, versioned, absolute, URN, contained, identifier."""
    obs = {
        "resourceType": "Observation",
        "performer": [
            {"reference": "Practitioner/pr1"},
            {"reference": "Practitioner/pr2/_history/3"},
            {"reference": "http://other.org/fhir/Organization/o1"},
            {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
            {"reference": "#contained"},
            {"identifier": {"system": "http://npi.org", "value": "123"}, "type": "Practitioner"},
            {"display": "display only"},
        ],
    }
    assert of(obs, "performer") == [
        ReferenceEntry("performer", "Practitioner", "pr1"),
        ReferenceEntry("performer", "Practitioner", "pr2", "3"),
        ReferenceEntry("performer", "Organization", "o1", None, "http://other.org/fhir/Organization/o1"),
        ReferenceEntry("performer", None, None, None, "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
        ReferenceEntry("performer", "Practitioner", None, None, None, "http://npi.org", "123"),
    ]


def test_absolute_reference_under_the_server_base_is_local() -> None:
    obs = {"resourceType": "Observation", "subject": {"reference": "https://fhir.example/r4/Patient/7"}}
    assert of(obs, "subject", base="https://fhir.example/r4") == [ReferenceEntry("subject", "Patient", "7")]
    assert of(obs, "patient", base="https://fhir.example/r4") == [ReferenceEntry("patient", "Patient", "7")]


def test_where_resolve_is_filters_by_target_type() -> None:
    """Observation-patient is `subject.where(resolve() is Patient)`: a Group subject is not
    a patient, an absolute Patient URL is."""
    group = {"resourceType": "Observation", "subject": {"reference": "Group/g1"}}
    assert of(group, "patient") == [] and len(of(group, "subject")) == 1
    absolute = {"resourceType": "Observation", "subject": {"reference": "http://x.org/Patient/p"}}
    assert [e.id for e in of(absolute, "patient")] == ["p"]


def test_canonical_references_keep_url_and_version() -> None:
    """canonical.html: url|version."""
    plan = {"resourceType": "PlanDefinition",
            "relatedArtifact": [{"type": "depends-on", "resource": "http://x.org/Library/lib|1.2"},
                                {"type": "citation", "resource": "http://x.org/Library/other"}]}
    assert of(plan, "depends-on") == [ReferenceEntry("depends-on", None, None, "1.2", "http://x.org/Library/lib")]
    assert of(plan, "composed-of") == []


def test_bundle_composition_is_the_first_entry() -> None:
    bundle = {"resourceType": "Bundle", "type": "document",
              "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}},
                        {"resource": {"resourceType": "Patient", "id": "p1"}}]}
    assert of(bundle, "composition") == [ReferenceEntry("composition", "Composition", "c1")]


# --- date -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2013", "2013-01-01T00:00:00Z", "2014-01-01T00:00:00Z"),
        ("2012-02", "2012-02-01T00:00:00Z", "2012-03-01T00:00:00Z"),  # leap February
        ("2013-01-14", "2013-01-14T00:00:00Z", "2013-01-15T00:00:00Z"),
        ("2013-01-14T10:00", "2013-01-14T10:00:00Z", "2013-01-14T10:01:00Z"),
        ("2013-01-14T10:00:00+10:00", "2013-01-14T00:00:00Z", "2013-01-14T00:00:01Z"),
        ("2013-01-14T10:00:00.5Z", "2013-01-14T10:00:00.5Z", "2013-01-14T10:00:00.6Z"),
    ],
)
def test_dates_are_ranges_of_their_precision(text: str, low: str, high: str) -> None:
    """search.html#date: a value's precision is its range; stored as [low, high] microseconds."""
    assert date_range(text) == (utc(low), utc(high) - 1)


def test_unreadable_dates_are_not_indexed() -> None:
    assert date_range("2013-02-30") is None
    assert date_range("yesterday") is None
    assert of({"resourceType": "Patient", "birthDate": "not a date"}, "birthdate") == []


def test_period_with_open_end_runs_to_date_max() -> None:
    """A Period without end is ongoing; without start, open in the past."""
    enc = {"resourceType": "Encounter", "period": {"start": "2020-01-01"}}
    assert of(enc, "date") == [DateEntry("date", utc("2020-01-01"), DATE_MAX)]
    enc = {"resourceType": "Encounter", "period": {"end": "2020-01-01"}}
    assert of(enc, "date") == [DateEntry("date", DATE_MIN, utc("2020-01-02") - 1)]


def test_timing_spans_its_events() -> None:
    """CarePlan-activity-date reads `scheduled[x]`; a Timing indexes one range from its
    earliest to its latest event."""
    plan = {"resourceType": "CarePlan", "activity": [{"detail": {
        "scheduledTiming": {"event": ["2020-01-05", "2020-01-01T10:00:00Z"]}}}]}
    assert of(plan, "activity-date") == [
        DateEntry("activity-date", utc("2020-01-01T10:00:00Z"), utc("2020-01-06") - 1)]
    bounded = {"resourceType": "CarePlan", "activity": [{"detail": {
        "scheduledTiming": {"repeat": {"boundsPeriod": {"start": "2021-03-01"}}}}}]}
    assert of(bounded, "activity-date") == [DateEntry("activity-date", utc("2021-03-01"), DATE_MAX)]


def test_choice_type_date_parameters() -> None:
    """Condition-onset-date is `onset.as(dateTime) | onset.as(Period)`; onsetAge is not a date."""
    assert of({"resourceType": "Condition", "onsetDateTime": "2019"}, "onset-date")[0].low == utc("2019")
    assert of({"resourceType": "Condition", "onsetAge": {"value": 5}}, "onset-date") == []


# --- number and quantity -----------------------------------------------------------------


def test_number_values_are_points_and_ranges_intervals() -> None:
    """RiskAssessment-probability: probabilityDecimal is a point, probabilityRange its bounds."""
    risk = {"resourceType": "RiskAssessment",
            "prediction": [{"probabilityDecimal": 0.02}, {"probabilityRange": {"low": {"value": 0.1}}}]}
    assert of(risk, "probability") == [
        NumberEntry("probability", 0.02, 0.02, 0.02),
        NumberEntry("probability", None, 0.1, float("inf")),
    ]


def test_quantity_money_range_and_comparator() -> None:
    obs = {"resourceType": "Observation",
           "valueQuantity": {"value": 5.4, "comparator": "<", "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}
    assert of(obs, "value-quantity") == [
        QuantityEntry("value-quantity", 5.4, float("-inf"), 5.4, "http://unitsofmeasure.org", "mg", "mg")]
    item = {"resourceType": "ChargeItem", "priceOverride": {"value": 40, "currency": "EUR"}}
    assert of(item, "price-override") == [QuantityEntry("price-override", 40.0, 40.0, 40.0, "urn:iso:std:iso:4217", "EUR", None)]
    cond = {"resourceType": "Condition", "onsetRange": {"low": {"value": 2, "unit": "a", "code": "a"},
                                                        "high": {"value": 4, "code": "a"}}}
    assert of(cond, "onset-age") == [QuantityEntry("onset-age", None, 2.0, 4.0, None, "a", "a")]


# --- uri, composite, special ------------------------------------------------------------


def test_uri_values() -> None:
    vs = {"resourceType": "ValueSet", "url": "http://acme.org/fhir/ValueSet/123"}
    assert of(vs, "url") == [UriEntry("url", "http://acme.org/fhir/ValueSet/123")]


def test_composite_combines_values_of_the_same_component() -> None:
    """search.html#composite: code and value must come from the same component."""
    bp = {"resourceType": "Observation", "component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": 120, "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}], "text": "Diastolic"},
         "valueQuantity": {"value": 80, "code": "mm[Hg]"}},
    ]}
    pairs = {(e.components[0].code, e.components[1].value) for e in of(bp, "component-code-value-quantity")}
    assert pairs == {("8480-6", 120.0), ("8462-4", 80.0)}  # never (8480-6, 80)
    entry = of(bp, "component-code-value-quantity")[0]
    assert isinstance(entry, CompositeEntry)
    assert [c.param for c in entry.components] == ["component-code", "component-value-quantity"]


def test_composite_at_the_resource_and_with_percent_resource() -> None:
    """MolecularSequence-chromosome-variant-coordinate reads `%resource.referenceSeq.chromosome`."""
    seq = {"resourceType": "MolecularSequence", "coordinateSystem": 0,
           "referenceSeq": {"chromosome": {"coding": [{"system": "http://x", "code": "1"}]}},
           "variant": [{"start": 10, "end": 20}]}
    (entry,) = of(seq, "chromosome-variant-coordinate")
    assert entry.components == (TokenEntry("chromosome", "http://x", "1"),
                                NumberEntry("variant-start", 10.0, 10.0, 10.0),
                                NumberEntry("variant-end", 20.0, 20.0, 20.0))
    obs = {"resourceType": "Observation", "code": {"text": "only text"}, "valueQuantity": {"value": 1}}
    assert of(obs, "code-value-quantity") == []  # a text-only code cannot match system|code


def test_code_value_date_reads_value_as_datetime() -> None:
    """Observation-code-value-date's component is `value.as(DateTime)`: read as FHIR dateTime."""
    obs = {"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "8665-2"}]},
           "valueDateTime": "2016-12-30"}
    (entry,) = of(obs, "code-value-date")
    assert entry.components[1] == DateEntry("value-date", utc("2016-12-30"), utc("2016-12-31") - 1)


def test_location_position_for_near() -> None:
    loc = {"resourceType": "Location", "position": {"longitude": 4.89, "latitude": 52.37}}
    assert of(loc, "near") == [PositionEntry("near", 52.37, 4.89)]


# --- whole resources ---------------------------------------------------------------------


def test_every_official_example_extracts(examples: list[dict[str, Any]]) -> None:
    """All 607 R4 examples index without error, with entries of every parameter type (the
    example set has no Location, hence no PositionEntry: see test_location_position_for_near)."""
    kinds: set[str] = set()
    for resource in examples:
        entries = extract(resource)
        assert all(e.param for e in entries)
        kinds |= {type(e).__name__ for e in entries}
    assert kinds >= {"StringEntry", "TokenEntry", "ReferenceEntry", "DateEntry", "NumberEntry",
                     "QuantityEntry", "UriEntry", "CompositeEntry"}


def test_every_synthea_resource_extracts(synthea: list[dict[str, Any]]) -> None:
    for resource in synthea:
        entries = extract(resource)
        assert TokenEntry("_id", None, resource["id"]) in entries
    obs = next(r for r in synthea if r["resourceType"] == "Observation" and "valueQuantity" in r)
    entries = extract(obs)
    assert ReferenceEntry("patient", "Patient", obs["subject"]["reference"].split("/")[1]) in entries
    assert any(e.param == "value-quantity" for e in entries)


def test_entries_are_frozen_and_hashable() -> None:
    import dataclasses

    entry = TokenEntry("code", "s", "c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.code = "x"  # type: ignore[misc]
    assert hash(entry) == hash(TokenEntry("code", "s", "c"))
    assert entry != TokenEntry("code", "s", "d")


def test_unknown_resource_types_have_no_entries() -> None:
    assert extract({"resourceType": "NotAType", "id": "1"}) == []
    assert extract({}) == []


# --- fallback to fhirpathpy ---------------------------------------------------------------


def test_parameters_that_fall_back_to_fhirpathpy(registry: Registry, examples: list[dict[str, Any]]) -> None:
    """DeviceDefinition-classification: its R4 expression names an element that R4
    DeviceDefinition does not have (`classification`), so the compiler refuses it. Our own
    parameters (profiles/) are all compiled."""
    extractor = Extractor(registry)
    for resource in examples:
        extractor.extract(resource)
    for rtype in extractor.registry.resource_types:
        extractor.plan(rtype)
    assert set(extractor.fallbacks) == {"DeviceDefinition-classification"}


def test_fallback_evaluates_what_the_compiler_refuses(registry: Registry) -> None:
    """An expression outside the compiled subset (`or`) still indexes, through fhirpathpy."""
    custom = SearchParam(code="named", type="string", base=("Patient",), url="urn:test:named",
                         expression="Patient.name.family | Patient.name.given.where($this = 'Bo' or $this = 'Al')")
    reg = Registry([*registry.params, custom], resource_types=registry.resource_types,
                   elements=registry.elements, base_types=registry.base_types)
    extractor = Extractor(reg)
    patient = {"resourceType": "Patient", "name": [{"family": "Smith", "given": ["Al", "Cy"]}]}
    assert {e.exact for e in extractor.extract(patient) if e.param == "named"} == {"Smith", "Al"}
    assert "named" in extractor.fallbacks


def test_known_unindexable_branches(registry: Registry) -> None:
    """Branches an R4 expression reaches that no index type can hold: dates given as string,
    Age or Range (Procedure.performed[x], Immunization.occurrenceString, CarePlan scheduled
    string), SampledData quantities, Consent.sourceAttachment as a reference, Group
    characteristic values that are not codes, and DocumentReference-relationship, whose R4
    components are swapped (the reference component points at `code`)."""
    extractor = Extractor(registry)
    for rtype in extractor.registry.resource_types:
        extractor.plan(rtype)
    assert extractor.unindexed == {
        ("CarePlan", "activity-date", "string"),
        ("Consent", "source-reference", "Attachment"),
        ("DocumentReference", "relationship$relatesto", "code"),
        ("Group", "characteristic-value$value", "Quantity"),
        ("Group", "characteristic-value$value", "Range"),
        ("Group", "characteristic-value$value", "Reference"),
        ("Immunization", "date", "string"),
        ("Observation", "combo-value-quantity", "SampledData"),
        ("Observation", "component-value-quantity", "SampledData"),
        ("Observation", "value-quantity", "SampledData"),
        ("Procedure", "date", "Age"),
        ("Procedure", "date", "Range"),
        ("Procedure", "date", "string"),
    }



_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["value", "system", "code", "coding", "reference", "start", "end", "family", "given", "low", "high",
         "text", "display", "type", "event", "repeat", "latitude", "longitude"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["Patient", "Observation", "Encounter", "Location", "MolecularSequence", "Bundle"]),
       st.sampled_from(["name", "code", "valueQuantity", "subject", "period", "component", "position",
                        "identifier", "telecom", "meta", "referenceSeq", "variant", "entry", "effectiveTiming"]),
       _json)
def test_malformed_values_never_break_extraction(rtype: str, key: str, junk: Any) -> None:
    """Validation runs first, but extraction must not fail a write on a shape it did not expect:
    any JSON in any element yields entries or nothing."""
    for entry in extract({"resourceType": rtype, "id": "x", key: junk}):
        assert entry.param
