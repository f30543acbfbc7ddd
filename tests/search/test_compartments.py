"""Which patients a resource belongs to (fhir_server/search/compartments.py), the one answer
the reach checks, the audit trail and the investigator lookups share
(compartmentdefinition-patient)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search import default_registry, extract, patients_of

CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"resourceType": "Patient", "id": "a"}, {"a"}),
    ({"resourceType": "Patient", "id": "a", "link": [{"other": {"reference": "Patient/b"}, "type": "seealso"}]},
     {"a", "b"}),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
      "subject": {"reference": "Patient/a"}, "performer": [{"reference": "Patient/b"}]}, {"a", "b"}),
    # An absolute URL names no patient of ours; a Practitioner is no patient.
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
      "subject": {"reference": "http://elsewhere.example/fhir/Patient/a"},
      "performer": [{"reference": "Practitioner/p"}]}, set()),
    ({"resourceType": "Group", "type": "practitioner", "actual": True,
      "member": [{"entity": {"reference": "Patient/a"}}, {"entity": {"reference": "Practitioner/p"}}]}, {"a"}),
    ({"resourceType": "Consent", "status": "active", "scope": {"text": "x"}, "category": [{"text": "x"}],
      "patient": {"reference": "Patient/a"}}, {"a"}),
    ({"resourceType": "Practitioner", "id": "p"}, set()),
]


@pytest.mark.parametrize(("resource", "expected"), CASES)
def test_the_patients_of_a_resource(resource: dict[str, Any], expected: set[str]) -> None:
    registry = default_registry()
    found = patients_of(registry, resource["resourceType"], extract(resource), resource.get("id"))
    assert found == expected


def test_links_can_be_left_out() -> None:
    linked = {"resourceType": "Patient", "id": "a", "link": [{"other": {"reference": "Patient/b"}, "type": "seealso"}]}
    assert patients_of(default_registry(), "Patient", extract(linked), "a", links=False) == {"a"}
