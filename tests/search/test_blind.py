"""Blind indexes of protected parameters (search/blind.py): the entries a store keeps and
the queries it runs (FHIR R4 search.html#string, #token, #modifiers, #chaining, #has)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.model.errors import FhirError
from fhir_server.search import (
    BlindIndex,
    Chain,
    Has,
    Missing,
    Not,
    ReferenceEntry,
    ReferenceIdentifierPredicate,
    StringEntry,
    StringPredicate,
    TokenEntry,
    TokenPredicate,
    default_protected,
    default_registry,
    extract,
    parse_query,
)


class Readable:
    """A readable stand-in for the HMAC: the rewrite, not the cipher, is under test here."""

    def __call__(self, param: str, domain: str, text: str) -> str:
        return f"<{param}|{domain}|{text}>"

    def chain(self, param: str, domain: str, text: str) -> str:
        return "".join(self(param, domain, text[:n]) for n in range(1, len(text) + 1) if text[n - 1] != " ")


digest = Readable()


@pytest.fixture
def blind() -> BlindIndex:
    return BlindIndex(default_protected(default_registry()), digest, default_registry(), prefix_cap=6)


PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p1", "birthDate": "1970-02-03", "gender": "female",
    "name": [{"family": "Hélène Dupont", "given": ["Zoé"]}],
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "2700203123456",
                    "type": {"text": "INS", "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]}}],
    "telecom": [{"system": "phone", "value": "+33 6 12 34 56 78"}],
    "address": [{"city": "Évry", "line": ["3 rue des Lilas"]}],
}


def test_protected_entries_hold_digests_only(blind: BlindIndex) -> None:
    kept = blind.entries("Patient", extract(PATIENT))
    family = [e for e in kept if e.param == "family"]
    # One entry per value: the chain of its prefixes, capped at 6 characters, and the digest
    # of the exact value.
    assert family == [StringEntry("family", "".join(f"<Patient.family|l|{p}>" for p in (
        "h", "he", "hel", "hele", "helen", "helene")), "<Patient.family|x|Hélène Dupont>")]
    [identifier] = [e for e in kept if e.param == "identifier"]
    assert identifier == TokenEntry("identifier", "urn:oid:1.2.250.1.213.1.4.8",
                                    "<Patient.identifier|c|2700203123456>", None,
                                    "http://terminology.hl7.org/CodeSystem/v2-0203", "NI")
    protected = {"name", "given", "family", "phonetic", "identifier", "telecom", "phone",
                 "address", "address-city"}
    plaintext = ("helene", "hélène", "dupont", "zoe", "zoé", "2700203123456", "12 34", "evry", "lilas", "ins")
    for entry in kept:
        if entry.param in protected:
            stored = [v.partition("|")[2].partition("|")[0] if v.startswith("<") else v
                      for v in vars_of(entry) if isinstance(v, str)]  # the digest's domain only
            assert not any(word in v.lower() for v in stored for word in plaintext), entry
    # Birth dates, gender and the other parameters are kept as they were.
    others = [e for e in extract(PATIENT) if e.param not in protected]
    assert others and all(e in kept for e in others)


def vars_of(entry: Any) -> list[Any]:
    return [getattr(entry, name) for name in entry.__slots__ if name != "param"]


def test_prefixes_ending_in_a_space_are_left_out(blind: BlindIndex) -> None:
    given = [e.value for e in blind.entries("Patient", extract(
        {"resourceType": "Patient", "id": "x", "name": [{"given": ["Jo Ann"]}]})) if e.param == "given"]
    assert given == ["".join(f"<Patient.given|l|{p}>" for p in ("j", "jo", "jo a", "jo an", "jo ann"))]


def test_other_types_are_untouched(blind: BlindIndex) -> None:
    org = {"resourceType": "Organization", "id": "o", "name": "Hôpital", "identifier": [{"value": "1"}]}
    assert blind.entries("Organization", extract(org)) == extract(org)


def rewritten(blind: BlindIndex, rtype: str, *params: tuple[str, str]) -> list[Any]:
    query, issues = parse_query(rtype, list(params))
    assert issues == []
    return [p for c in blind.query(query).clauses for p in c.any_of]


def test_string_searches_become_digest_searches(blind: BlindIndex) -> None:
    assert rewritten(blind, "Patient", ("family", "HÉL")) == [
        StringPredicate("family", "<Patient.family|l|h><Patient.family|l|he><Patient.family|l|hel>", "",
                        "start")]
    assert rewritten(blind, "Patient", ("family:exact", "Hélène Dupont")) == [
        StringPredicate("family", "".join(f"<Patient.family|l|{p}>" for p in ("h", "he", "hel", "hele", "helen",
                                                                          "helene")),
                        "<Patient.family|x|Hélène Dupont>", "exact")]
    # A blank value (every value starts with it) asks for presence.
    assert rewritten(blind, "Patient", ("name", "  ")) == [Missing("name", False)]
    assert rewritten(blind, "Patient", ("name:missing", "true")) == [Missing("name", True)]


def test_token_searches_compare_digests_of_the_code(blind: BlindIndex) -> None:
    assert rewritten(blind, "Patient", ("identifier", "urn:oid:1.2.250.1.213.1.4.8|27,|x")) == [
        TokenPredicate("identifier", "urn:oid:1.2.250.1.213.1.4.8", "<Patient.identifier|c|27>"),
        TokenPredicate("identifier", "", "<Patient.identifier|c|x>")]
    assert rewritten(blind, "Patient", ("identifier", "urn:oid:1.2.250.1.213.1.4.8|")) == [
        TokenPredicate("identifier", "urn:oid:1.2.250.1.213.1.4.8", None)]
    assert rewritten(blind, "Patient", ("telecom:not", "+33 6")) == [
        Not("telecom", (TokenPredicate("telecom", None, "<Patient.telecom|c|+33 6>"),))]
    # Unprotected parameters of the same type stay as they are.
    assert rewritten(blind, "Patient", ("gender", "female")) == [TokenPredicate("gender", None, "female")]


def test_chains_and_has_follow_the_parameter_into_each_target_type(blind: BlindIndex) -> None:
    # Observation.subject targets Patient, Group, Device and Location: only Patient's name is
    # protected, so the chain splits in two, ORed.
    found = rewritten(blind, "Observation", ("subject.name", "dup"))
    assert Chain("subject", ("Patient",), StringPredicate("name", digest.chain("Patient.name", "l", "dup"), "", "start")) in found
    assert all(isinstance(p, Chain) for p in found) and len(found) >= 2
    assert rewritten(blind, "Patient", ("_has:RelatedPerson:patient:name", "dup")) == [
        Has("RelatedPerson", "patient", StringPredicate("name", digest.chain("RelatedPerson.name", "l", "dup"), "", "start"))]


@pytest.mark.parametrize(("name", "value", "says"), [
    ("name:contains", "upo", '":contains"'),
    ("identifier:text", "INS", '":text"'),
    ("family", "dupontdupont", "longer than 6 characters"),
    ("subject:Patient.address:contains", "lilas", '":contains"'),
])
def test_what_digests_cannot_answer_is_refused_naming_the_parameter(
        blind: BlindIndex, name: str, value: str, says: str) -> None:
    rtype = "Observation" if name.startswith("subject") else "Patient"
    query, issues = parse_query(rtype, [(name, value)])
    assert issues == []
    with pytest.raises(FhirError) as caught:
        blind.query(query)
    [issue] = caught.value.issues
    code = name.split(".")[-1].partition(":")[0]
    assert issue.code == "not-supported" and issue.expression == (code,)
    assert f'"{code}"' in issue.diagnostics and says in issue.diagnostics


def test_a_logical_reference_to_a_protected_identifier_is_digested(blind: BlindIndex) -> None:
    """Observation.subject may name a Patient by its identifier: the same value as the
    protected Patient.identifier, so blinded too; Observation.encounter cannot, so kept."""
    ins = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "2700203123456"}
    observation = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
                   "subject": {"identifier": ins}, "encounter": {"identifier": {"value": "E-7"}}}
    kept = {e.param: e for e in blind.entries("Observation", extract(observation))
            if isinstance(e, ReferenceEntry)}
    assert kept["subject"].identifier_value == "<Observation.subject|c|2700203123456>"
    assert kept["subject"].identifier_system == ins["system"]
    assert kept["encounter"].identifier_value == "E-7"
    query, _ = parse_query("Observation", [("subject:identifier", f"{ins['system']}|2700203123456"),
                                           ("encounter:identifier", "E-7")])
    [subject], [encounter] = (c.any_of for c in blind.query(query).clauses)
    assert subject == ReferenceIdentifierPredicate("subject", ins["system"],
                                                   "<Observation.subject|c|2700203123456>")
    assert encounter == ReferenceIdentifierPredicate("encounter", None, "E-7")


def test_sort_on_a_protected_parameter_is_seen(blind: BlindIndex) -> None:
    query, _ = parse_query("Patient", [("_sort", "-birthdate,family")])
    assert blind.sorts_protected(query)
    assert not blind.sorts_protected(parse_query("Patient", [("_sort", "birthdate")])[0])
    for counting in (("_summary", "count"), ("_count", "0")):  # a count needs no order
        assert not blind.sorts_protected(parse_query("Patient", [("_sort", "family"), counting])[0])


@pytest.mark.parametrize("name", ["Patient.birthdate", "Patient.organization", "Nobody.name", "name"])
def test_only_string_and_token_parameters_of_a_type_can_be_protected(name: str) -> None:
    with pytest.raises(ValueError):
        BlindIndex([name], digest, default_registry())


def test_the_defaults_cover_the_three_types() -> None:
    protected = default_protected(default_registry())
    assert {"Patient.name", "Patient.identifier", "Patient.address-postalcode", "Patient.phonetic",
            "RelatedPerson.telecom", "Practitioner.family", "Practitioner.email"} <= set(protected)
    assert "RelatedPerson.family" not in protected  # R4 defines no such parameter


@pytest.mark.parametrize("rtype", ["Patient", "Practitioner", "RelatedPerson"])
def test_phonetic_is_indexed_as_name_so_it_is_searched_on_names_rows(blind: BlindIndex, rtype: str) -> None:
    """`phonetic` keeps no rows of its own where `name` is protected: its extraction is
    `name`'s (no phonetic algorithm), so its searches, chains and `:missing` go to `name`."""
    person = {**PATIENT, "resourceType": rtype}
    extracted = extract(person)
    assert ([(e.value, e.exact) for e in extracted if e.param == "phonetic"]
            == [(e.value, e.exact) for e in extracted if e.param == "name"] != [])
    kept = blind.entries(rtype, extracted)
    assert not [e for e in kept if e.param == "phonetic"]
    assert [e for e in kept if e.param == "name"]
    as_name = rewritten(blind, rtype, ("name", "HÉL"))
    assert rewritten(blind, rtype, ("phonetic", "HÉL")) == as_name
    assert StringPredicate("name", digest.chain(f"{rtype}.name", "l", "hel"), "", "start") in as_name
    assert rewritten(blind, rtype, ("phonetic:missing", "true")) == [Missing("name", True)]
    assert (rewritten(blind, "Observation", ("subject:Patient.phonetic", "dup"))
            == rewritten(blind, "Observation", ("subject:Patient.name", "dup")))


def test_name_values_held_by_family_or_given_are_searched_on_their_rows(blind: BlindIndex) -> None:
    """A name part that is a family or given value keeps only family/given rows; `name=`
    searches the three; a name left with no row of its own keeps a presence row."""
    patient = {**PATIENT, "name": [{"family": "Dupont", "given": ["Zoé"], "prefix": ["Dr"]}]}
    names = [e for e in blind.entries("Patient", extract(patient)) if e.param == "name"]
    assert names == [StringEntry("name", "<Patient.name|l|d><Patient.name|l|dr>", "<Patient.name|x|Dr>")]
    covered = [e for e in blind.entries("Patient", extract(PATIENT)) if e.param == "name"]
    assert covered == [StringEntry("name", "", "")]  # presence only
    assert rewritten(blind, "Patient", ("name", "zo")) == [
        StringPredicate(param, f"<Patient.{param}|l|z><Patient.{param}|l|zo>", "", "start")
        for param in ("name", "family", "given")]
    assert rewritten(blind, "Patient", ("name:exact", "Zoé"))[2] == StringPredicate(
        "given", "<Patient.given|l|z><Patient.given|l|zo><Patient.given|l|zoe>", "<Patient.given|x|Zoé>", "exact")
    assert rewritten(blind, "Patient", ("name:missing", "false")) == [Missing("name", False)]
    cities = [e for e in blind.entries("Patient", extract(PATIENT)) if e.param == "address"]
    assert any("|l|3 rue" in e.value for e in cities)
    assert not any("evry" in e.value for e in cities)  # the city: on address-city's rows


def test_phonetic_keeps_its_rows_when_name_is_not_protected() -> None:
    alone = BlindIndex(["Patient.phonetic"], digest, default_registry(), prefix_cap=6)
    assert [e for e in alone.entries("Patient", extract(PATIENT)) if e.param == "phonetic"]
    assert rewritten(alone, "Patient", ("phonetic", "hel")) == [
        StringPredicate("phonetic", digest.chain("Patient.phonetic", "l", "hel"), "", "start")]


def test_a_values_entries_are_the_same_from_the_cache(blind: BlindIndex) -> None:
    first = blind.entries("Patient", extract(PATIENT))
    assert blind.entries("Patient", extract(PATIENT)) == first
    other = {**PATIENT, "resourceType": "Practitioner"}  # same values, another type's keys
    assert all("<Practitioner." in e.value for e in blind.entries("Practitioner", extract(other))
               if e.param == "family")
