"""The CapabilityStatement's summary view follows R4's isSummary flags (capabilitystatement.html)."""

from __future__ import annotations

import orjson

from fhir_server.services.capabilities import SUMMARY_ELEMENTS, summary_view
from tests.conftest import SHARED


def test_summary_elements_are_the_official_ones() -> None:
    bundle = orjson.loads((SHARED / "fhir-r4" / "profiles-resources.json").read_bytes())
    definition = next(e["resource"] for e in bundle["entry"]
                      if e["resource"].get("id") == "CapabilityStatement")
    official = {element["path"].removeprefix("CapabilityStatement.")
                for element in definition["snapshot"]["element"]
                if element.get("isSummary") and not element["path"].endswith(".modifierExtension")}
    assert SUMMARY_ELEMENTS == official


def test_summary_keeps_summary_children_only() -> None:
    statement = {"resourceType": "CapabilityStatement", "status": "active", "description": "long",
                 "software": {"name": "x", "version": "1"},
                 "rest": [{"mode": "server", "documentation": "d",
                           "resource": [{"type": "Patient", "searchParam": [{"name": "name"}],
                                         "_type": {"extension": []}}]}]}
    view = summary_view(statement)
    assert view["rest"] == [{"mode": "server", "resource": [{"type": "Patient", "_type": {"extension": []}}]}]
    assert "description" not in view
    assert view["software"] == {"name": "x", "version": "1"}
    assert view["meta"]["tag"][0]["code"] == "SUBSETTED"
