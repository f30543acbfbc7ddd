"""The eligibility definitions we ship (profiles/StructureDefinition-eligibility-*.json,
terminology/CodeSystem-eligibility-criterion.json, CodeSystem-match-verdict.json) agree with
the engine that reads them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fhir_server.model.platform_codes import concepts, definitions
from fhir_server.model.validation import Validator
from fhir_server.trials import eligibility
from fhir_server.trials.eligibility import read_trial
from fhir_server.trials.eligibility_codes import (COMPARATOR_URL, CRITERION_SYSTEM, MINIMUM_URL,
                                                  ONLY_IF_URL, PROFILE, VERDICT_SYSTEM)
from fhir_server.trials.eligibility_format import COMPARATORS, KINDS


def test_criterion_types_are_the_code_system() -> None:
    assert tuple(concepts(CRITERION_SYSTEM)) == KINDS


def test_verdicts_are_the_code_system() -> None:
    def codes(items: list[dict]) -> list[str]:  # type: ignore[type-arg]
        return [c["code"] for item in items for c in (item, *item.get("concept", []))]

    [system] = [d for d in definitions() if d.get("url") == VERDICT_SYSTEM]
    assert codes(system["concept"]) == [
        "criterion-verdict", eligibility.MET, eligibility.NOT_MET, eligibility.UNKNOWN,
        eligibility.NOT_APPLICABLE, "trial-verdict", eligibility.ELIGIBLE, eligibility.INELIGIBLE,
        eligibility.UNDETERMINED]


def test_profile_and_extensions_are_shipped() -> None:
    urls = {d.get("url"): d for d in definitions() if d["resourceType"] == "StructureDefinition"}
    assert {PROFILE, COMPARATOR_URL, MINIMUM_URL, ONLY_IF_URL} <= set(urls)
    comparator = urls[COMPARATOR_URL]["description"]
    assert all(c in comparator for c in COMPARATORS)


def test_the_documented_example_is_read_without_problems() -> None:
    """docs/matching.md's example Group is valid R4 and every criterion is one the engine
    reads (none is left unknown for a reason of format)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "matching.md").read_text()
    example = json.loads(re.search(r"```json\n(.*?)```", text, re.DOTALL).group(1))  # type: ignore[union-attr]
    Validator(use_models=True).validate(example)
    trial = read_trial("s", [example])
    assert [c.kind for c in trial.criteria] == ["age", "condition", "biomarker", "stage", "condition",
                                                "biomarker", "free-text"]
    assert all(c.problem is None for c in trial.criteria)
    assert trial.criteria[5].only_if[0].kind == "sex"
