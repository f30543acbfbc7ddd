"""Keyed pseudonyms and the archive's copy of a record (privacy/pseudonym.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from fhir_server.model.validation import Validator
from fhir_server.privacy.pseudonym import Pseudonyms, PseudonymKeyError, load_key
from fhir_server.search import default_registry
from fhir_server.services.lifecycle import compartment_types
from tests.conftest import SHARED


def test_the_key_is_made_once_owner_only_and_refused_when_open(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    with pytest.raises(PseudonymKeyError, match="no pseudonym key"):
        load_key(path, create=False)
    key = load_key(path, create=True)
    assert len(key) == 32 and load_key(path, create=True) == key
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(PseudonymKeyError, match="chmod 600"):
        load_key(path, create=False)


def test_pseudonyms_depend_on_the_key() -> None:
    one, other = Pseudonyms(b"1" * 32), Pseudonyms(b"2" * 32)
    assert one.of("Patient/a") == one.of("Patient/a") != other.of("Patient/a")
    assert len(one.of("Patient/a")) == 32 and one.of("Patient/a").isalnum()


def test_the_copy_keeps_statistics_and_drops_who() -> None:
    names = Pseudonyms(b"1" * 32)
    patient = {"resourceType": "Patient", "id": "a", "meta": {"versionId": "3"},
               "text": {"status": "generated", "div": "<div>Jeanne Dupont</div>"},
               "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "262047512345678",
                               "assigner": {"display": "CPAM"}}],
               "name": [{"family": "Dupont"}], "telecom": [{"value": "06 12 34 56 78"}],
               "gender": "female", "birthDate": "1962-04-17",
               "address": [{"line": ["3 rue Haute"], "city": "Caen", "postalCode": "14000"}],
               "extension": [{"url": "http://example.org/birthplace", "valueString": "Bayeux"}],
               "contact": [{"name": {"family": "Martin"}}],
               "generalPractitioner": [{"reference": "Practitioner/dr", "display": "Dr Lenoir"}]}
    observation = {"resourceType": "Observation", "id": "o", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4",
                                        "display": "Heart rate"}]},
                   "subject": {"reference": "Patient/a", "display": "Jeanne Dupont"},
                   "performer": [{"reference": "Practitioner/dr", "display": "Dr Lenoir"}],
                   "note": [{"text": "Jeanne feels fine"}], "valueQuantity": {"value": 61}}
    document = {"resourceType": "DocumentReference", "id": "d", "status": "current",
                "subject": {"reference": "Patient/a"}, "content": [{"attachment": {
                    "contentType": "text/plain", "data": "SmVhbm5lIER1cG9udA==",
                    "title": "Lettre de Jeanne"}}]}
    observation["focus"] = [{"reference": "Patient/other"}]  # another patient: never named
    personal = {"Patient", "Observation", "DocumentReference"}
    copies = [names.pseudonymise(r, personal) for r in (patient, observation, document)]
    text = orjson.dumps(copies).decode()
    for word in ("Dupont", "Jeanne", "262047512345678", "06 12", "rue Haute", "Caen", "Bayeux",
                 "Martin", "Lenoir", "1962-04", "CPAM", "SmVhbm5l", '"a"', "Patient/a\""):
        assert word not in text, word
    archived_patient, archived_obs, archived_document = copies
    assert archived_document["content"] == [{"attachment": {"contentType": "text/plain"}}]
    assert archived_patient["id"] == names.of("Patient/a")
    assert archived_patient["birthDate"] == "1962" and archived_patient["gender"] == "female"
    assert archived_patient["address"] == [{"postalCode": "14"}]
    assert archived_patient["meta"]["security"][0]["code"] == "PSEUDED"
    assert archived_obs["subject"] == {"reference": f"Patient/{names.of('Patient/a')}"}
    assert archived_obs["performer"] == [{"reference": "Practitioner/dr"}]  # outside the record
    assert archived_obs["focus"] == [{"reference": f"Patient/{names.of('Patient/other')}"}]
    assert archived_obs["code"] == observation["code"] and archived_obs["valueQuantity"]["value"] == 61
    assert archived_patient["identifier"] == [{
        "system": "https://oncotrials.example.org/fhir/identifier-pseudonym",
        "value": names.of("urn:oid:1.2.250.1.213.1.4.8|262047512345678")}]
    assert "1.2.250.1.213" not in text


def test_the_copy_drops_names_wherever_they_hide() -> None:
    """A display without a reference, a relative's own resource, free text in a
    CodeableConcept, a value or a conclusion, an attachment without a content type."""
    names = Pseudonyms(b"1" * 32)
    relative = {"resourceType": "RelatedPerson", "id": "r", "patient": {"reference": "Patient/a"},
                "name": [{"family": "Martin"}], "telecom": [{"value": "07 98 76 54 32"}],
                "address": [{"line": ["9 quai Vendeuvre"], "city": "Caen", "postalCode": "14000"}],
                "birthDate": "1990-02-03", "gender": "male",
                "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                              "code": "SON", "display": "son"}]}]}
    observation = {"resourceType": "Observation", "id": "o", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4",
                                        "display": "Heart rate"}], "text": "Pouls de Jeanne"},
                   "subject": {"reference": "Patient/a"},
                   "performer": [{"display": "Dr Lenoir"}],
                   "valueString": "Jeanne Dupont va bien"}
    report = {"resourceType": "DiagnosticReport", "id": "d", "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": "11502-2"}]},
              "subject": {"reference": "Patient/a"}, "conclusion": "Mme Dupont: normal",
              "presentedForm": [{"url": "https://files.example.org/dupont.pdf", "title": "Dupont"}]}
    personal = {"Patient", "Observation", "DiagnosticReport", "RelatedPerson"}
    copies = [names.pseudonymise(r, personal) for r in (relative, observation, report)]
    text = orjson.dumps(copies).decode()
    for word in ("Martin", "07 98", "Vendeuvre", "Caen", "1990-02", "Jeanne", "Dupont", "Lenoir"):
        assert word not in text, word
    archived_relative, archived_obs, _ = copies
    assert archived_relative["gender"] == "male" and archived_relative["birthDate"] == "1990"
    assert archived_relative["relationship"] == relative["relationship"]  # codes kept
    assert archived_obs["code"]["coding"] == observation["code"]["coding"]


_NAMING = frozenset({"family", "given", "line", "city"})


def _direct_identifiers(node: Any, key: str = "") -> Iterator[str]:
    """The strings of `node` that name or reach a person: family and given names, address
    lines and cities, telecom and identifier values (of 4 characters or more: shorter ones
    occur anywhere by chance)."""
    if isinstance(node, list):
        for item in node:
            yield from _direct_identifiers(item, key)
    elif isinstance(node, dict):
        for name, item in node.items():
            if name in _NAMING or (name == "value" and key in ("telecom", "identifier")):
                values = item if isinstance(item, list) else [item]
                yield from (v for v in values if isinstance(v, str) and len(v) >= 4)
            else:
                yield from _direct_identifiers(item, name)


def _corpus() -> list[dict[str, Any]]:
    """Every resource of the shared Synthea bundles, and R4's examples, of a type that can be
    in a patient's record, valid as the store holds them."""
    synthea = []
    for path in sorted((SHARED / "synthea").glob("*.json")):
        text = path.read_text()
        for entry in orjson.loads(text)["entry"]:  # references resolved as a transaction does
            resource = entry["resource"]
            reference = f'"{resource["resourceType"]}/{resource["id"]}"'
            text = text.replace(f'"{entry["fullUrl"]}"', reference)
        synthea += [entry["resource"] for entry in orjson.loads(text)["entry"]]
    examples = [orjson.loads(p.read_bytes())
                for p in sorted((SHARED / "fhir-r4" / "examples").glob("*.json"))]
    validator, types = Validator(), {"Patient", *compartment_types(_registry_only())}
    return [r for r in synthea + examples
            if r["resourceType"] in types and not _errors(validator, r)]


def _errors(validator: Validator, resource: dict[str, Any]) -> list[str]:
    return [i.diagnostics for i in validator.outcome(resource) if i.severity in ("error", "fatal")]


def _registry_only() -> Any:
    return SimpleNamespace(registry=default_registry())


def test_every_copy_is_valid_r4_and_names_no_one() -> None:
    """The archive's copies are written without being validated again (retention.py
    `archive`): pseudonymising a valid resource gives a valid one, for every resource of a
    record in the shared data; none keeps a name, a phone, an address line or an identifier."""
    corpus, names, validator = _corpus(), Pseudonyms(b"1" * 32), Validator()
    assert len(corpus) > 1800 and len({r["resourceType"] for r in corpus}) > 40
    personal = {"Patient", *compartment_types(_registry_only())}
    copies = names.copies(corpus, personal)
    invalid = {f"{r['resourceType']}/{r['id']}": _errors(validator, c)
               for r, c in zip(corpus, copies, strict=True) if _errors(validator, c)}
    assert invalid == {}
    text = orjson.dumps(copies).decode()
    # a word anywhere; a number or code as a whole value, if long enough not to be found
    # by chance among the codes (the examples' identifiers are "123456")
    leaked = {word for r in corpus for word in _direct_identifiers(r)
              if (word.replace(" ", "").isalpha() and word in text)
              or (len(word) >= 8 and f'"{word}"' in text)}
    assert leaked == set()


def test_a_record_copied_slice_by_slice_is_the_record_copied_at_once() -> None:
    """The retention run makes a record's copies a slice at a time, the event loop free in
    between (retention.py `archive`): the same copies, each pseudonym computed once."""
    record = [r for r in _corpus() if r["resourceType"] != "Patient"][:100]
    personal = {"Patient", *compartment_types(_registry_only())}
    names, made = Pseudonyms(b"1" * 32), []
    computed = []
    of = names.of
    names.of = lambda text: computed.append(text) or of(text)  # type: ignore[method-assign]
    copier = names.copier(personal)
    for start in range(0, len(record), 7):
        made += copier.copies(record[start:start + 7])
    assert made == Pseudonyms(b"1" * 32).copies(record, personal)
    assert len(computed) == len(set(computed)) > len(record)
