"""The CapabilityStatement never claims what does not work.

FHIR R4 http.html#capabilities (GET [base]/metadata), capabilitystatement.html (kind `instance`,
`fhirVersion`, `format`, `rest.resource` with `interaction`, `searchParam`, `searchInclude`,
`searchRevInclude`), search.html (every advertised parameter and include is understood: no
OperationOutcome entry, search.html#errors), searchparameter-registry.html.

The searches run against a store holding one official R4 example of each type that has one
(/work/shared/data/fhir-r4/examples), so that each parameter is translated against real index
rows, not only against an empty store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.model.platform_codes import definitions
from fhir_server.search import SearchParam, default_registry
from fhir_server.search.parse import MAX_PARAMETERS
from fhir_server.settings import Settings
from tests.builders import patient
from tests.conftest import SHARED, authorized
from tests.http.helpers import create, send

R4 = SHARED / "fhir-r4"
BASE = "http://testserver/fhir"
READ_ONLY_INTERACTIONS = {"read", "vread", "history-instance", "history-type", "search-type"}
TYPE_INTERACTIONS = {"read", "vread", "update", "patch", "delete", "history-instance", "history-type",
                     "create", "search-type"}
# capabilitystatement.html: the codes of TypeRestfulInteraction / SystemRestfulInteraction.
SYSTEM_CODES = {"transaction", "batch", "search-system", "history-system"}
PARAM_TYPES = {"number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"}
SAMPLES = {"token": "x", "string": "x", "date": "2020", "number": "1", "quantity": "1", "uri": "http://x"}


def r4_resource_types() -> set[str]:
    """The 146 R4 resource types, from the official JSON schema (not from the server's own list)."""
    schema = json.loads((R4 / "fhir.schema.json").read_text())
    return set(schema["discriminator"]["mapping"])


def sample_value(param: SearchParam) -> str:
    """A well-formed search value for `param`: it need not match anything, only be understood."""
    if param.type == "reference":
        target = "Patient" if not param.targets or "Patient" in param.targets else param.targets[0]
        return f"{target}/1"
    if param.type == "composite":
        registry = default_registry()
        parts = []
        for component in param.components:
            definition = registry.by_url(component.definition)
            assert definition is not None, component
            parts.append(sample_value(definition))
        return "$".join(parts)
    if param.type == "special":
        assert param.code == "near", param.code  # the only special parameter of R4
        return "0|0|1|km"
    return SAMPLES[param.type]


def outcome_issues(response: Any) -> list[dict[str, Any]]:
    """The issues of a search's outcome entries (empty when everything was understood)."""
    entries = response.json().get("entry", [])
    return [i for e in entries if e["search"]["mode"] == "outcome" for i in e["resource"]["issue"]]


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A server holding the first official example (by file name) of every type that has one."""
    # Stored without the (slow) model validation: these are the official examples, not under test.
    settings = Settings(data_dir=tmp_path_factory.mktemp("examples"), base_url=BASE, validate_with_models=False)
    with authorized(TestClient(create_app(settings))) as client:
        stored: set[str] = set()
        for path in sorted((R4 / "examples").glob("*.json")):
            resource = orjson.loads(path.read_bytes())
            if resource["resourceType"] in stored:
                continue
            if resource["resourceType"] == "AuditEvent":
                # Written by the server alone: every request above has left one to search.
                continue
            response = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
            assert response.status_code in (200, 201), (path.name, response.text)
            stored.add(resource["resourceType"])
        assert len(stored) > 100
        yield client


@pytest.fixture(scope="module")
def statement(examples: TestClient) -> dict[str, Any]:
    response = examples.get("/fhir/metadata")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def resources(statement: dict[str, Any]) -> list[dict[str, Any]]:
    [rest] = statement["rest"]
    return rest["resource"]  # type: ignore[no-any-return]


# -- the statement itself --------------------------------------------------------------------


def test_metadata_is_an_r4_capability_statement(client: TestClient) -> None:
    """http.html#capabilities, capabilitystatement.html: kind instance, 4.0.1, JSON formats."""
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    cs = response.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["status"] == "active"
    assert cs["kind"] == "instance"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["date"][:4].isdigit()
    assert "application/fhir+json" in cs["format"] and "json" in cs["format"]
    assert not any("xml" in f for f in cs["format"])  # XML is not implemented
    assert cs["implementation"]["url"] == BASE  # cpb-15: kind instance has implementation
    assert cs["patchFormat"] == ["application/json-patch+json"]
    [rest] = cs["rest"]
    assert rest["mode"] == "server"
    assert {i["code"] for i in rest["interaction"]} <= SYSTEM_CODES
    # The statement is itself a valid R4 resource: this server's own validator accepts it.
    stored = send(client, "POST", "/fhir/CapabilityStatement", cs)
    assert stored.status_code == 201, stored.text
    assert client.get("/fhir/metadata", params={"_format": "json"}).status_code == 200


def test_every_r4_type_with_its_interactions(statement: dict[str, Any]) -> None:
    """capabilitystatement.html: one rest.resource per R4 type (146), with the interactions served."""
    listed = resources(statement)
    assert len(listed) == 146
    assert {r["type"] for r in listed} == r4_resource_types()
    for resource in listed:
        expected = READ_ONLY_INTERACTIONS if resource["type"] == "AuditEvent" else TYPE_INTERACTIONS
        assert {i["code"] for i in resource["interaction"]} == expected, resource["type"]
        assert resource["profile"] == f"http://hl7.org/fhir/StructureDefinition/{resource['type']}"
        names = [p["name"] for p in resource["searchParam"]]
        assert len(names) == len(set(names)), resource["type"]
        assert {"_id", "_lastUpdated"} <= set(names), resource["type"]
        # Defined in R4 but not implemented here (parse.py): never advertised; `_content` is
        # for ResearchStudy only (search/content.py).
        assert not {"_text", "_query", "_filter", "_list"} & set(names), resource["type"]
        assert ("_content" in names) == (resource["type"] == "ResearchStudy"), resource["type"]


def test_search_params_match_the_official_definitions(statement: dict[str, Any]) -> None:
    """searchparameter-registry.html: each searchParam names its definition with its type: an
    official one, or one of ours (profiles/), which the server serves."""
    registry = default_registry()
    ours = {d["url"] for d in definitions() if d["resourceType"] == "SearchParameter"}
    for resource in resources(statement):
        for advertised in resource["searchParam"]:
            official = registry.get(resource["type"], advertised["name"])
            assert official is not None, (resource["type"], advertised)
            assert advertised["definition"] == official.url
            assert (advertised["definition"].startswith("http://hl7.org/fhir/SearchParameter/")
                    or advertised["definition"] in ours)
            assert advertised["type"] == official.type and advertised["type"] in PARAM_TYPES


def test_claimed_interactions_work(client: TestClient) -> None:
    """capabilitystatement.html: updateCreate, versioned reads, conditional create/delete, system level."""
    cs = client.get("/fhir/metadata").json()
    claims = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert claims["updateCreate"] is True
    assert send(client, "PUT", "/fhir/Patient/cap1", patient(id="cap1")).status_code == 201
    assert claims["readHistory"] is True and claims["versioning"] == "versioned-update"
    send(client, "PUT", "/fhir/Patient/cap1", patient(id="cap1", gender="male"), If_Match='W/"1"')
    assert client.get("/fhir/Patient/cap1/_history/1").json()["gender"] == "female"
    assert send(client, "PUT", "/fhir/Patient/cap1", patient(id="cap1"), If_Match='W/"1"').status_code == 412
    assert claims["conditionalCreate"] is True
    again = create(client, patient(id="x", gender="other"), If_None_Exist="_id=cap1")
    assert again.status_code == 200 and again.json()["id"] == "cap1"
    assert claims["conditionalDelete"] == "single"  # the default setting
    create(client, patient(given="Twin"))
    create(client, patient(given="Twin"))
    assert client.delete("/fhir/Patient?given=twin").status_code == 412
    assert claims["conditionalRead"] == "not-supported"
    system = {i["code"] for i in cs["rest"][0]["interaction"]}
    if "search-system" in system:
        assert client.get("/fhir?_id=cap1").status_code == 200
    if "history-system" in system:
        assert client.get("/fhir/_history").status_code == 200
    assert not {"transaction", "batch"} & system  # not implemented: POST [base] with a Bundle
    assert cs["rest"][0]["compartment"] == ["http://hl7.org/fhir/CompartmentDefinition/patient"]
    assert client.get("/fhir/Patient/cap1/Observation").status_code == 200


def test_conditional_delete_multiple_is_advertised_when_enabled(tmp_path: Path) -> None:
    """capabilitystatement.html#conditionalDelete: `multiple` only when the server deletes all matches."""
    settings = Settings(data_dir=tmp_path, base_url=BASE, conditional_delete_multiple=True)
    with authorized(TestClient(create_app(settings))) as client:
        cs = client.get("/fhir/metadata").json()
        assert {r["conditionalDelete"] for r in cs["rest"][0]["resource"]
                if r["type"] != "AuditEvent"} == {"multiple"}
        for _ in range(2):
            create(client, patient(given="Twin"))
        assert client.delete("/fhir/Patient?given=twin").status_code == 204
        assert client.get("/fhir/Patient?given=twin").json().get("entry", []) == []


# -- every advertised search parameter and include is understood -----------------------------------


def test_every_advertised_search_param_is_understood(examples: TestClient, statement: dict[str, Any]) -> None:
    """search.html#errors: GET [type]?[param]=[value] for each advertised searchParam: 200, no outcome."""
    registry = default_registry()
    failures: list[tuple[Any, ...]] = []
    checked = 0
    for resource in resources(statement):
        rtype = resource["type"]
        for advertised in resource["searchParam"]:
            param = registry.get(rtype, advertised["name"])
            assert param is not None
            value = sample_value(param)
            response = examples.get(f"/fhir/{rtype}", params={param.code: value})
            checked += 1
            if response.status_code != 200:
                failures.append((f"{rtype}?{param.code}={value}", response.status_code, response.text[:200]))
            elif issues := outcome_issues(response):
                failures.append((f"{rtype}?{param.code}={value}", 200, [i.get("diagnostics") for i in issues]))
    assert checked > 2500
    assert failures == []


def test_every_advertised_include_is_accepted(examples: TestClient, statement: dict[str, Any]) -> None:
    """search.html#include: each searchInclude value of a type is accepted on that type's search."""
    failures: list[tuple[Any, ...]] = []
    for resource in resources(statement):
        assert "*" in resource["searchInclude"]
        for include in resource["searchInclude"]:
            response = examples.get(f"/fhir/{resource['type']}", params={"_include": include})
            if response.status_code != 200 or outcome_issues(response):
                failures.append((resource["type"], include, response.status_code, response.text[:200]))
    assert failures == []


def test_every_advertised_revinclude_is_accepted(examples: TestClient, statement: dict[str, Any]) -> None:
    """search.html#revinclude: every searchRevInclude of a type, on that type's search."""
    failures: list[tuple[Any, ...]] = []
    total = 0
    for resource in resources(statement):
        revincludes = resource["searchRevInclude"]
        total += len(revincludes)
        for start in range(0, len(revincludes), MAX_PARAMETERS):  # as many as a query may hold
            chunk = revincludes[start:start + MAX_PARAMETERS]
            response = examples.get(f"/fhir/{resource['type']}", params=[("_revinclude", r) for r in chunk])
            if response.status_code != 200:
                failures.append((resource["type"], response.status_code, response.text[:200]))
            elif issues := outcome_issues(response):
                failures.append((resource["type"], [i.get("diagnostics") for i in issues]))
    assert total > 10_000
    assert failures == []
    patient_rev = next(r for r in resources(statement) if r["type"] == "Patient")["searchRevInclude"]
    assert {"Observation:subject", "Observation:patient", "Condition:subject"} <= set(patient_rev)


def test_unadvertised_parameters_are_reported(examples: TestClient, statement: dict[str, Any]) -> None:
    """search.html#errors: what the statement leaves out is reported when used, not silently ignored."""
    for name, value in (("_text", "cancer"), ("_content", "cancer"), ("_filter", "name eq x"), ("nope", "1")):
        response = examples.get("/fhir/Patient", params={name: value})
        assert response.status_code == 200
        assert [i["expression"] for i in outcome_issues(response)] == [[name]]
