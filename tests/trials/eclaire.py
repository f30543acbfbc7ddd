"""ECLAIRE test data: the IG's example study `2022-500014-26-00` (translated from the IG's
FSH, input/fsh/Examples/2022-500014-26-00-example.fsh, to JSON in data/) and the resources
it references, plus sites; and the IG's `fake-study-example`, trimmed to what makes it fail.
The translation had left the two `label` extensions' `value` sub-extensions empty, which breaks
the core invariant ext-1 (an extension has a value or extensions); they carry the study's
plain-language title and acronym."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

IG = "https://interop.esante.gouv.fr/ig/fhir/eclaire"
SD = f"{IG}/StructureDefinition"
R5 = "http://hl7.org/fhir/5.0/StructureDefinition/extension-ResearchStudy"
EXAMPLE = json.loads((Path(__file__).parent / "data" / "ResearchStudy-2022-500014-26-00.json").read_text())


def example_unit(number: str = "2022-500014-26-00", sites: int = 2, status: str = "active",
                 title: str | None = None) -> list[dict[str, Any]]:
    """The IG example (renumbered as `number`), its enrollment Group, its sponsor and
    assigner Organizations, and `sites` eclaire-location sites."""
    study = copy.deepcopy(EXAMPLE)
    study["id"] = f"{number}-example"
    study["identifier"][0]["value"] = number
    study["status"] = status
    if title:
        study["title"] = title
    group = f"{number}-enrollment-group"
    sponsor = f"{number}-secondary-sponsor"
    study["enrollment"][0]["reference"] = f"Group/{group}"
    study["extension"][0]["extension"][4]["valueReference"]["reference"] = f"Organization/{sponsor}"
    study["site"] = [{"reference": f"Location/{number}-site-{n}"} for n in range(sites)]
    return [study,
            {"resourceType": "Group", "id": group, "meta": {"profile": [f"{SD}/eclaire-group"]},
             "type": "person", "actual": False, "quantity": 21},
            {"resourceType": "Organization", "id": sponsor, "name": "THE sponsor"},
            {"resourceType": "Organization", "id": "ctis", "name": "CTIS"},
            *({"resourceType": "Location", "id": f"{number}-site-{n}",
               "meta": {"profile": [f"{SD}/eclaire-location"]}, "status": "active",
               "name": f"Centre {n}", "address": {"city": "Bordeaux", "postalCode": "33000"}}
              for n in range(sites))]


def fake_study_example() -> dict[str, Any]:
    """The IG's fake-study-example: its outcome measures give `description` twice, once as a
    Reference (the IG's validator reports them)."""
    study = copy.deepcopy(EXAMPLE)
    study["id"] = "fake-study-example"
    study["identifier"][0]["value"] = "123456"
    objective = "http://terminology.hl7.org/CodeSystem/research-study-objective-type"
    for kind, name in (("primary", "primaire"), ("secondary", "secondaire")):
        study["extension"].append({"url": f"{R5}.outcomeMeasure", "extension": [
            {"url": "name", "valueString": f"Nom de la conséquence {name}"},
            {"url": "type", "valueCodeableConcept": {"coding": [{"system": objective, "code": kind}],
                                                     "text": name}},
            {"url": "description", "valueMarkdown": f"Description de la conséquence {name}"},
            {"url": "description", "valueReference": {"reference": "EvidenceVariable/1"}}]})
    return study
