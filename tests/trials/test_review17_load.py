"""`$load` writes the catalogue as the server does, so it is for callers who may write any
resource of the catalogue types: a granular scope (SMART 2 `?param=value`) is not widened
by it (issue 17 §1 review)."""

from __future__ import annotations

from tests.http.helpers import send
from tests.trials.eclaire import example_unit
from tests.trials.match_world import World, world  # noqa: F401  (fixture)

NARROW = ("system/ResearchStudy.cu system/Location.cu system/Organization.cu "
          "system/Group.cu?type=device")


def test_a_granular_scope_is_not_widened_by_load(world: World) -> None:  # noqa: F811
    tokens = world.client.app.state.tokens  # type: ignore[attr-defined]
    narrow = {"Authorization": "Bearer " + tokens.issue(subject="site", client_id="site",
                                                         scope=NARROW)["access_token"]}
    unit = example_unit("2023-500009-01-00")  # its enrollment Group is of type person
    group = f"/fhir/Group/{unit[1]['id']}"
    as_put = send(world.client, "PUT", group, unit[1], **narrow)
    assert as_put.status_code == 403, as_put.text  # as a write of its own
    response = send(world.client, "POST", "/fhir/ResearchStudy/$load",
                    {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in unit]},
                    **narrow)
    assert response.status_code == 403, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert world.client.get(group, headers=world.headers("ehr")).status_code == 404
    assert world.client.get("/fhir/ResearchStudy/2023-500009-01-00",
                            headers=world.headers("ehr")).status_code == 404
