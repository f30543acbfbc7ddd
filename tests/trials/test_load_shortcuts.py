"""What `$load` no longer does twice gives what doing it twice gave (docs/catalogue.md,
"thirteenth session"): the Bundle's depth is the one its parse counted, not walked again by
the validator; the audit trail of the server's writes takes the index entries they were
written with, not the stored body parsed and extracted again."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import open_context
from fhir_server.audit.trail import Trail
from fhir_server.model import jsonbody
from fhir_server.model.outcome import operation_outcome
from fhir_server.model.validation import Validator
from fhir_server.services import server_writes
from fhir_server.services.context import Context
from fhir_server.services.server_writes import ServerWrite
from fhir_server.settings import Settings
from tests.http.helpers import send
from tests.http.test_input_limits import nested_extension
from tests.trials.eclaire import example_unit

_PADDING = [{"system": "urn:example:pad", "value": "x" * 100} for _ in range(12_000)]  # > 1 MB


def _deep_bundle(levels: int, large: bool) -> dict[str, Any]:
    """An ECLAIRE trial unit in a collection Bundle of exactly `levels` levels of objects and
    arrays (its last site's extensions nested), over 1 MB if `large`."""
    unit = example_unit()
    unit[0]["id"] = unit[0]["identifier"][0]["value"]  # as stored: the Bundle is checked as sent
    site = unit[-1]
    # Bundle, entry, its object, the site, its extension list: 5 levels; each nested extension 2.
    extension = nested_extension((levels - 6) // 2)
    if levels % 2:
        leaf = extension
        while "extension" in leaf:
            leaf = leaf["extension"][0]
        del leaf["valueString"]
        leaf["valueCodeableConcept"] = {"text": "v"}
    site["extension"] = [*site.get("extension", []), extension]
    if large:
        site["identifier"] = [*site.get("identifier", []), *_PADDING]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in unit]}


@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("levels", [100, 101, 102])
def test_load_answers_a_deep_bundle_as_the_validator_walking_it_does(
        client: TestClient, levels: int, large: bool) -> None:
    bundle = _deep_bundle(levels, large)
    assert jsonbody.nesting(bundle, jsonbody.MAX_BODY_DEPTH) == levels
    expected = Validator(use_models=False).outcome(bundle)  # its own walk, as before
    response = send(client, "POST", "/fhir/ResearchStudy/$load", bundle)
    errors = [i for i in expected if i.severity in ("error", "fatal")]
    if levels > jsonbody.MAX_DEPTH:
        assert [i.code for i in errors] == ["too-costly"]
    if errors:
        assert response.status_code == 422, response.text
        assert response.json()["issue"] == operation_outcome(expected)["issue"]
        assert client.get(f"/fhir/Location/{bundle['entry'][-1]['resource']['id']}").status_code == 404
    else:
        assert response.status_code == 200, response.text


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[Context]:
    async with open_context(settings) as context:
        yield dataclasses.replace(context, trail=Trail())


@pytest.mark.anyio
async def test_the_trail_of_server_writes_names_the_owners_the_stored_bodies_name(ctx: Context) -> None:
    """Groups (in the patient compartment through `member`) between resources that are in no
    patient's: each written version noted with its own owners, as extracting it again from
    its stored body finds them."""
    def group(id: str, patient: str) -> dict[str, Any]:
        return {"resourceType": "Group", "id": id, "type": "person", "actual": True,
                "member": [{"entity": {"reference": f"Patient/{patient}"}}]}

    resources = [group("g1", "p1"), {"resourceType": "Organization", "id": "o1", "name": "O"},
                 group("g2", "p2"), {"resourceType": "Location", "id": "l1", "name": "L"}]
    versions = await server_writes.commit(ctx, [ServerWrite(r) for r in resources])
    assert ctx.trail is not None
    again = Trail()
    for version in versions:
        again.touched(ctx.registry, version)  # no entries given: the stored body extracted
    assert ctx.trail.owners == again.owners
    assert ctx.trail.owners["Group/g1"] == {"p1"} and ctx.trail.owners["Group/g2"] == {"p2"}
    assert list(ctx.trail.owners) == ["Group/g1", "Organization/o1", "Group/g2", "Location/l1"]
