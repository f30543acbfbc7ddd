"""Query string -> Query AST and back (search.html: #prefix, #modifiers, #escaping,
#combining, #chaining, #has, #include, #revinclude, #_sort, #count, #total, #_summary,
#_elements, #errors)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.model.errors import Issue
from fhir_server.search import (
    Chain,
    Clause,
    CompositePredicate,
    DatePredicate,
    Has,
    Include,
    Missing,
    NearPredicate,
    Not,
    NumberPredicate,
    OfTypePredicate,
    Query,
    QuantityPredicate,
    ReferenceIdentifierPredicate,
    ReferencePredicate,
    Sort,
    StringPredicate,
    TokenPredicate,
    TokenTextPredicate,
    UriPredicate,
    format_query,
    parse_query,
)
from fhir_server.search import normalize
from fhir_server.search.format import split_escaped, unescape
from fhir_server.search.params.date import date_range

NOW = 1_700_000_000_000_000  # fixed "now" for ap


def parse(rtype: str | None, *params: tuple[str, str]) -> tuple[Query, list[Issue]]:
    return parse_query(rtype, list(params), now=NOW)


def one(rtype: str, name: str, value: str) -> Clause:
    query, issues = parse(rtype, (name, value))
    assert issues == [], issues
    (clause,) = query.clauses
    return clause


def issue(rtype: str | None, name: str, value: str) -> Issue:
    query, issues = parse(rtype, (name, value))
    assert query.clauses == () and len(issues) == 1
    assert issues[0].severity == "warning" and issues[0].expression[0].startswith(name.split("=")[0])
    return issues[0]


# --- combining and escaping ----------------------------------------------------------------


def test_repeated_parameters_and_comma_values_or() -> None:
    """search.html#combining: `a=x,y` is OR, `a=x&a=y` AND."""
    query, _ = parse("Patient", ("gender", "male,female"), ("gender", "other"))
    assert query.clauses == (
        Clause((TokenPredicate("gender", None, "male"), TokenPredicate("gender", None, "female"))),
        Clause((TokenPredicate("gender", None, "other"),)),
    )


def test_escaped_separators_are_literal() -> None:
    """search.html#escaping: `\\,` `\\|` `\\$` `\\\\`."""
    assert one("Patient", "family", "a\\,b") == Clause((StringPredicate("family", "a,b", "a,b"),))
    assert one("Patient", "identifier", "sys\\|x|v") == Clause((TokenPredicate("identifier", "sys|x", "v"),))
    assert split_escaped("a\\,b,c", ",") == ["a\\,b", "c"]
    assert unescape("a\\\\b\\$") == "a\\b$"


@given(st.text(alphabet="ab,|$\\", max_size=12), st.sampled_from([",", "|", "$"]))
def test_split_escaped_cuts_at_each_unescaped_separator_only(text: str, sep: str) -> None:
    """With or without escapes in the value: the parts rejoin to it, and none holds a separator
    that no backslash escapes."""
    parts = split_escaped(text, sep)
    assert sep.join(parts) == text
    for part in parts:
        i = 0
        while i < len(part):
            assert part[i] != sep
            i += 2 if part[i] == "\\" else 1


# --- types ---------------------------------------------------------------------------------


def test_string_modifiers() -> None:
    assert one("Patient", "name", "Élo") == Clause((StringPredicate("name", "elo", "Élo", "start"),))
    assert one("Patient", "name:exact", "Élo").any_of[0].mode == "exact"
    assert one("Patient", "name:contains", "lo").any_of[0].mode == "contains"


def test_token_forms() -> None:
    """search.html#token: [code], [system]|[code], |[code], [system]|."""
    values = one("Observation", "code", "1234,http://loinc.org|8867-4,|x,http://loinc.org|").any_of
    assert values == (
        TokenPredicate("code", None, "1234"),
        TokenPredicate("code", "http://loinc.org", "8867-4"),
        TokenPredicate("code", "", "x"),
        TokenPredicate("code", "http://loinc.org", None),
    )


def test_token_modifiers() -> None:
    assert one("Observation", "code:text", "Héart").any_of == (TokenTextPredicate("code", "heart", "Héart"),)
    assert one("Patient", "gender:not", "male,female") == Clause(
        (Not("gender", (TokenPredicate("gender", None, "male"), TokenPredicate("gender", None, "female"))),))
    assert one("Patient", "identifier:of-type", "http://t.org|MR|12").any_of == (
        OfTypePredicate("identifier", "http://t.org", "MR", "12"),)


@pytest.mark.parametrize(("name", "code"), [
    ("code:in", "not-supported"), ("code:below", "not-supported"), ("subject:above", "not-supported"),
    ("code:exact", "invalid"), ("code:bogus", "invalid"), ("date:exact", "invalid"), ("date:above", "invalid"),
    ("subject:Patient.gender:not", "not-supported"),
])
def test_unsupported_and_invalid_modifiers(name: str, code: str) -> None:
    """R4 modifiers needing terminology (:in, :not-in, token :above/:below) are reported as
    not supported; modifiers that do not apply to the parameter's type as invalid."""
    found = issue("Observation", name, "x")
    assert found.code == code and found.details_code == "MSG_PARAM_MODIFIER_INVALID"


def test_date_prefixes_and_precision() -> None:
    """search.html#prefix: every prefix; no prefix is eq; the value keeps its precision."""
    low, high = date_range("2013-01")  # type: ignore[misc]
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"):
        (p,) = one("Observation", "date", f"{prefix}2013-01").any_of
        assert p == DatePredicate("date", prefix, low, high, "2013-01")  # type: ignore[arg-type]
    assert one("Observation", "date", "2013-01").any_of[0].prefix == "eq"


def test_date_ap_widens_by_ten_percent_of_the_distance_to_now() -> None:
    low, high = date_range("2013-01-14")  # type: ignore[misc]
    (p,) = one("Observation", "date", "ap2013-01-14").any_of
    margin = (NOW - low) // 10
    assert (p.low, p.high) == (low - margin, high + margin)


def test_number_precision() -> None:
    """search.html#number: 100 is [99.5, 100.5), 100.00 is [99.995, 100.005), 1e2 [50, 150)."""
    assert one("RiskAssessment", "probability", "100").any_of == (NumberPredicate("probability", "eq", 100.0, 99.5, 100.5, "100"),)
    (p,) = one("RiskAssessment", "probability", "100.00").any_of
    assert (p.low, p.high) == (99.995, 100.005)
    (p,) = one("RiskAssessment", "probability", "1e2").any_of
    assert (p.low, p.high) == (50.0, 150.0)
    (p,) = one("RiskAssessment", "probability", "gt-0.5").any_of
    assert (p.prefix, p.value) == ("gt", -0.5)


def test_quantity_forms() -> None:
    """search.html#quantity: [prefix][number]|[system]|[code], and ||[code] for code or unit."""
    (p,) = one("Observation", "value-quantity", "le5.4|http://unitsofmeasure.org|mg").any_of
    assert p == QuantityPredicate("value-quantity", "le", 5.4, 5.35, 5.45, "http://unitsofmeasure.org", "mg", "5.4")
    (p,) = one("Observation", "value-quantity", "5.4||mg").any_of
    assert (p.system, p.code) == (None, "mg")
    (p,) = one("Observation", "value-quantity", "5.4").any_of
    assert (p.system, p.code) == (None, None)
    assert issue("Observation", "value-quantity", "5.4|http://unitsofmeasure.org|").code == "invalid"


def test_reference_forms() -> None:
    """search.html#reference: [id], [type]/[id], url, :[type], :identifier, versions."""
    assert one("Observation", "patient", "123").any_of == (ReferencePredicate("patient", "Patient", "123"),)
    assert one("Observation", "subject", "123").any_of == (ReferencePredicate("subject", None, "123"),)
    assert one("Observation", "subject:Patient", "123").any_of == (ReferencePredicate("subject", "Patient", "123"),)
    assert one("Observation", "subject", "Patient/1/_history/2").any_of == (
        ReferencePredicate("subject", "Patient", "1", "2"),)
    assert one("Observation", "subject", "http://x.org/fhir/Patient/1").any_of == (
        ReferencePredicate("subject", None, None, None, "http://x.org/fhir/Patient/1"),)
    assert one("Observation", "subject:identifier", "http://npi|9").any_of == (
        ReferenceIdentifierPredicate("subject", "http://npi", "9"),)
    assert one("PlanDefinition", "depends-on", "http://x.org/Library/l|1.0").any_of == (
        ReferencePredicate("depends-on", None, None, "1.0", "http://x.org/Library/l"),)
    assert issue("Observation", "subject:Medication", "1").code == "invalid"


def test_absolute_reference_under_our_base_is_local() -> None:
    query, issues = parse_query("Observation", [("subject", "https://fhir.example/r4/Patient/1")],
                                base="https://fhir.example/r4")
    assert query.clauses[0].any_of == (ReferencePredicate("subject", "Patient", "1"),) and not issues


def test_uri_modifiers() -> None:
    assert one("ValueSet", "url:below", "http://acme.org/fhir/").any_of == (
        UriPredicate("url", "http://acme.org/fhir/", "below"),)
    assert one("ValueSet", "url", "http://acme.org/fhir/ValueSet/1").any_of[0].mode == "eq"


def test_composite_parts_use_their_component_types() -> None:
    """search.html#composite: parts separated by `$`, each read by its component's type."""
    (p,) = one("Observation", "code-value-quantity", "http://loinc.org|8480-6$gt100").any_of
    assert p == CompositePredicate("code-value-quantity", (
        TokenPredicate("code", "http://loinc.org", "8480-6"),
        QuantityPredicate("value-quantity", "gt", 100.0, 99.5, 100.5, None, None, "100"),
    ))
    assert issue("Observation", "code-value-quantity", "8480-6").code == "invalid"
    # R4 declares multipleOr false for composites: a comma list is refused.
    assert issue("Observation", "code-value-quantity", "a$1,b$2").code == "invalid"


def test_missing_and_near() -> None:
    assert one("Patient", "birthdate:missing", "true").any_of == (Missing("birthdate", True),)
    assert issue("Patient", "birthdate:missing", "yes").code == "invalid"
    assert one("Location", "near", "52.37|4.89|10|km").any_of == (NearPredicate("near", 52.37, 4.89, 10.0, "52.37|4.89|10|km"),)
    assert one("Location", "near", "52.37|4.89|1000|m").any_of[0].distance_km == 1.0
    assert issue("Location", "near", "52.37|4.89").code == "invalid"


# --- chains and _has -----------------------------------------------------------------------


def test_chain_with_type_and_multiple_hops() -> None:
    """search.html#chaining: `subject:Patient.general-practitioner.name=`."""
    (p,) = one("Observation", "subject:Patient.general-practitioner.name", "joe").any_of
    # Of general-practitioner's targets, Organization and Practitioner have `name`
    # (PractitionerRole has none), so the middle hop may land on either.
    assert p == Chain("subject", ("Patient",), Chain(
        "general-practitioner", ("Organization", "Practitioner"), StringPredicate("name", "joe", "joe")))


def test_chain_without_type_keeps_targets_that_define_the_parameter() -> None:
    (p,) = one("Observation", "subject.name", "x").any_of
    assert isinstance(p, Chain) and set(p.target_types) == {"Patient", "Location"}
    assert issue("Observation", "subject.nonexistent", "x").details_code == "MSG_PARAM_CHAINED"
    assert issue("Observation", "status.name", "x").details_code == "MSG_PARAM_CHAINED"


def test_has_and_nested_has() -> None:
    """search.html#has: `_has:Observation:patient:code=` and nesting."""
    (p,) = one("Patient", "_has:Observation:patient:code", "1234-5").any_of
    assert p == Has("Observation", "patient", TokenPredicate("code", None, "1234-5"))
    (p,) = one("Patient", "_has:Observation:patient:_has:AuditEvent:entity:agent", "Practitioner/1").any_of
    assert p == Has("Observation", "patient", Has("AuditEvent", "entity", ReferencePredicate("agent", "Practitioner", "1")))
    assert issue("Patient", "_has:Observation:code:code", "x").code == "invalid"  # code is not a reference
    assert issue("Patient", "_has:Nope:patient:code", "x").code == "invalid"


# --- result parameters -----------------------------------------------------------------------


def test_result_parameters() -> None:
    query, issues = parse(
        "Observation", ("_sort", "-date,code"), ("_count", "20"), ("_total", "accurate"),
        ("_summary", "count"), ("_elements", "status,code"), ("_include", "Observation:subject:Patient"),
        ("_include:iterate", "Patient:general-practitioner"), ("_revinclude", "Provenance:target"),
        ("_include", "Observation:*"), ("_revinclude", "*"), ("_format", "json"),
    )
    assert issues == []
    assert query.sort == (Sort("date", True), Sort("code", False))
    assert (query.count, query.total, query.summary, query.elements) == (20, "accurate", "count", ("status", "code"))
    assert query.include == (Include("Observation", "subject", "Patient"),
                             Include("Patient", "general-practitioner", None, True),
                             Include("Observation", None))
    assert query.revinclude == (Include("Provenance", "target"), Include(None, None))


@pytest.mark.parametrize(("name", "value"), [
    ("_count", "-1"), ("_count", "ten"), ("_sort", "nope"), ("_sort", "code-value-quantity"),
    ("_total", "all"), ("_summary", "yes"), ("_elements", ""), ("_include", "Observation"),
    ("_include", "Observation:code"), ("_include", "Patient:organization"), ("_include:deep", "Observation:subject"),
    ("_revinclude", "Provenance:target:Nope"),
])
def test_invalid_result_parameters_are_reported(name: str, value: str) -> None:
    query, issues = parse("Observation", (name, value))
    assert query == Query("Observation")
    assert [(i.code, i.expression) for i in issues] == [("invalid", (name,))]


def test_unknown_and_unsupported_parameters() -> None:
    """search.html#errors: not applied, reported for an OperationOutcome or a strict 400."""
    found = issue("Patient", "foo", "bar")
    assert (found.code, found.details_code) == ("not-supported", "MSG_PARAM_UNKNOWN")
    assert issue("Patient", "_text", "x").code == "not-supported"
    assert issue("Patient", "_filter", "name eq x").code == "not-supported"
    found = issue("Patient", "birthdate", "yesterday")
    assert (found.code, found.details_code) == ("invalid", "MSG_PARAM_INVALID")


def test_a_bad_value_drops_the_whole_parameter() -> None:
    """Applying `gender=male` alone out of `male,<bad>` would silently narrow an OR."""
    query, issues = parse("Patient", ("birthdate", "2020,bad"), ("gender", "male"))
    assert query.clauses == (Clause((TokenPredicate("gender", None, "male"),)),) and len(issues) == 1


def test_system_search_with_type() -> None:
    query, issues = parse(None, ("_type", "Patient,Observation"), ("_id", "1"))
    assert issues == [] and query.types == ("Patient", "Observation")
    assert issue(None, "name", "x").code == "not-supported"  # not common to every type
    assert issue(None, "_type", "Nope").code == "invalid"


# --- format_query --------------------------------------------------------------------------

ROUND_TRIP = [
    ("Observation", [("code", "http://loinc.org|8867-4,1234"), ("date", "ge2020-01"), ("date", "lt2021"),
                     ("subject:Patient.name", "pe\\,ter"), ("value-quantity", "gt5.4|http://unitsofmeasure.org|mg"),
                     ("code-value-quantity", "http://loinc.org|8480-6$gt100"), ("status:not", "final,amended"),
                     ("code:text", "Glucose"), ("date", "ap2020"), ("_sort", "-date"), ("_count", "5"),
                     ("_include", "Observation:subject"), ("_revinclude:iterate", "Provenance:target"), ("_total", "none")]),
    ("Patient", [("name:exact", "Peter"), ("identifier:of-type", "http://t.org|MR|1"), ("organization", "Organization/1"),
                 ("birthdate:missing", "false"), ("_has:Observation:patient:code", "x"),
                 ("general-practitioner:identifier", "s|v"), ("_summary", "true"), ("_elements", "name")]),
    (None, [("_type", "Patient"), ("_lastUpdated", "gt2020-01-01T10:00:00Z")]),
]


@pytest.mark.parametrize(("rtype", "params"), ROUND_TRIP)
def test_format_query_is_the_inverse_of_parse_query(rtype: str | None, params: list[tuple[str, str]]) -> None:
    query, issues = parse(rtype, *params)
    assert issues == []
    assert format_query(query) == params
    assert parse(rtype, *format_query(query))[0] == query


@given(st.text(alphabet="ab,|$\\ é", min_size=1, max_size=12))
def test_format_round_trips_any_string_value(value: str) -> None:
    """Escaping: any value, written with backslash and comma escaped, reads back exactly."""
    query, issues = parse("Patient", ("family:exact", value.replace("\\", "\\\\").replace(",", "\\,")))
    assert issues == []
    assert query.clauses[0].any_of[0] == StringPredicate("family", normalize(value), value, "exact")
    assert parse("Patient", *format_query(query))[0] == query


def test_clauses_built_in_code_that_mix_parameters_have_no_query_form() -> None:
    mixed = Clause((ReferencePredicate("patient", "Patient", "1"), ReferencePredicate("subject", "Patient", "1")))
    assert format_query(Query("Observation").restrict(mixed)) == []


def test_a_lone_bar_is_not_a_token() -> None:
    """`|` names neither a system nor a code (search.html#token): not applied, reported."""
    query, issues = parse_query("Patient", [("_id", "|"), ("identifier", "|")])
    assert query.clauses == ()
    assert [i.expression for i in issues] == [("_id",), ("identifier",)]
