"""The principal of a request without a token (access/public.py): the trial catalogue only,
everything else 401, whatever the type or interaction (deny by default)."""

from __future__ import annotations

import pytest

from fhir_server.access import decide, public_principal
from fhir_server.model.errors import FhirError, Kind
from fhir_server.search import default_registry

REGISTRY = default_registry()
PUBLIC = public_principal()
DEFINITION = {"resourceType": "Group", "type": "person", "actual": False,
              "characteristic": [{"code": {"text": "adult"}, "valueBoolean": True, "exclude": False}]}
MEMBERS = {"resourceType": "Group", "type": "person", "actual": True,
           "member": [{"entity": {"reference": "Patient/alice"}}]}


@pytest.mark.parametrize("interaction", ["read", "search"])
def test_trials_are_read_and_searched(interaction: str) -> None:
    assert decide(PUBLIC, REGISTRY, interaction, "ResearchStudy").unrestricted  # type: ignore[arg-type]


@pytest.mark.parametrize(("interaction", "resource_type", "included"), [
    ("vread", "ResearchStudy", False), ("history", "ResearchStudy", False),
    ("create", "ResearchStudy", False), ("update", "ResearchStudy", False),
    ("delete", "ResearchStudy", False), ("operation", "ResearchStudy", False),
    ("read", "Patient", False), ("search", "Patient", False), ("search", None, False),
    ("history", None, False), ("search", "Location", False), ("read", "Group", False),
    ("search", "Patient", True), ("search", "Communication", True), ("search", "AuditEvent", True),
    ("search", "ResearchSubject", True), ("read", "Location", True), ("create", "Location", True),
])
def test_everything_else_needs_a_token(interaction: str, resource_type: str | None,
                                       included: bool) -> None:
    with pytest.raises(FhirError) as refused:
        decide(PUBLIC, REGISTRY, interaction, resource_type, included=included)  # type: ignore[arg-type]
    assert refused.value.kind is Kind.UNAUTHORIZED


@pytest.mark.parametrize("resource_type", ["Location", "Organization", "Practitioner", "PractitionerRole"])
def test_catalogue_resources_come_as_included(resource_type: str) -> None:
    assert decide(PUBLIC, REGISTRY, "search", resource_type, included=True).unrestricted


def test_an_included_group_is_a_definition_never_one_with_members() -> None:
    groups = decide(PUBLIC, REGISTRY, "search", "Group", included=True)
    assert groups.admits("Group", DEFINITION)
    assert not groups.admits("Group", MEMBERS)


def test_the_refusal_points_to_discovery_under_the_fhir_base() -> None:
    # Discovery lives at [base]/.well-known/smart-configuration; the origin's /.well-known is 404.
    with pytest.raises(FhirError) as refused:
        decide(PUBLIC, REGISTRY, "read", "Patient")  # type: ignore[arg-type]
    assert "see [base]/.well-known/smart-configuration" in refused.value.issues[0].diagnostics
