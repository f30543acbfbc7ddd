"""The R4 SearchParameter registry (searchparameter-registry.html) and the Patient
compartment (compartmentdefinition-patient.html)."""

from __future__ import annotations

import dataclasses

import pytest

from fhir_server.search import Registry, SearchParam, default_registry
from fhir_server.search.registry import COMPARTMENT_FILE, NOT_OFFERED, PARAMS_FILE

from . import datagen
from .conftest import DEFINITIONS


def test_shipped_data_is_regenerated_from_the_official_definitions() -> None:
    """The gzipped parameters and the compartment are exactly what datagen derives from the
    R4 definitions, so they cannot drift from the recipe in the registry docstring."""
    params_gz, compartment = datagen.build(DEFINITIONS)
    assert PARAMS_FILE.read_bytes() == params_gz
    assert COMPARTMENT_FILE.read_text() == compartment


def test_all_r4_parameters_are_loaded(registry: Registry) -> None:
    """R4 4.0.1 defines 1,378 SearchParameters on 146 concrete resource types, of which the
    server leaves out 3 of AuditEvent's (NOT_OFFERED); ours (profiles/) come on top."""
    official = [p for p in registry.params if p.url.startswith("http://hl7.org/fhir/")]
    assert len(official) == 1378 - 3
    assert not {(p.base[0], p.code) for p in official} & NOT_OFFERED
    assert {p.code for p in registry.params if p not in official} == {
        "about", "in-response-to", "payload",
        # ResearchStudy, for ECLAIRE (docs/catalogue.md); `sponsor` replaces R4's.
        "enrollment", "condition", "recruitment-status", "associated-party", "sponsor",
        "_content",  # ResearchStudy's, the whole resource (search/content.py)
        "owner"}  # Subscription's, the user who created it (docs/subscriptions.md)
    assert len(registry.resource_types) == 146
    assert registry.resource_types["Patient"] == "DomainResource"
    assert registry.resource_types["Bundle"] == "Resource"


def test_get_returns_the_definition_for_the_type(registry: Registry) -> None:
    name = registry.get("Patient", "name")
    assert name is not None and name.type == "string" and name.expression == "Patient.name"
    assert name.url == "http://hl7.org/fhir/SearchParameter/Patient-name"
    code = registry.get("Observation", "code")
    assert code is not None and code.type == "token" and "Observation" in code.base
    assert registry.get("Patient", "no-such-param") is None
    assert registry.get("NoSuchType", "name") is None


def test_for_type_includes_the_resource_level_parameters(registry: Registry) -> None:
    """search.html#all: _id, _lastUpdated, _tag, _profile, _security, _source apply to all
    resources; _text/_content/_query have no expression (nothing is indexed for them)."""
    patient = registry.for_type("Patient")
    for code in ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"):
        assert patient[code].expression, code
    assert patient["_lastUpdated"].type == "date"
    assert patient["_text"].expression is None
    assert "_text" not in registry.for_type("Bundle")  # Bundle is not a DomainResource
    assert "_id" in registry.for_type("Bundle")
    assert registry.for_type("NoSuchType") == {}


def test_multi_base_parameters_apply_to_each_base(registry: Registry) -> None:
    """clinical-patient is one definition with 32 bases."""
    obs = registry.get("Observation", "patient")
    cond = registry.get("Condition", "patient")
    assert obs is cond and obs is not None
    assert obs.targets == ("Patient",)


def test_reference_targets(registry: Registry) -> None:
    subject = registry.get("Observation", "subject")
    assert subject is not None
    assert set(subject.targets) == {"Group", "Device", "Patient", "Location"}


def test_composite_components_are_resolved(registry: Registry) -> None:
    """search.html#composite: components name other parameters by canonical URL."""
    sp = registry.get("Observation", "code-value-quantity")
    assert sp is not None and sp.type == "composite"
    assert [(c.code, c.type, c.expression) for c in sp.components] == [
        ("code", "token", "code"),
        ("value-quantity", "quantity", "value.as(Quantity)"),
    ]
    assert sp.multiple_or is False  # as published for every R4 composite


def test_by_url_and_common(registry: Registry) -> None:
    url = "http://hl7.org/fhir/SearchParameter/Observation-value-quantity"
    found = registry.by_url(url)
    assert found is not None and found.code == "value-quantity"
    common = registry.common("_id")
    assert common is not None and common.base == ("Resource",)
    assert registry.common("name") is None


def test_patient_compartment(registry: Registry) -> None:
    """compartmentdefinition-patient: Observation links by subject and performer."""
    assert registry.patient_compartment("Observation") == ("subject", "performer")
    assert registry.patient_compartment("Patient") == ("link",)
    assert "patient" in registry.patient_compartment("AllergyIntolerance")
    assert registry.patient_compartment("Organization") == ()


def test_element_types_cover_choice_types(registry: Registry) -> None:
    assert "Quantity" in registry.elements["Observation.value[x]"]
    assert registry.elements["Patient.name"] == ("HumanName",)
    assert registry.is_subtype("Age", "Quantity")
    assert not registry.is_subtype("Quantity", "Age")


def test_search_param_is_frozen(registry: Registry) -> None:
    sp = registry.get("Patient", "name")
    assert isinstance(sp, SearchParam)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sp.code = "x"  # type: ignore[misc]


def test_default_registry_is_built_once() -> None:
    assert default_registry() is default_registry()
